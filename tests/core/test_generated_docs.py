"""Every generated section of README.md and docs/benchmarks.md: one renderer each, the committed
copies equal their render, and `agentlb render-tables` rewrites a stale one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentlb.cli import app
from agentlb.doc_sections import DocSectionError, Section, markers, read_section, write_section
from agentlb.generated_docs import NAMES, SECTIONS, render_sections, write_sections_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", NAMES)
def test_the_committed_section_is_the_render_of_its_committed_results(name: str) -> None:
    (section,) = render_sections(ROOT, [name])
    assert read_section(section.path, name) == section.body, (
        f"{section.path.name} section {name} is stale: run `agentlb render-tables`"
    )


def _copy_checkout(tmp_path: Path) -> Path:
    for relative in {g.doc for g in SECTIONS} | {r for g in SECTIONS for r in g.results}:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / relative, tmp_path / relative)
    return tmp_path


def test_render_tables_rewrites_a_stale_section_and_check_tells(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    doc = root / "docs" / "benchmarks.md"
    before = doc.read_text(encoding="utf-8")
    write_section(Section(doc, "replicas", "typed by hand"))
    runner = CliRunner()
    check = runner.invoke(app, ["render-tables", "--root", str(root), "--check"])
    assert check.exit_code == 1 and "section replicas" in check.output
    written = runner.invoke(app, ["render-tables", "--root", str(root)])
    assert written.exit_code == 0 and written.output.count("wrote") == 1
    assert doc.read_text(encoding="utf-8") == before
    assert runner.invoke(app, ["render-tables", "--root", str(root), "--check"]).exit_code == 0


def test_missing_results_markers_and_names_are_clear_errors(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    (root / "benchmarks" / "results" / "replicas.json").unlink()
    with pytest.raises(
        DocSectionError, match=r"replicas.json does not exist; `benchmarks/replicas.py` writes"
    ):
        render_sections(root, ["replicas"])
    (root / "training" / "results" / "accuracy.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DocSectionError, match="JSON object"):
        render_sections(root, ["training-accuracy"])
    (root / "docs" / "results" / "experiments.json").write_text('{"aa": []}', encoding="utf-8")
    with pytest.raises(DocSectionError, match="cannot render section experiments"):
        render_sections(root, ["experiments"])
    begin, end = markers("readme-model")
    (root / "README.md").write_text(f"{end}\n{begin}\n", encoding="utf-8")
    with pytest.raises(DocSectionError, match="exactly one"):
        read_section(root / "README.md", "readme-model")
    result = CliRunner().invoke(app, ["render-tables", "--root", str(root), "--only", "readme,replicas"])
    assert result.exit_code == 2 and "unknown generated sections ['readme']" in result.output


def test_a_benchmark_rewrites_the_sections_of_the_results_file_it_wrote(tmp_path: Path) -> None:
    root = _copy_checkout(tmp_path)
    doc = root / "docs" / "benchmarks.md"
    before = doc.read_text(encoding="utf-8")
    write_section(Section(doc, "replicas", "typed by hand"))
    assert write_sections_of(root, tmp_path / "elsewhere.json") == []
    written = write_sections_of(root, root / "benchmarks" / "results" / "replicas.json")
    assert [s.name for s in written] == ["replicas"]
    assert doc.read_text(encoding="utf-8") == before
