"""Generated sections of README.md and docs/: how they are marked, read, written and checked.

A generated section sits between `<!-- generated:NAME:begin -->` and
`<!-- generated:NAME:end -->`; its body is rendered from a committed results file, never typed.
`agentlb.generated_docs` lists every section and its renderer; `agentlb render-tables` writes
them and `--check` (and a test) fails when a committed section differs from its render.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlb.errors import AgentLBError


class DocSectionError(AgentLBError):
    """A results file or a generated section's markers are missing or malformed."""


@dataclass(frozen=True)
class Section:
    """What a generated section of `path` should hold."""

    path: Path
    name: str
    body: str


def markers(name: str) -> tuple[str, str]:
    return f"<!-- generated:{name}:begin -->", f"<!-- generated:{name}:end -->"


def read_section(path: Path, name: str) -> str:
    """The text between the section's markers (without them and their surrounding newlines)."""
    if not path.is_file():
        raise DocSectionError(f"{path} does not exist")
    text = path.read_text(encoding="utf-8")
    begin, end = markers(name)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise DocSectionError(f"{path} must hold exactly one {begin} followed by one {end}")
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def write_section(section: Section) -> None:
    """Replace the section's body in its file, leaving the rest of the file as it is."""
    read_section(section.path, section.name)  # validates the markers
    text = section.path.read_text(encoding="utf-8")
    begin, end = markers(section.name)
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    section.path.write_text(f"{head}{begin}\n{section.body}\n{end}{tail}", encoding="utf-8")


def stale_sections(found: Sequence[Section]) -> list[Section]:
    """The sections whose committed text differs from what their results render."""
    return [s for s in found if read_section(s.path, s.name) != s.body]


def load_json(path: Path, made_by: str) -> dict[str, Any]:
    """A results file, or an error naming the command that writes it."""
    if not path.is_file():
        raise DocSectionError(f"results file {path} does not exist; `{made_by}` writes it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DocSectionError(f"results file {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DocSectionError(f"results file {path} must hold a JSON object")
    return data
