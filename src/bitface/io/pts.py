"""iBUG .pts files (1-based on disk, with or without the version/n_points/{ } header and footer) and
menpo .ljson files (points stored as [y, x]); a folder of images with either beside them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .sample import Collector, DataError, Sample, make_points, parse_floats


def parse_pts(path: Path) -> np.ndarray:
    """Points of one .pts file, converted to 0-based."""
    try:
        lines = Path(path).read_text(encoding="ascii", errors="strict").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not an ASCII .pts file") from None
    declared = None
    values: list[float] = []
    in_braces = None  # None: no header seen; True inside {...}; False after }
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        where = f"{path}:{number}"
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("version:"):
            continue
        if line.lower().startswith("n_points:"):
            try:
                declared = int(line.split(":", 1)[1])
            except ValueError:
                raise DataError(f"{where}: bad n_points line {line!r}") from None
            continue
        if line == "{":
            in_braces = True
            continue
        if line == "}":
            in_braces = False
            continue
        if in_braces is False:
            raise DataError(f"{where}: text after the closing brace")
        fields = line.split()
        if len(fields) != 2:
            raise DataError(f"{where}: expected 'x y', got {line!r}")
        values.extend(parse_floats(fields, where))
    if in_braces is True:
        raise DataError(f"{path}: truncated (no closing brace)")
    return make_points(values, declared, str(path), offset=1.0)


def parse_ljson(path: Path) -> np.ndarray:
    """The main point group of a menpo .ljson file (versions 1-3), converted from [y, x] to (x, y)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object")
    version = doc.get("version", 1)
    try:
        if version == 3:
            groups = doc["groups"]
            # menpo names the default group "LJSON"; otherwise take the largest one.
            name = "LJSON" if "LJSON" in groups else max(groups, key=lambda g: len(groups[g]["landmarks"]["points"]))
            raw = groups[name]["landmarks"]["points"]
        else:
            raw = doc["landmarks"]["points"]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: missing key {exc} in ljson version {version}") from None
    if any(p is None or None in p for p in raw):
        raise DataError(f"{path}: contains null (missing) points")
    yx = make_points(raw, None, str(path))
    return yx[:, ::-1].copy()


PARSERS = {"pts": parse_pts, "ljson": parse_ljson}


def read_annotation_files(files: list[Path], collector: Collector, format: str) -> None:
    """`format` is "pts", "ljson" or "pts+ljson"; a file named otherwise is parsed as the first."""

    def parse(path: Path) -> dict:
        suffix = path.suffix.lower().lstrip(".")
        return {"points": PARSERS[suffix if suffix in format.split("+") else format.split("+")[0]](path)}

    read_files_beside_images(files, collector, parse)


def read_files_beside_images(files: list[Path], collector: Collector, parse) -> None:
    """One face per annotation file, its image beside it with the same name; `parse(path)` returns
    the Sample fields (points, and optionally pose...)."""
    from .images import find_image

    for path in files:
        try:
            fields = parse(path)
            image = find_image(path)
            if image is None:
                raise DataError(f"{path}: no image file beside it with the same name")
        except DataError as exc:
            collector.fail(str(exc))
            continue
        collector.add(Sample(image_path=image, source=str(path), **fields))


def annotation_files(source: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if source.is_file():
        return [source]
    return sorted(p for p in source.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
