"""The selection API (FastAPI): `create_app(settings)`."""

from agentlb.api.app import create_app, tune_gc

__all__ = ["create_app", "tune_gc"]
