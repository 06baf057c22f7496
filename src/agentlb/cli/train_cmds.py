"""`agentlb train`, `agentlb predict`, `agentlb retrain`: the training pipeline from the shell.

With `--json` only the JSON summary goes to stdout; progress, logs and MLflow's own chatter go
to stderr, so `agentlb train --json | jq` works.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from agentlb.errors import AgentLBError, ModelLoadError

log = logging.getLogger("agentlb.training")

DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
DEFAULT_MIN_STORE_ROWS = 500
SIMULATED_TASKS = 20_000


def parse_duration_s(text: str) -> float:
    """`90s`, `30m`, `6h`, `7d`, `1w` (or a bare number of seconds) as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise typer.BadParameter(f"expected a duration like 30m, 6h or 7d, got {text!r}")
    value = float(match.group(1)) * DURATION_UNITS[match.group(2) or "s"]
    if value <= 0:
        raise typer.BadParameter(f"duration must be > 0, got {text!r}")
    return value


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """`--since`: a relative duration (`7d` = the last 7 days), epoch seconds or ISO 8601."""
    if text is None:
        return None
    if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*[smhdw]\s*", text):
        return (now if now is not None else time.time()) - parse_duration_s(text)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        raise typer.BadParameter(f"--since must be like 7d, epoch seconds or ISO 8601, got {text!r}") from exc


@contextlib.contextmanager
def _stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """MLflow prints registration messages to stdout; keep stdout for the JSON summary."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("agentlb")
    if not root.handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def _progress(message: str, fraction: float) -> None:
    typer.echo(f"[{100 * fraction:3.0f}%] {message}", err=True)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[[str, float], None]]:
    """A rich progress bar on stderr, moved by the pipeline's (message, fraction) callback; one
    line per stage when stderr is not a terminal (a log file keeps every stage)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield _progress
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("training", total=1.0)

        def update(message: str, fraction: float) -> None:
            bar.update(task, completed=fraction, description=message)

        yield update


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="holdout metrics (seconds of service time)")
    for column in ("candidate", "MAE", "RMSE", "MAPE", "p90 coverage", "train s", "predict µs/row"):
        table.add_column(column, justify="right")
    for c in summary["candidates"]:
        table.add_row(
            c["name"],
            f"{c['mae']:.3f}",
            f"{c['rmse']:.3f}",
            f"{c['mape']:.3f}",
            f"{c['p90_coverage']:.3f}",
            f"{c['train_s']:.2f}",
            f"{c['predict_us_per_row']:.2f}",
        )
    console = Console()
    console.print(table)
    for failed in summary.get("failed_candidates", []):
        console.print(f"FAILED candidate {failed['name']} (run {failed['run_id']}): {failed['error']}")
    if summary.get("notice"):
        console.print(f"note: {summary['notice']}")
    by_reason: dict[str, list[str]] = {}
    for name, why in summary.get("dropped_features", {}).items():
        by_reason.setdefault(why, []).append(name)
    for why, names in by_reason.items():
        console.print(f"features left out ({why}): {', '.join(names)}")
    tuning = summary.get("tuning")
    if tuning:
        console.print(
            f"tuning: {tuning['trials']} trials in {tuning['tune_s']:.1f} s, inner-CV MAE "
            f"{tuning['best_cv_mae']:.4f} s (defaults {tuning['default_cv_mae']:.4f} s); "
            f"best {tuning['best_params']}"
        )
    decision = summary["decision"]
    verdict = "PROMOTED to champion" if summary["promoted"] else "kept as challenger (not promoted)"
    console.print(f"winner: {summary['winner']} {summary['model_version']} — {verdict}: {decision['reason']}")
    console.print(f"bundle: {summary['bundle_path']}")
    if summary.get("runs_view"):
        console.print(f"runs view: {summary['runs_view']}", soft_wrap=True)


def _simulated_history(n_tasks: int, seed: int) -> Any:
    from agentlb.training.synthetic import synthetic_history

    return synthetic_history(n_tasks=n_tasks, seed=seed)


def _drift_or_none(policy: Any = None) -> Any:
    """The serving model's drift report, or None when no model loads (then there is nothing
    to compare and a retrain should run)."""
    from agentlb.drift import DriftPolicy, assess_serving_model
    from agentlb.predictor.model import load_champion
    from agentlb.settings import load_settings
    from agentlb.store import Store

    settings = load_settings()
    try:
        model = load_champion()
    except ModelLoadError:
        return None
    store = Store.open(settings.db_url)
    try:
        return assess_serving_model(store, model.describe(), policy or DriftPolicy.from_settings(settings))
    finally:
        store.close()


