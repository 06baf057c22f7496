"""`python -m agentlb ...` is the `agentlb` command (how `agentlb cluster` starts its replicas)."""

from agentlb.cli import app

app()
