"""`agentlb db`, `agentlb history`, `agentlb agents` and `agentlb bench-store`.

Every command takes `--url` (default: AGENTLB_DATABASE_URL, else sqlite:///<home>/var/agentlb.db)
and migrates the database first, so each works on a fresh checkout.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agentlb.errors import AgentLBError, ConflictingAgentError
from agentlb.history import read_history
from agentlb.store import Store

MAX_REJECTIONS_SHOWN = 20
_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="database URL (default: AGENTLB_DATABASE_URL or sqlite:///var/agentlb.db)"),
]


def parse_duration_s(value: str) -> float:
    """`90d`, `12h`, `30m`, `45s`, `2w` or plain seconds."""
    match = _DURATION.match(value)
    if not match:
        raise typer.BadParameter(f"expected a duration like 90d, 12h, 30m or 45s, got {value!r}")
    seconds = float(match.group(1)) * _UNITS_S[match.group(2) or "s"]
    if seconds <= 0:
        raise typer.BadParameter(f"duration must be > 0, got {value!r}")
    return seconds


def parse_time(value: str, now: float) -> float:
    """Epoch seconds, ISO 8601 (naive = UTC), or a duration ago (`7d` = seven days before now)."""
    text = value.strip()
    if _DURATION.match(text) and text[-1] in _UNITS_S:
        return now - parse_duration_s(text)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"expected epoch seconds, ISO 8601 or a duration ago like 7d, got {value!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _database_url(url: str | None) -> str:
    if url:
        return url
    from agentlb.settings import load_settings

    return load_settings().db_url


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@contextmanager
def _opened(url: str | None) -> Iterator[Store]:
    """The migrated store; agentlb errors become a one-line message and exit code 1."""
    try:
        store = Store.open(_database_url(url))
    except AgentLBError as exc:
        raise _fail(str(exc)) from exc
    try:
        yield store
    except AgentLBError as exc:
        raise _fail(str(exc)) from exc
    finally:
        store.close()


def _export_partitioned(
    directory: Path,
    partition_by: str,
    since_s: float | None,
    until_s: float | None,
    overwrite: bool,
    url: str | None,
) -> None:
    """`history export --partition-by day`: the dataset a Dask cluster reads lazily."""
    from agentlb.training.distributed.export import PARTITION_CHOICES, export_partitioned_history

    if partition_by not in PARTITION_CHOICES:
        raise typer.BadParameter(
            f"expected one of {', '.join(PARTITION_CHOICES)}, got {partition_by!r}",
            param_hint="--partition-by",
        )
    if directory.suffix.lower() in (".csv", ".parquet"):
        raise typer.BadParameter(
            f"with --partition-by, FILE is a dataset directory, not a {directory.suffix} file",
            param_hint="FILE",
        )
    with _opened(url) as store:
        db_url = store.url.render_as_string(hide_password=False)
    try:
        report = export_partitioned_history(
            db_url, directory, since=since_s, until=until_s, overwrite=overwrite
        )
    except AgentLBError as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:
        raise _fail(f"cannot write {directory}: {exc}") from exc
    first, last = (report.days[0], report.days[-1]) if report.days else ("-", "-")
    typer.echo(
        f"exported {report.rows} rows to {directory} in {len(report.days)} day partition(s), "
        f"{first} to {last}"
    )


def register(app: typer.Typer) -> None:
    db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
    history_app = typer.Typer(help="Task history: export, import, prune.", no_args_is_help=True)
    agents_app = typer.Typer(help="Agent registry.", no_args_is_help=True)
    app.add_typer(db_app, name="db")
    app.add_typer(history_app, name="history")
    app.add_typer(agents_app, name="agents")

    @db_app.command("upgrade")
    def db_upgrade(url: UrlOption = None) -> None:
        """Create the database or migrate it to the newest schema."""
        with _opened(url) as store:
            typer.echo(f"database {store.display_url} at schema revision {store.schema_revision()}")

    @history_app.command("export")
    def history_export(
        file: Annotated[
            Path, typer.Argument(help="output .csv or .parquet; with --partition-by, a dataset directory")
        ],
        since: Annotated[str | None, typer.Option(help="finished at or after: epoch, ISO 8601 or 7d")] = None,
        until: Annotated[str | None, typer.Option(help="finished before: epoch, ISO 8601 or 1d")] = None,
        partition_by: Annotated[
            str | None,
            typer.Option(
                "--partition-by",
                help="day: a Parquet dataset, day=YYYY-MM-DD/part-0.parquet per UTC day of arrival, "
                "written a day at a time",
            ),
        ] = None,
        overwrite: Annotated[
            bool, typer.Option("--overwrite", help="with --partition-by: replace an existing dataset")
        ] = False,
        url: UrlOption = None,
    ) -> None:
        """Write one row per finished task in the history-file contract, with dispatch features."""
        now = time.time()
        since_s = parse_time(since, now) if since else None
        until_s = parse_time(until, now) if until else None
        if partition_by is not None:
            _export_partitioned(file, partition_by, since_s, until_s, overwrite, url)
            return
        if overwrite:
            raise typer.BadParameter("--overwrite goes with --partition-by", param_hint="--overwrite")
        suffix = file.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise typer.BadParameter(f"FILE must end in .csv or .parquet, got {file.name!r}")
        with _opened(url) as store:
            frame = store.history_frame(since_s, until_s)
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            if suffix == ".csv":
                frame.to_csv(file, index=False)
            else:
                frame.to_parquet(file, index=False)
        except OSError as exc:
            raise _fail(f"cannot write {file}: {exc}") from exc
        typer.echo(f"exported {len(frame)} rows to {file} (0 rejected)")

    @history_app.command("import")
    def history_import(
        file: Annotated[Path, typer.Argument(help="a .csv or .parquet history file")],
        skip_bad_rows: Annotated[
            bool, typer.Option("--skip-bad-rows", help="write the good rows, count and list the bad ones")
        ] = False,
        url: UrlOption = None,
    ) -> None:
        """Load a history file into the store; one bad row rejects it all, unless --skip-bad-rows."""
        with _opened(url) as store:
            report = store.import_history(read_history(file), skip_bad_rows=skip_bad_rows)
        typer.echo(
            f"imported {report.written} rows from {file}; {len(report.rejected)} rejected; "
            f"{report.duplicates} already stored"
        )
        for rejected in report.rejected[:MAX_REJECTIONS_SHOWN]:
            typer.echo(f"  rejected row {rejected.row}: {rejected.reason}")
        if len(report.rejected) > MAX_REJECTIONS_SHOWN:
            typer.echo(f"  ... and {len(report.rejected) - MAX_REJECTIONS_SHOWN} more")
        if report.history_only_agents:
            unknown = report.history_only_agents
            typer.echo(
                f"{len(unknown)} agent(s) not in the registry recorded as history-only "
                f"(kept for training, not selectable until registered): {', '.join(unknown)}"
            )

    @history_app.command("prune")
    def history_prune(
        older_than: Annotated[str, typer.Option("--older-than", help="e.g. 90d, 12h")],
        url: UrlOption = None,
    ) -> None:
        """Delete tasks finished (or dispatched and never finished) longer ago than --older-than."""
        seconds = parse_duration_s(older_than)
        with _opened(url) as store:
            removed = store.prune(seconds, time.time())
        typer.echo(f"pruned {removed} tasks older than {older_than}")

    @agents_app.command("load")
    def agents_load(
        fleet: Annotated[Path, typer.Argument(help="fleet YAML file (agents: [...])")],
        url: UrlOption = None,
    ) -> None:
        """Register the agents of a fleet file, updating those whose definition changed."""
        from agentlb.sim.fleet import fleet_agents

        try:
            agents = fleet_agents(fleet)
        except AgentLBError as exc:
            raise _fail(str(exc)) from exc
        created = updated = unchanged = 0
        with _opened(url) as store:
            for agent in agents:
                try:
                    if store.add_agent(agent):
                        created += 1
                    else:
                        unchanged += 1
                except ConflictingAgentError:
                    store.upsert_agent(agent)
                    updated += 1
        typer.echo(f"agents from {fleet}: {created} registered, {updated} updated, {unchanged} unchanged")

    @agents_app.command("list")
    def agents_list(
        include_history_only: Annotated[
            bool, typer.Option("--all", help="include history-only agents (from imports)")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
        url: UrlOption = None,
    ) -> None:
        """The agent registry."""
        with _opened(url) as store:
            rows = store.list_agents(include_history_only=include_history_only)
        records: list[dict[str, Any]] = [
            {
                "id": r.agent.id,
                "name": r.agent.name,
                "capabilities": sorted(r.agent.capabilities),
                "max_concurrency": r.agent.max_concurrency,
                "weight": r.agent.weight,
                "enabled": r.agent.enabled,
                "history_only": r.history_only,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
            }
            for r in rows
        ]
        if as_json:
            typer.echo(json.dumps(records, indent=2))
            return
        table = Table(title=f"{len(records)} agents")
        for column in ("id", "name", "capabilities", "max_concurrency", "weight", "enabled", "history_only"):
            table.add_column(column)
        for r in records:
            table.add_row(
                r["id"], r["name"], ",".join(r["capabilities"]), str(r["max_concurrency"]),
                f"{r['weight']:g}", str(r["enabled"]), str(r["history_only"]),
            )
        Console().print(table)

    @app.command("bench-store")
    def bench_store(
        url: Annotated[
            str | None,
            typer.Option(help="SQLite or PostgreSQL URL; runs in a scratch file/schema (default: temp file)"),
        ] = None,
        writers: Annotated[int, typer.Option(help="concurrent writer threads")] = 8,
        outcomes: Annotated[int, typer.Option(help="outcomes per writer")] = 1000,
        latency_samples: Annotated[
            int, typer.Option(help="single-writer dispatch+outcome pairs timed")
        ] = 500,
        sqlite_synchronous: Annotated[
            str, typer.Option(help="SQLite synchronous pragma: NORMAL or FULL")
        ] = "NORMAL",
        as_json: Annotated[bool, typer.Option("--json", help="print JSON only")] = False,
    ) -> None:
        """Outcome writes per second with N writers, and the latency one committed write adds."""
        from agentlb.store.bench import run_store_bench

        try:
            record: dict[str, Any] = run_store_bench(
                url, writers, outcomes, latency_samples, sqlite_synchronous
            )
        except (AgentLBError, ValueError) as exc:
            raise _fail(str(exc)) from exc
        if as_json:
            typer.echo(json.dumps(record, indent=2))
            return
        table = Table(title="store outcome writes")
        table.add_column("measure")
        table.add_column("value", justify="right")
        for key, value in record.items():
            table.add_row(key, str(value))
        Console().print(table)
