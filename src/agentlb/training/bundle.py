"""The model bundle (DESIGN.md): p50/p90 LightGBM text models plus `bundle.json`.

`bundle.json` carries everything serving needs besides the boosters: the feature spec with
its version and category vocabularies, the target transform, and the training lineage.
Bundles are written to a temporary directory and moved into place, so a reader never sees a
half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb

from agentlb.features import FeatureSpec
from agentlb.predictor.model import BUNDLE_FILE, BUNDLE_FORMAT, P50_FILE, P90_FILE, TARGET_TRANSFORM

KEEP_BUNDLES = 3


def write_bundle_files(
    directory: Path,
    p50: lgb.Booster,
    p90: lgb.Booster,
    spec: FeatureSpec,
    model_version: str,
    metadata: dict[str, Any],
    p90_log_offset: float = 0.0,
) -> Path:
    """Write the bundle files into an existing empty `directory` (not atomic on its own)."""
    p50.save_model(str(directory / P50_FILE))
    p90.save_model(str(directory / P90_FILE))
    document = {
        "format": BUNDLE_FORMAT,
        "feature_version": spec.version,
        "feature_spec": spec.to_dict(),
        "target_transform": TARGET_TRANSFORM,
        "p90_log_offset": p90_log_offset,
        "model_version": model_version,
        "metadata": metadata,
    }
    (directory / BUNDLE_FILE).write_text(json.dumps(document, indent=2, sort_keys=True, default=str))
    return directory


def export_bundle(
    models_dir: Path,
    p50: lgb.Booster,
    p90: lgb.Booster,
    spec: FeatureSpec,
    model_version: str,
    metadata: dict[str, Any],
    p90_log_offset: float = 0.0,
    link_name: str = "champion",
) -> Path:
    """Write a bundle under `models_dir/bundles/` and point `models_dir/<link_name>` at it.

    The files go to a temporary directory first, which is renamed into place; the
    `champion` link is then replaced with `os.replace` of a new symlink, which is atomic, so
    a server reading `models/champion` sees the old bundle or the new one, never a mix.
    """
    bundles = models_dir / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=bundles))
    try:
        write_bundle_files(staging, p50, p90, spec, model_version, metadata, p90_log_offset)
        final = bundles / f"{model_version}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        os.rename(staging, final)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    link = models_dir / link_name
    if link.exists() and not link.is_symlink():  # an older real directory: move it aside once
        os.rename(link, bundles / f"legacy-{time.strftime('%Y%m%dT%H%M%S')}")
    temp_link = models_dir / f".{link_name}.tmp-{os.getpid()}"
    if temp_link.is_symlink():
        temp_link.unlink()
    os.symlink(Path("bundles") / final.name, temp_link)
    os.replace(temp_link, link)
    _prune(bundles, keep=final)
    return link


def _prune(bundles: Path, keep: Path) -> None:
    """Keep the newest few bundles so a rollback is a symlink away; delete older ones."""
    finished = sorted(
        (p for p in bundles.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in finished[KEEP_BUNDLES:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