def _retrain_once(
    since: float | None, simulate_if_short: bool, config: Path | None, if_drifted: bool, as_json: bool
) -> None:
    """One `retrain` run: skipped when `if_drifted` and the serving model has not drifted."""
    report = _drift_or_none() if if_drifted else None
    if report is not None and report.drifted is not True:
        if as_json:
            typer.echo(json.dumps({"skipped": True, "drift": report.as_dict()}, default=str))
        else:
            verdict = "no drift" if report.drifted is False else "not enough evidence of drift"
            why = "; ".join(report.reasons) or "accuracy within bounds"
            typer.echo(f"{report.model_version}: {verdict}, not retrained — {why}")
        return
    _promote_on_live_evidence(as_json)
    with _stdout_to_stderr(True):
        summary = _train_once(
            None, True, since, simulate_if_short, config, None, None, True, True, quiet=True
        )
    if as_json:
        typer.echo(json.dumps(summary, default=str))
    else:
        promoted = "promoted" if summary["promoted"] else "not promoted"
        typer.echo(f"{summary['model_version']}: {promoted} — {summary['decision']['reason']}")


def _promote_on_live_evidence(as_json: bool) -> None:
    """With AGENTLB_PROMOTION_MIN_LIVE_TASKS > 0, the challenger of an earlier run is promoted
    first when its live shadow evidence holds (training/live_gate.py)."""
    from agentlb.settings import load_settings
    from agentlb.training.live_gate import promote_challenger

    settings = load_settings()
    if settings.promotion_min_live_tasks <= 0:
        return
    decision = promote_challenger(settings)
    if as_json:
        typer.echo(json.dumps({"live_gate": decision}, default=str))
    else:
        verdict = "promoted" if decision["promoted"] else "not promoted"
        typer.echo(f"challenger {decision.get('model_version', '')}: {verdict} — {decision['reason']}")


def _train_once(
    history: Path | None,
    from_db: bool,
    since: float | None,
    simulate_if_short: bool,
    config_path: Path | None,
    holdout_frac: float | None,
    seed: int | None,
    skip_bad_rows: bool,
    export: bool,
    quiet: bool,
    tune_trials: int = 0,
) -> dict[str, Any]:
    from agentlb.settings import load_settings
    from agentlb.training.config import load_config
    from agentlb.training.pipeline import run_training

    settings = load_settings()
    config = load_config(config_path)
    source: Any = history
    if from_db:
        from agentlb.training.store_history import load_store_history

        frame = load_store_history(settings, since)
        if simulate_if_short and len(frame) < DEFAULT_MIN_STORE_ROWS:
            typer.echo(
                f"the store has {len(frame)} history rows (< {DEFAULT_MIN_STORE_ROWS}); "
                f"training on a simulated history of {SIMULATED_TASKS} tasks",
                err=True,
            )
            frame = _simulated_history(SIMULATED_TASKS, seed if seed is not None else config.seed)
        source = frame
    elif history is None:
        if not simulate_if_short:
            raise typer.BadParameter("give --history FILE or --from-db (or --simulate-if-short)")
        source = _simulated_history(SIMULATED_TASKS, seed if seed is not None else config.seed)
    return run_training(
        source,
        settings=settings,
        config=config,
        holdout_frac=holdout_frac,
        seed=seed,
        skip_bad_rows=skip_bad_rows,
        export=export,
        tune_trials=tune_trials,
        progress=None if quiet else _progress,
    )


def _dask_target(flag: str | None) -> Any:
    """The cluster to train on: `--dask`, else AGENTLB_DASK_SCHEDULER, else None (in process)."""
    from agentlb.settings import load_settings
    from agentlb.training.distributed.cluster import FLAG, parse_target

    if flag is not None:
        return parse_target(flag, FLAG)
    configured = load_settings().dask_scheduler
    return None if configured is None else parse_target(configured, "AGENTLB_DASK_SCHEDULER")


