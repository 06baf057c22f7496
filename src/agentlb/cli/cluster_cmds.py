"""`agentlb cluster`: N replicas on Redis + PostgreSQL behind HAProxy, on this machine."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from agentlb.errors import AgentLBError
from agentlb.settings import Settings

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/agentlb"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def register(app: typer.Typer) -> None:
    @app.command("cluster")
    def cluster(
        replicas: Annotated[int, typer.Option(min=1, help="agentlb serve processes")] = 2,
        workers: Annotated[int, typer.Option(min=1, help="worker processes per replica")] = 1,
        host: Annotated[str, typer.Option(help="address the front (HAProxy) binds")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="the front's port; 0: a free one")] = 8000,
        replica_port: Annotated[
            int, typer.Option(min=0, max=65535, help="first replica port (then +1, +2...); 0: free ports")
        ] = 0,
        database_url: Annotated[
            str, typer.Option(envvar="AGENTLB_DATABASE_URL", help="the shared PostgreSQL (created if absent)")
        ] = DEFAULT_DATABASE_URL,
        redis_url: Annotated[
            str, typer.Option(envvar="AGENTLB_REDIS_URL", help="the shared live fleet state")
        ] = DEFAULT_REDIS_URL,
        redis_prefix: Annotated[
            str, typer.Option(envvar="AGENTLB_REDIS_PREFIX", help="prefix of this fleet's Redis keys")
        ] = "agentlb",
        with_model: Annotated[
            bool, typer.Option("--model/--no-model", help="train a first model when none loads")
        ] = True,
        haproxy: Annotated[str | None, typer.Option(help="the haproxy binary (default: on PATH)")] = None,
        haproxy_template: Annotated[
            Path | None, typer.Option(help="default: deploy/haproxy/haproxy.cfg.in")
        ] = None,
        print_haproxy_config: Annotated[
            bool, typer.Option(help="print the HAProxy configuration for these ports and exit")
        ] = False,
    ) -> None:
        """Start REPLICAS `agentlb serve` replicas sharing one PostgreSQL and one Redis, behind
        HAProxy health-checking each on /load-balancing/health; print the one URL to use and run
        until Ctrl-C or SIGTERM, which stops every process (a replica that exits is started
        again). Logs: var/cluster/."""
        from agentlb.cluster import (
            Cluster,
            ClusterSpec,
            default_template,
            ensure_postgres_database,
            find_haproxy,
            ping_redis,
        )
        from agentlb.settings import load_settings

        try:
            settings = load_settings(
                database_url=database_url, redis_url=redis_url, redis_prefix=redis_prefix
            )
            spec = ClusterSpec(
                replicas=replicas,
                workers=workers,
                host=host,
                port=port,
                replica_ports=tuple(range(replica_port, replica_port + replicas)) if replica_port else (),
                database_url=database_url,
                redis_url=redis_url,
                redis_prefix=redis_prefix,
                home=settings.home,
                haproxy=find_haproxy(haproxy) if not print_haproxy_config else (haproxy or "haproxy"),
                template=haproxy_template or default_template(),
            )
            running = Cluster(spec, say=typer.echo)
            if print_haproxy_config:
                if not replica_port:
                    raise typer.BadParameter("needed by --print-haproxy-config", param_hint="--replica-port")
                typer.echo(running.haproxy_config(), nl=False)
                return
            ensure_postgres_database(database_url, typer.echo)
            ping_redis(redis_url)
            _bootstrap(settings, with_model)
        except AgentLBError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc

        stop = threading.Event()
        received: list[str] = []

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            received.append(signal.Signals(signum).name)
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            url = running.start()
            typer.echo(f"agentlb cluster: {replicas} replicas behind {url}  (Ctrl-C stops everything)")
            gone = running.watch(stop)
            if gone is not None:
                typer.echo(
                    f"error: {gone.name} exited with {gone.process.returncode}; stopping the cluster\n"
                    f"{gone.tail()}",
                    err=True,
                )
                code = 1
        except AgentLBError as exc:
            typer.echo(f"error: {exc}", err=True)
            code = 1
        finally:
            typer.echo(f"agentlb cluster: stopping ({received[0] if received else 'exit'})")
            running.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            typer.echo("agentlb cluster: stopped")
        if code:
            raise typer.Exit(code)


def _bootstrap(settings: Settings, with_model: bool) -> None:
    """The database schema, the demo fleet into an empty registry and (with `with_model`) a
    first model, once, before any replica starts."""
    from agentlb.bootstrap import bootstrap, default_fleet_file
    from agentlb.first_model import ensure_first_model

    report = bootstrap(settings, typer.echo)
    typer.echo(f"bootstrap: {report.agents_registered} agents registered")
    if with_model:
        model = ensure_first_model(settings, default_fleet_file(settings), lambda message, _f: None)
        typer.echo(f"bootstrap: model {model.model_version} ({model.detail})")
