"""Udacity facial-keypoints CSV (YouTube Faces frames): header `,0,1,...,135`, then
`name,x0,y0,...,x67,y67`, taken as 0-based pixel centres."""

from __future__ import annotations

import csv
from pathlib import Path

from .sample import Collector, DataError, Sample, make_points, parse_floats


def read_udacity_csv(path: Path, collector: Collector, image_root: Path | None = None) -> None:
    root = image_root or default_image_root(path)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if header is None:
            raise DataError(f"{path}: empty CSV")
        width = len(header)
        if width < 3 or (width - 1) % 2:
            raise DataError(f"{path}:1: header has {width} columns; expected a name and x, y pairs")
        for number, row in enumerate(rows, start=2):
            where = f"{path}:{number}"
            if not row:
                continue
            try:
                if len(row) != width:
                    raise DataError(f"{where}: {len(row)} columns, the header has {width}")
                points = make_points(parse_floats(row[1:], where), (width - 1) // 2, where)
            except DataError as exc:
                collector.fail(str(exc))
                continue
            collector.add(Sample(image_path=root / row[0], points=points, source=f"{path.name}:{number}"))


def default_image_root(path: Path) -> Path:
    # Udacity's layout: data/training_frames_keypoints.csv beside data/training/.
    for split in ("training", "test"):
        if path.stem.startswith(split) and (path.parent / split).is_dir():
            return path.parent / split
    return path.parent
