"""`agentlb serve` and `agentlb bootstrap`."""

from __future__ import annotations

import ipaddress
import logging
import resource
from typing import Annotated, Any

import typer

from agentlb.errors import AgentLBError
from agentlb.observability import configure_logging, log_event, prepare_multiprocess_metrics
from agentlb.settings import Settings, load_settings

log = logging.getLogger("agentlb.serve")

SINGLE_WORKER_REASON = (
    "agentlb serves with one worker per process: the live fleet state (in-flight tasks, EWMAs, "
    "ejections) and the Prometheus counters are kept in that process's memory, so several "
    "workers would each balance on a part of the truth. Run one process per host/port instead, "
    "or set AGENTLB_REDIS_URL to share the live state between workers and replicas."
)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except AgentLBError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _raise_open_file_limit() -> None:
    """Each connection is a file descriptor; lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log_event(log, "fd_limit_unchanged", logging.WARNING, reason=str(exc), soft=soft)


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: Annotated[str, typer.Option(help="address to bind; loopback by default")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
        workers: Annotated[
            int, typer.Option(min=1, help="worker processes; more than 1 needs AGENTLB_REDIS_URL")
        ] = 1,
        access_log: Annotated[bool, typer.Option(help="uvicorn's per-request access log")] = False,
    ) -> None:
        """Serve the selection API: one worker, or several sharing the live fleet state
        through Redis (AGENTLB_REDIS_URL)."""
        settings = _settings_or_exit()
        if workers != 1 and not settings.redis_url:
            typer.echo(f"error: --workers {workers} refused. {SINGLE_WORKER_REASON}", err=True)
            raise typer.Exit(2)
        configure_logging(settings.log_level)
        if not _is_loopback(host) and settings.api_key is None:
            log_event(
                log,
                "insecure_bind",
                logging.WARNING,
                host=host,
                reason="bound to a non-loopback address without AGENTLB_API_KEY: anyone who can reach "
                "it can select agents and report outcomes",
            )
        if not _is_loopback(host) and settings.admin_key is None:
            log_event(
                log,
                "insecure_bind",
                logging.WARNING,
                host=host,
                reason="bound to a non-loopback address without AGENTLB_ADMIN_KEY: registry and weight "
                "changes need no admin key",
            )
        _raise_open_file_limit()
        import uvicorn

        from agentlb.api import create_app, tune_gc

        if workers > 1:
            # Each worker is a replica of its own (its tracker follows the shared log); their
            # Prometheus metrics are merged at scrape time from files (multiprocess mode).
            metrics_dir = prepare_multiprocess_metrics()
            log_event(log, "serving_workers", workers=workers, metrics_dir=str(metrics_dir))
            target: Any = "agentlb.api.app:create_worker_app"
        else:
            target = create_app(settings)
            tune_gc()
        uvicorn.run(
            target,
            factory=workers > 1,
            workers=workers,
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
            access_log=access_log,
            backlog=4096,
            # Orchestrators reuse connections. uvicorn's 5 s default closes idle keep-alive
            # connections so often that a client reusing one just as it closes sees a reset;
            # 75 s is nginx's keepalive_timeout default.
            timeout_keep_alive=75,
            timeout_graceful_shutdown=10,
        )

    @app.command("bootstrap")
    def bootstrap_cmd(
        with_model: Annotated[
            bool, typer.Option("--model/--no-model", help="train a first model when none loads")
        ] = True,
    ) -> None:
        """Create or upgrade the database, register examples/fleet.yaml when the registry is
        empty, and train a first model from a simulated history when no champion loads."""
        from rich.progress import Progress

        from agentlb.bootstrap import bootstrap, default_fleet_file
        from agentlb.first_model import ensure_first_model

        settings = _settings_or_exit()
        try:
            report = bootstrap(settings, typer.echo)
            typer.echo(f"bootstrap: {report.agents_registered} agents registered")
            if with_model:
                with Progress() as bar:
                    job = bar.add_task("first model", total=1.0)

                    def advance(message: str, fraction: float) -> None:
                        bar.update(job, completed=fraction, description=message[:70])

                    model = ensure_first_model(settings, default_fleet_file(settings), advance)
                typer.echo(f"bootstrap: model {model.model_version} ({model.detail})")
        except AgentLBError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
