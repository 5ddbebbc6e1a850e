"""Affine geometry between an original image, a square face crop and the network's output spaces.

All matrices are 3x3 and map *original-image* coordinates to *crop* coordinates in the pixel-centre
convention (pixel i has its centre at i), which is also what cv2.warpAffine uses, so one matrix
moves both pixels and points and the inverse mapping is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points (..., 2) through a 3x3 affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.inv(matrix)


def square_from_box(box, margin: float = 0.0) -> tuple[np.ndarray, float]:
    """Centre and side of the square around box [x0, y0, x1, y1], grown by `margin` of its size on
    each side (margin 0.1: side = 1.2 * max(w, h))."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty box {[x0, y0, x1, y1]}")
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), max(x1 - x0, y1 - y0) * (1 + 2 * margin)


def crop_matrix(centre, side: float, size: int) -> np.ndarray:
    """Original -> crop for the square of `side` pixels centred at `centre`, resampled to size x size.

    The square's continuous extent [c - side/2, c + side/2] lands on the crop's [-0.5, size - 0.5].
    """
    s = size / side
    cx, cy = centre
    return np.array([[s, 0, size / 2 - 0.5 - cx * s], [0, s, size / 2 - 0.5 - cy * s], [0, 0, 1]])


def about_centre(size: int, angle_deg: float = 0.0, scale: float = 1.0, shift=(0.0, 0.0), flip: bool = False):
    """An affine of crop coordinates: rotate by angle, scale, optionally mirror, about the crop's centre,
    then shift by `shift` pixels."""
    c = (size - 1) / 2
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) * scale
    if flip:
        rot = rot @ np.diag([-1.0, 1.0])
    m = np.eye(3)
    m[:2, :2] = rot
    m[:2, 2] = np.array([c, c]) + np.asarray(shift, dtype=np.float64) - rot @ np.array([c, c])
    return m


def warp(image: np.ndarray, matrix: np.ndarray, size: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resample `image` into a size x size crop; outside the image is black (as in our crop data).

    When the crop shrinks the face a lot, the image is first area-downsampled so that bilinear
    sampling does not alias.
    """
    scale = np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    if scale < 0.5:
        factor = int(np.floor(1 / scale))
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
        # pixel-centre mapping of an integer-factor area resize: x_small = (x + 0.5) * (w_small / w) - 0.5
        sx, sy = small.shape[1] / w, small.shape[0] / h
        to_small = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
        image, matrix = small, matrix @ invert(to_small)
    return cv2.warpAffine(
        image, matrix[:2], (size, size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


@dataclass(frozen=True)
class OutputSpace:
    """How the network's coordinates relate to the crop.

    kind "pixels": crop pixels; "normalized": [-1, 1] with the crop's outer pixel edges at -1 and 1
    (regression targets); "heatmap": cells of a map with `stride` crop pixels per cell.
    """

    kind: str
    size: int
    stride: int = 1

    def from_crop(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        if self.kind == "pixels":
            return points.copy()
        if self.kind == "normalized":
            return (points + 0.5) * (2.0 / self.size) - 1.0
        if self.kind == "heatmap":
            return (points + 0.5) / self.stride - 0.5
        raise ValueError(f"unknown output space {self.kind!r}")

    def to_crop(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if self.kind == "pixels":
            return values.copy()
        if self.kind == "normalized":
            return (values + 1.0) * (self.size / 2.0) - 0.5
        if self.kind == "heatmap":
            return (values + 0.5) * self.stride - 0.5
        raise ValueError(f"unknown output space {self.kind!r}")
