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


def record_latency(rows: list[dict], provenance: dict) -> list[str]:
    """Store each bundled model's latency from a `bitface bench` run (its result rows and provenance)
    in models.json, where `bitface models` lists it. Returns the names recorded. Re-bundling a model
    drops its figure: it belongs to the file that was timed."""
    index_path = PACKAGE / "models.json"
    index = json.loads(index_path.read_text())
    recorded = []
    for row in rows:
        entry = index["models"].get(row["model"])
        if entry is None or row.get("latency_us_median") is None:
            continue  # a peer (dlib), or a model this index does not ship
        entry["latency_us"] = {
            "median": round(row["latency_us_median"], 1),
            "min": round(row["latency_us_min"], 1),
            "what": "one face, uint8 crop to points, one thread pinned",
            "image_and_box_median": None
            if row.get("api_latency_us_median") is None
            else round(row["api_latency_us_median"], 1),
            "cpu": provenance.get("cpu"),
            "kernel_path": provenance.get("kernel_path"),
            "date": provenance.get("date"),
            "git_revision": provenance.get("git_revision"),
        }
        recorded.append(row["model"])
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return recorded