def _train_on_dask(
    target: Any,
    history: Path | None,
    from_db: bool,
    since: float | None,
    config_path: Path | None,
    holdout_frac: float | None,
    seed: int | None,
    skip_bad_rows: bool,
    export: bool,
) -> dict[str, Any]:
    """`agentlb train --dask`: the history read in partitions (a partitioned Parquet dataset or
    the store by time range) and trained on the cluster, with a progress bar."""
    from agentlb.settings import load_settings
    from agentlb.training.config import load_config
    from agentlb.training.distributed.cluster import dask_client
    from agentlb.training.distributed.pipeline import run_dask_training

    if history is None and not from_db:
        raise typer.BadParameter(
            f"{target.source} needs --history DATASET (partitioned Parquet) or --from-db"
        )
    settings = load_settings()
    config = load_config(config_path)
    with dask_client(target, lambda line: typer.echo(line, err=True)) as client:
        from agentlb.training.distributed.source import read_partitioned_history

        frame = read_partitioned_history(
            history, db_url=settings.db_url if from_db else None, since=since, skip_bad_rows=skip_bad_rows
        )
        with _progress_bar() as progress:
            return run_dask_training(
                frame,
                client,
                target,
                settings=settings,
                config=config,
                holdout_frac=holdout_frac,
                seed=seed,
                export=export,
                progress=progress,
            )


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        history: Annotated[Path | None, typer.Option("--history", help="history CSV or Parquet file")] = None,
        from_db: Annotated[bool, typer.Option("--from-db", help="train on the store's task history")] = False,
        since: Annotated[
            str | None, typer.Option(help="with --from-db: only tasks since (7d, epoch, ISO)")
        ] = None,
        simulate_if_short: Annotated[
            bool,
            typer.Option("--simulate-if-short", help="use a simulated history when the store has too little"),
        ] = False,
        config: Annotated[Path | None, typer.Option(help="training config YAML (training/configs/)")] = None,
        holdout_frac: Annotated[
            float | None, typer.Option(min=0.01, max=0.9, help="most recent share held out")
        ] = None,
        seed: Annotated[int | None, typer.Option(help="random seed (default: the config's)")] = None,
        skip_bad_rows: Annotated[
            bool, typer.Option("--skip-bad-rows", help="skip and count bad rows")
        ] = False,
        no_export: Annotated[bool, typer.Option("--no-export", help="do not write models/champion")] = False,
        tune: Annotated[
            int,
            typer.Option(
                "--tune",
                min=0,
                help="search LightGBM parameters with N Optuna trials (time-ordered CV on the training part)",
            ),
        ] = 0,
        dask: Annotated[
            str | None,
            typer.Option(
                "--dask",
                help="train on a Dask cluster: a scheduler address (tcp://host:8786) or local[:N] "
                "(a LocalCluster of N worker processes); default AGENTLB_DASK_SCHEDULER",
            ),
        ] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help="print only the JSON summary on stdout")
        ] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    ) -> None:
        """Fit completion-time models from task history into MLflow, gate and export the champion."""
        _setup_logging(verbose)
        if history is not None and from_db:
            raise typer.BadParameter("give either --history or --from-db, not both")
        try:
            target = _dask_target(dask)
            if target is not None:
                if tune:
                    raise typer.BadParameter(
                        f"--tune searches in one process; it cannot run with {target.source}"
                    )
                with _stdout_to_stderr(as_json):
                    summary = _train_on_dask(
                        target,
                        history,
                        from_db,
                        parse_since(since),
                        config,
                        holdout_frac,
                        seed,
                        skip_bad_rows,
                        not no_export,
                    )
            else:
                with _stdout_to_stderr(as_json):
                    summary = _train_once(
                        history,
                        from_db,
                        parse_since(since),
                        simulate_if_short,
                        config,
                        holdout_frac,
                        seed,
                        skip_bad_rows,
                        not no_export,
                        quiet=False,
                        tune_trials=tune,
                    )
        except AgentLBError as exc:
            raise _fail(exc) from None
        if as_json:
            typer.echo(json.dumps(summary, indent=2, default=str))
        else:
            _print_summary(summary)

    @app.command("predict")
    def predict(
        history: Annotated[Path, typer.Option("--history", help="history CSV or Parquet file to score")],
        out: Annotated[Path, typer.Option("--out", help="predictions CSV to write")],
        model: Annotated[
            str | None, typer.Option(help="bundle path or models:/agentlb-completion-time@champion")
        ] = None,
    ) -> None:
        """Score a history file with the champion (offline check): task_id, predicted_p50_s/p90_s."""
        from agentlb.settings import load_settings
        from agentlb.training.offline import predict_history

        settings = load_settings()
        uri = model or settings.model_uri or str(settings.models_dir / "champion")
        try:
            rows = predict_history(history, out, uri, settings.tracking_uri)
        except AgentLBError as exc:
            raise _fail(exc) from None
        typer.echo(f"wrote {rows} predictions to {out} (model {uri})", err=True)

    @app.command("drift")
    def drift(
        window: Annotated[str, typer.Option(help="completed tasks of the last interval (24h, 90m)")] = "",
        as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
    ) -> None:
        """Has the serving model drifted? Its accuracy over the window against its holdout's.
        Exit code 0: no drift or too few tasks to tell; 3: drifted (retrain); 1: no model."""
        from agentlb.drift import DriftPolicy
        from agentlb.settings import load_settings

        settings = load_settings()
        policy = DriftPolicy.from_settings(settings)
        if window:
            policy = DriftPolicy(parse_duration_s(window), policy.min_samples, policy.mae_tolerance)
        try:
            report = _drift_or_none(policy)
        except AgentLBError as exc:  # the store is unreachable or not migrated
            raise _fail(exc) from None
        if report is None:
            raise _fail(
                ModelLoadError("no model loads from AGENTLB_MODEL_URI: nothing to assess (agentlb train)")
            )
        if as_json:
            typer.echo(json.dumps(report.as_dict(), default=str))
        else:
            verdict = {True: "DRIFTED", False: "no drift", None: "not enough evidence"}[report.drifted]
            mae = "n/a" if report.online_mae_s is None else f"{report.online_mae_s:.3f} s"
            holdout = "n/a" if report.holdout_mae_s is None else f"{report.holdout_mae_s:.3f} s"
            coverage = "n/a" if report.p90_coverage is None else f"{report.p90_coverage:.1%}"
            typer.echo(
                f"{report.model_version}: {verdict} over {report.samples} tasks "
                f"(online MAE {mae}, holdout MAE {holdout}, p90 coverage {coverage})"
            )
            for reason in report.reasons:
                typer.echo(f"  - {reason}")
        if report.drifted:
            raise typer.Exit(code=3)

    @app.command("promote-challenger")
    def promote_challenger_cmd(
        min_live_tasks: Annotated[
            int | None, typer.Option(min=0, help="live tasks required (AGENTLB_PROMOTION_MIN_LIVE_TASKS)")
        ] = None,
        margin: Annotated[
            float | None, typer.Option(min=0, help="allowed MAE excess (AGENTLB_PROMOTION_LIVE_MARGIN)")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="the decision as JSON")] = False,
    ) -> None:
        """Promote the registered challenger when its shadow error on live tasks is no worse than
        the champion's on the same tasks; exit 3 when it is not promoted."""
        from agentlb.settings import load_settings
        from agentlb.training.live_gate import promote_challenger

        try:
            decision = promote_challenger(load_settings(), min_live_tasks, margin)
        except AgentLBError as exc:
            raise _fail(exc) from None
        if as_json:
            typer.echo(json.dumps(decision, default=str))
        else:
            verdict = "promoted" if decision["promoted"] else "not promoted"
            typer.echo(f"challenger {decision.get('model_version', '')}: {verdict} — {decision['reason']}")
        if not decision["promoted"]:
            raise typer.Exit(code=3)

    @app.command("retrain")
    def retrain(
        every: Annotated[
            str | None, typer.Option(help="repeat every interval (6h, 30m); once when omitted")
        ] = None,
        since: Annotated[str, typer.Option(help="train on tasks since (7d, epoch, ISO)")] = "30d",
        config: Annotated[Path | None, typer.Option(help="training config YAML")] = None,
        simulate_if_short: Annotated[bool, typer.Option("--simulate-if-short")] = False,
        if_drifted: Annotated[
            bool,
            typer.Option(
                "--if-drifted",
                help="train only when the serving model has drifted (see `agentlb drift`) or none loads",
            ),
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON summary per run on stdout")] = False,
    ) -> None:
        """Retrain on the store's recent history and promote by the gate; a concurrent retrain is refused."""
        _setup_logging(True)
        interval = parse_duration_s(every) if every else None
        while True:
            started = time.monotonic()
            try:
                _retrain_once(parse_since(since), simulate_if_short, config, if_drifted, as_json)
            except AgentLBError as exc:
                if interval is None:
                    raise _fail(exc) from None
                log.error("retrain failed, will retry in %s: %s", every, exc)
            if interval is None:
                return
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
