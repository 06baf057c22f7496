"""Online experiments: arms on live traffic, an always-valid verdict, routed by task id."""
