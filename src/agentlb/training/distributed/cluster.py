"""Where a Dask training runs: an existing scheduler (`tcp://host:8786`, `host:8786`) or
`local[:N]`, a `LocalCluster` of N worker processes started here and closed afterwards.

The address comes from `agentlb train --dask` or AGENTLB_DASK_SCHEDULER; every error names
which, so a typo is reported against what the user typed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentlb.errors import DaskClusterError
from distributed.diagnostics.plugin import WorkerPlugin

if TYPE_CHECKING:
    from distributed import Client, Worker

LOCAL = "local"
DEFAULT_LOCAL_WORKERS = 2
MAX_LOCAL_WORKERS = 64
CONNECT_TIMEOUT_S = 10.0
FLAG = "--dask"
_ADDRESS = re.compile(
    r"(?:(?P<scheme>[a-z]+)://)?(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d+)/?"
)
SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")


@dataclass(frozen=True)
class DaskTarget:
    """A parsed address: `scheduler` to connect to, or None for a LocalCluster of `local_workers`."""

    text: str
    source: str
    scheduler: str | None
    local_workers: int = 0

    def error(self, reason: str) -> DaskClusterError:
        return DaskClusterError(self.source, self.text, reason)


def parse_target(text: str, source: str = FLAG) -> DaskTarget:
    """`local`, `local:N` or a scheduler address; a clear error naming `source` otherwise."""
    value = text.strip()
    if not value:
        raise DaskClusterError(source, text, "empty; give a scheduler address (tcp://host:8786) or local[:N]")
    if value == LOCAL or value.startswith(f"{LOCAL}:"):
        count = value[len(LOCAL) + 1 :] if ":" in value else str(DEFAULT_LOCAL_WORKERS)
        if not count.isdigit() or not 1 <= int(count) <= MAX_LOCAL_WORKERS:
            raise DaskClusterError(
                source,
                text,
                f"local:N needs 1 to {MAX_LOCAL_WORKERS} workers, got {count!r}",
            )
        return DaskTarget(text, source, None, int(count))
    match = _ADDRESS.fullmatch(value)
    if match is None:
        raise DaskClusterError(
            source, text, "not a scheduler address; expected tcp://host:port, host:port or local[:N]"
        )
    scheme = match.group("scheme") or "tcp"
    if scheme not in SCHEMES:
        raise DaskClusterError(source, text, f"unknown scheme {scheme!r}; one of {', '.join(SCHEMES)}")
    port = int(match.group("port"))
    if not 1 <= port <= 65535:
        raise DaskClusterError(source, text, f"port {port} is outside 1-65535")
    return DaskTarget(text, source, f"{scheme}://{match.group('host')}:{port}")


class StdoutToStderr(WorkerPlugin):
    """A worker plugin for the workers of a LocalCluster started here: their processes share this
    command's stdout, which `--json` keeps for the summary, and LightGBM's network set-up prints
    to it from C whatever its verbosity; each worker's stdout becomes its stderr."""

    name = "agentlb-stdout-to-stderr"

    def setup(self, worker: Worker) -> None:
        import os
        import sys

        sys.stdout.flush()
        os.dup2(2, 1)


def scheduler_address(client: Client) -> str:
    return str(client.scheduler_info(n_workers=0).get("address", "unknown"))


def dashboard_address(client: Client) -> str:
    """The dashboard's address, or why there is none."""
    try:
        link = str(client.dashboard_link)
    except (KeyError, AttributeError):
        return "not served by this scheduler"
    return link


@contextmanager
def dask_client(
    target: DaskTarget, announce: Callable[[str], None] | None = None, timeout_s: float | None = None
) -> Iterator[Client]:
    """A client of the target's scheduler (started here for `local[:N]`, and closed with the
    cluster at the end); `announce` gets the dashboard address."""
    from distributed import Client, LocalCluster

    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    cluster: LocalCluster | None = None
    try:
        if target.scheduler is None:
            cluster = LocalCluster(
                n_workers=target.local_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            )
            client = Client(cluster)
            client.register_plugin(StdoutToStderr())
        else:
            client = Client(target.scheduler, timeout=timeout_s)
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        what = (
            "cannot start a local cluster" if target.scheduler is None else "cannot reach the Dask scheduler"
        )
        raise target.error(f"{what} within {timeout_s:g} s: {type(exc).__name__}: {exc}") from exc
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        if announce is not None:
            address, dashboard = scheduler_address(client), dashboard_address(client)
            announce(f"Dask cluster {address}: {workers} workers; dashboard {dashboard}")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
