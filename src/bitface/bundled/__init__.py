"""Models and a sample image shipped inside the package (see models.json and the model cards)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

SAMPLE_IMAGE = "astronaut.jpg"  # public domain (NASA): see ASSETS.md


def _folder() -> Path:
    return Path(str(resources.files(__name__)))


def index() -> dict:
    return json.loads((_folder() / "models.json").read_text())


def default_model() -> str:
    return index()["default"]


def list_models() -> list[dict]:
    """Each bundled model's entry from models.json, with its name, path and file size."""
    folder = _folder()
    rows = []
    for name, entry in index()["models"].items():
        path = folder / entry["file"]
        rows.append({"name": name, **entry, "path": str(path), "file_bytes": path.stat().st_size})
    return rows


def model_path(name: str) -> Path:
    models = index()["models"]
    if name not in models:
        raise ValueError(f"unknown model {name!r} (bundled: {', '.join(models)}; or give a .bitface path)")
    return _folder() / models[name]["file"]


def sample_image() -> Path:
    return _folder() / SAMPLE_IMAGE
