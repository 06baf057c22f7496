"""The `agentlb` command. Each module of this package adds its commands through `register(app)`."""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    name="agentlb",
    help="Select which AI agent gets the next task; simulate, benchmark, train and serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main() -> None:
    """agentlb: agent selection, simulation, training and serving."""


for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}").register(app)
