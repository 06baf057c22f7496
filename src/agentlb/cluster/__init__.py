"""A local cluster: N `agentlb serve` replicas sharing Redis and PostgreSQL behind one HAProxy.

Operations code above the service: it starts processes and writes configuration, and nothing
below it imports it. `agentlb cluster` is its command; docs/deploy.md the topology.
"""

from __future__ import annotations

from agentlb.cluster.haproxy import default_template, find_haproxy, render_haproxy_config
from agentlb.cluster.supervisor import Cluster, ClusterSpec, ensure_postgres_database, ping_redis

__all__ = [
    "Cluster",
    "ClusterSpec",
    "default_template",
    "ensure_postgres_database",
    "find_haproxy",
    "ping_redis",
    "render_haproxy_config",
]
