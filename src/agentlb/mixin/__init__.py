"""Monitoring as code: Prometheus rules and Grafana dashboards generated from one source.

`python -m agentlb.mixin` (or `make dashboards`) writes deploy/prometheus and deploy/grafana;
a test fails when the committed files differ from what this package generates.
"""
