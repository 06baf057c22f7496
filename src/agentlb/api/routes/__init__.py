"""Routers of the selection API; each is thin: schema → domain → service → schema."""
