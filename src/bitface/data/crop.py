"""Face crops: where the square comes from (annotated box or the points), and the pixels in it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.sample import Sample
from ..schemes import tight_boxes
from . import geometry


@dataclass(frozen=True)
class CropSpec:
    """A square crop of `size` pixels around the face.

    source "box": the sample's annotated face box (falls back to the points' box when it has none);
    "points": the tight box of the landmarks. `margin` grows the square by that fraction of its
    size on each side. `shift_y` moves the centre down by that fraction of the box height (face
    detectors' boxes sit high on the face), `shift_x` right by that fraction of its width.
    """

    size: int
    source: str = "box"
    margin: float = 0.0
    shift_y: float = 0.0
    shift_x: float = 0.0

    def __post_init__(self):
        if self.size < 4:
            raise ValueError(f"crop size must be at least 4 pixels, got {self.size}")
        if self.source not in ("box", "points"):
            raise ValueError(f"crop source must be 'box' or 'points', not {self.source!r}")
        if self.margin <= -0.5:
            raise ValueError(f"crop margin must be greater than -0.5, got {self.margin}")

    def box_of(self, sample: Sample) -> np.ndarray:
        if self.source == "box" and sample.box is not None:
            return np.asarray(sample.box, dtype=np.float64)
        return tight_boxes(sample.points)

    def square(self, box) -> tuple[tuple[float, float], float]:
        """Centre (x, y) and side (original pixels) of the crop square for a face box [x0, y0, x1, y1]."""
        x0, y0, x1, y1 = np.asarray(box, dtype=np.float64).reshape(4).tolist()
        (cx, cy), side = geometry.square_from_box((x0, y0, x1, y1), self.margin)
        return (cx + self.shift_x * (x1 - x0), cy + self.shift_y * (y1 - y0)), side

    def matrix(self, box) -> np.ndarray:
        """Original image -> crop, for a face box [x0, y0, x1, y1]."""
        return geometry.crop_matrix(*self.square(box), self.size)

    def matrix_for(self, sample: Sample) -> np.ndarray:
        return self.matrix(self.box_of(sample))
