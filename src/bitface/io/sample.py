"""The one record every reader yields, and the error/skip bookkeeping shared by all readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Bad input data. The message starts with the file (and line, for list formats) it concerns."""


@dataclass
class Sample:
    """One annotated face.

    Coordinates are 0-based with the origin at the centre of the top-left pixel (column i has its
    centre at x = i). `box` is [x0, y0, x1, y1] in the same coordinates; `pose` is (yaw, pitch, roll)
    in degrees; `source` says where the annotation came from ("file:line" for list formats).
    """

    image_path: Path
    points: np.ndarray  # (N, 2) float64
    box: np.ndarray | None = None  # (4,) float64
    visible: np.ndarray | None = None  # (N,) bool
    pose: np.ndarray | None = None  # (3,) float64, degrees
    source: str = ""
    attributes: dict = field(default_factory=dict)

    @property
    def num_points(self) -> int:
        return len(self.points)


@dataclass
class ReadResult:
    """What a reader produced: the good samples plus an account of what it skipped and why."""

    format: str
    source: Path
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.errors)


class Collector:
    """Gathers samples; in strict mode the first problem raises, in lenient mode it is recorded."""

    def __init__(self, result: ReadResult, strict: bool):
        self.result = result
        self.strict = strict

    def add(self, sample: Sample) -> None:
        self.result.samples.append(sample)

    def fail(self, message: str) -> None:
        if self.strict:
            raise DataError(message)
        self.result.errors.append(message)


def make_points(values, num_points: int | None, where: str, *, offset: float = 0.0) -> np.ndarray:
    """Parse numbers into an (N, 2) float array, checking count and finiteness.

    `offset` is subtracted (1.0 for 1-based formats) so every reader returns 0-based points.
    """
    try:
        points = np.asarray(values, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: points are not numbers pairs ({exc})") from None
    if num_points is not None and len(points) != num_points:
        raise DataError(f"{where}: expected {num_points} points, found {len(points)}")
    if len(points) == 0:
        raise DataError(f"{where}: no points")
    if not np.all(np.isfinite(points)):
        bad = int(np.flatnonzero(~np.isfinite(points).all(1))[0])
        raise DataError(f"{where}: point {bad} is not finite ({points[bad].tolist()})")
    return points - offset


def parse_floats(fields: list[str], where: str) -> list[float]:
    try:
        return [float(f) for f in fields]
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from None
