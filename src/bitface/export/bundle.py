"""Shipping a trained model inside the package (a maintainer's step, run by the benchmark scripts):
the packed file and its model card go to src/bitface/bundled/, its entry into models.json (merged
with the entries already there, so each benchmark updates only its own models)."""

from __future__ import annotations

import json
from pathlib import Path

from ..evaluate.results import git_revision
from ..models.model_file import load_model
from .convert import export_model

PACKAGE = Path(__file__).resolve().parents[1] / "bundled"


def bundle_model(checkpoint: Path, name: str, entry: dict, card: str, default: str | None = None) -> Path:
    """Export `checkpoint` as PACKAGE/NAME.bitface with card NAME.md and index entry `entry` (plus
    file and card); `default` also makes a model the package default."""
    checkpoint = Path(checkpoint).resolve()
    repo = PACKAGE.parents[2]
    source = checkpoint.relative_to(repo) if checkpoint.is_relative_to(repo) else checkpoint
    packed = export_model(load_model(checkpoint), {"exported_from": str(source), "git_revision": git_revision()})
    packed.meta["info"]["box_convention"] = entry["box_convention"]
    path = packed.save(PACKAGE / f"{name}.bitface")
    (PACKAGE / f"{name}.md").write_text(card.replace("{file_bytes}", f"{path.stat().st_size:,}"))
    index_path = PACKAGE / "models.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"default": name, "models": {}}
    index["models"][name] = {"file": path.name, "card": f"{name}.md", **entry}
    if default:
        index["default"] = default
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return path
