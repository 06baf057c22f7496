"""Every generated section of README.md and docs/benchmarks.md, with the results file it is
rendered from and the command that measures it.

`agentlb render-tables` rewrites the stale ones (`--check` fails on any); the benchmark commands
rewrite their own after measuring (`write_generated`); a test holds every committed section
equal to its render, so no figure in them is typed by hand.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentlb.doc_sections import DocSectionError, Section, load_json, stale_sections, write_section

README = "README.md"
BENCHMARKS_DOC = "docs/benchmarks.md"


@dataclass(frozen=True)
class Generated:
    """One generated section: its name (the markers'), the file holding it, the results files
    its renderer (`module:function`, imported when used) reads, in its argument order, and the
    command that writes them."""

    name: str
    doc: str
    results: tuple[str, ...]
    render: str
    made_by: str

    def render_body(self, *results: object) -> str:
        module, function = self.render.split(":")
        body: str = getattr(importlib.import_module(module), function)(*results)
        return body.strip("\n")


MODEL_RESULTS = ("benchmarks/results/benchmark-model.json", "benchmarks/results/benchmark-model-azure.json")
_BENCHMARK = "agentlb benchmark --predictor model --out ... (README: Measuring)"

SECTIONS: tuple[Generated, ...] = (
    Generated("readme-model", README, MODEL_RESULTS, "agentlb.sim.tables:render_readme_table", _BENCHMARK),
    Generated(
        "docs-model", BENCHMARKS_DOC, MODEL_RESULTS, "agentlb.sim.tables:render_docs_table", _BENCHMARK
    ),
    Generated(
        "training-accuracy",
        BENCHMARKS_DOC,
        ("training/results/accuracy.json",),
        "agentlb.training.bench_docs:render_accuracy",
        "training/bench_accuracy.py --out training/results/accuracy.json",
    ),
    Generated(
        "training-dask",
        BENCHMARKS_DOC,
        ("training/results/dask.json",),
        "agentlb.training.bench_docs:render_dask",
        "training/bench_dask.py --out training/results/dask.json",
    ),
    Generated(
        "shared-state",
        BENCHMARKS_DOC,
        ("benchmarks/results/shared_state.json",),
        "agentlb.replication.bench_docs:render_shared_state",
        "benchmarks/shared_state.py",
    ),
    Generated(
        "replicas",
        BENCHMARKS_DOC,
        ("benchmarks/results/replicas.json",),
        "agentlb.replication.bench_docs:render_replicas",
        "benchmarks/replicas.py",
    ),
    Generated(
        "experiments",
        BENCHMARKS_DOC,
        ("docs/results/experiments.json",),
        "agentlb.experiments.docs:render_markdown",
        "benchmarks/experiments.py",
    ),
    Generated(
        "shadow-overhead",
        BENCHMARKS_DOC,
        ("docs/results/shadow_overhead.json",),
        "agentlb.experiments.docs:render_shadow_overhead",
        "benchmarks/shadow_overhead.py",
    ),
)
NAMES = tuple(g.name for g in SECTIONS)


def _chosen(names: Iterable[str] | None) -> list[Generated]:
    if names is None:
        return list(SECTIONS)
    wanted = list(names)
    unknown = sorted(set(wanted) - set(NAMES))
    if unknown:
        raise DocSectionError(f"unknown generated sections {unknown}; known: {', '.join(NAMES)}")
    return [g for g in SECTIONS if g.name in wanted]


def render_sections(root: Path, names: Iterable[str] | None = None) -> list[Section]:
    """What each chosen section (all when `names` is None) renders from the results under `root`."""
    found: list[Section] = []
    for generated in _chosen(names):
        results = [load_json(root / path, generated.made_by) for path in generated.results]
        try:
            body = generated.render_body(*results)
        except (KeyError, TypeError, ValueError) as exc:
            where = ", ".join(generated.results)
            raise DocSectionError(f"cannot render section {generated.name} from {where}: {exc!r}") from exc
        found.append(Section(root / generated.doc, generated.name, body))
    return found


def stale(root: Path, names: Iterable[str] | None = None) -> list[Section]:
    return stale_sections(render_sections(root, names))


def write_generated(root: Path, names: Sequence[str] | None = None) -> list[Section]:
    """Rewrite the chosen sections that differ from their render; returns those written."""
    written = stale(root, names)
    for section in written:
        write_section(section)
    return written


def write_sections_of(root: Path, results_file: Path) -> list[Section]:
    """After a benchmark wrote `results_file`: rewrite the sections rendered from it, when it is
    one of the committed results files under `root` (a results file written elsewhere, e.g. a
    trial run's, leaves the docs alone). Returns the sections written."""
    written = results_file.resolve()
    names = [g.name for g in SECTIONS if any((root / path).resolve() == written for path in g.results)]
    return write_generated(root, names) if names else []
