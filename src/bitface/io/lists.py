"""One-face-per-line list formats: CUHK (Sun et al.), MTFL (Zhang et al.) and WFLW."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .sample import Collector, DataError, Sample, make_points, parse_floats


def _lines(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line number, 'file:line', fields) of each non-empty line; CRLF and leading spaces tolerated."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, f"{path}:{number}", line.split()


def _image(root: Path, name: str) -> Path:
    return root / name.replace("\\", "/")


def read_cuhk(path: Path, collector: Collector) -> None:
    """`path left right top bottom x1 y1 ... x5 y5`, 0-based, backslash paths, CRLF.

    The box is given as left right top bottom (x_min x_max y_min y_max), not x1 y1 x2 y2.
    """
    for number, where, fields in _lines(path):
        try:
            if len(fields) != 15:
                raise DataError(f"{where}: expected 15 fields (path, 4 box, 10 coordinates), found {len(fields)}")
            numbers = parse_floats(fields[1:], where)
            left, right, top, bottom = numbers[:4]
            if right <= left or bottom <= top:
                raise DataError(f"{where}: empty face box (left right top bottom = {numbers[:4]})")
            points = make_points(numbers[4:], 5, where)
        except DataError as exc:
            collector.fail(str(exc))
            continue
        collector.add(
            Sample(
                image_path=_image(path.parent, fields[0]),
                points=points,
                box=np.array([left, top, right, bottom]),
                source=f"{path.name}:{number}",
            )
        )


MTFL_ATTRIBUTES = ("gender", "smile", "glasses", "pose")


def read_mtfl(path: Path, collector: Collector) -> None:
    """`path x1..x5 y1..y5 gender smile glasses pose`: all x's, then all y's, 1-based."""
    for number, where, fields in _lines(path):
        try:
            if len(fields) not in (11, 15):
                raise DataError(f"{where}: expected 15 fields (path, 5 x, 5 y, 4 attributes), found {len(fields)}")
            numbers = parse_floats(fields[1:11], where)
            points = make_points(np.stack([numbers[:5], numbers[5:]], axis=1), 5, where, offset=1.0)
            attributes = dict(zip(MTFL_ATTRIBUTES, (int(float(v)) for v in fields[11:]), strict=False))
        except (DataError, ValueError) as exc:
            collector.fail(str(exc) if isinstance(exc, DataError) else f"{where}: bad attribute ({exc})")
            continue
        collector.add(
            Sample(
                image_path=_image(path.parent, fields[0]),
                points=points,
                source=f"{path.name}:{number}",
                attributes=attributes,
            )
        )


WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")


def read_wflw(path: Path, collector: Collector, image_root: Path | None = None) -> None:
    """WFLW annotation txt: 196 coordinates (x, y pairs, 0-based), box x_min y_min x_max y_max,
    6 binary attributes, image path relative to WFLW_images."""
    root = image_root or _wflw_image_root(path)
    for number, where, fields in _lines(path):
        try:
            if len(fields) != 207:
                raise DataError(
                    f"{where}: expected 207 fields (196 coords, 4 box, 6 attributes, path), found {len(fields)}"
                )
            numbers = parse_floats(fields[:206], where)
            points = make_points(numbers[:196], 98, where)
            box = np.array(numbers[196:200])
            attributes = dict(zip(WFLW_ATTRIBUTES, (int(v) for v in numbers[200:206]), strict=True))
        except DataError as exc:
            collector.fail(str(exc))
            continue
        collector.add(
            Sample(
                image_path=_image(root, fields[206]),
                points=points,
                box=box,
                source=f"{path.name}:{number}",
                attributes=attributes,
            )
        )


def _wflw_image_root(path: Path) -> Path:
    # The official layout keeps the lists in WFLW_annotations/list_98pt_.../ beside WFLW_images/.
    for parent in (path.parent, *path.parents[:3]):
        if (parent / "WFLW_images").is_dir():
            return parent / "WFLW_images"
    return path.parent


def sniff_list_format(path: Path) -> str | None:
    """'cuhk', 'mtfl' or 'wflw' from the first line's shape, or None."""
    try:
        first = next(_lines(path), None)
    except DataError:
        return None
    if first is None:
        return None
    fields = first[2]
    if len(fields) == 207:
        return "wflw"
    if len(fields) != 15:
        return None

    def is_int(text: str) -> bool:
        return text.lstrip("-").isdigit()

    if all(is_int(f) for f in fields[11:15]) and not all(is_int(f) for f in fields[1:5]):
        return "mtfl"
    if all(is_int(f) for f in fields[1:5]):
        return "cuhk"
    return None
