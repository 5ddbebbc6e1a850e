"""Affine geometry between an original image, a square face crop and the network's output spaces.

All matrices are 3x3 and map *original-image* coordinates to *crop* coordinates in the pixel-centre
convention (pixel i has its centre at i), which is also what cv2.warpAffine uses, so one matrix
moves both pixels and points and the inverse mapping is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points (..., 2) through a 3x3 affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 3x3 affine matrix, in closed form (np.linalg.inv costs more than the rest of
    a face's geometry); other 3x3 matrices go through np.linalg.inv."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (3, 3) or matrix[2, 0] != 0 or matrix[2, 1] != 0 or matrix[2, 2] != 1:
        return np.linalg.inv(matrix)
    (a, b, c), (d, e, f) = matrix[:2].tolist()
    det = a * e - b * d
    if not abs(det) > 1e-300 or not np.isfinite(det):  # singular, or a product that under/overflowed
        try:
            inverse = np.linalg.inv(matrix)  # LU with pivoting scales where the closed form cannot
        except np.linalg.LinAlgError:
            inverse = None
        if inverse is None or not np.isfinite(inverse).all():
            raise np.linalg.LinAlgError(f"affine matrix {matrix[:2].tolist()} is not invertible")
        return inverse
    return np.array(
        [[e / det, -b / det, (b * f - c * e) / det], [-d / det, a / det, (c * d - a * f) / det], [0.0, 0.0, 1.0]]
    )


def square_from_box(box, margin: float = 0.0) -> tuple[tuple[float, float], float]:
    """Centre (x, y) and side of the square around box [x0, y0, x1, y1], grown by `margin` of its size
    on each side (margin 0.1: side = 1.2 * max(w, h)). Python floats: this runs once per face, where
    numpy's small-array calls cost more than the arithmetic."""
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64).reshape(4).tolist()
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty box {[x0, y0, x1, y1]}")
    return ((x0 + x1) / 2, (y0 + y1) / 2), max(x1 - x0, y1 - y0) * (1 + 2 * margin)


def crop_matrix(centre, side: float, size: int) -> np.ndarray:
    """Original -> crop for the square of `side` pixels centred at `centre` (x, y), resampled to size x size.

    The square's continuous extent [c - side/2, c + side/2] lands on the crop's [-0.5, size - 0.5].
    """
    s = size / side
    cx, cy = map(float, centre)
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

    When the crop shrinks the face a lot, the image is first area-downsampled (`warp_source`) so that
    bilinear sampling does not alias.
    """
    image, matrix = warp_source(image, matrix, size)
    return cv2.warpAffine(
        image, matrix[:2], (size, size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def warp_source(image: np.ndarray, matrix: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The image that `warp` samples bilinearly, and the matrix from it to the crop: the image itself,
    or where the crop shrinks by more than 2x, the region the crop covers area-downsampled by a whole
    factor (the native runtime samples the same source). The geometry in Python floats: once per
    face, numpy's small-array calls cost more than the resize."""
    (a, b, tx), (c, d, ty) = matrix[0].tolist(), matrix[1].tolist()
    det = a * d - b * c
    scale = abs(det) ** 0.5
    if scale >= 0.5:
        return image, matrix
    factor = math.floor(1 / scale)
    h, w = image.shape[:2]
    # Only the part of the image the crop covers is downsampled (plus a border for the bilinear
    # taps), its origin on the factor grid, so a small face in a big photo costs little.
    xs, ys = [], []
    for u, v in ((0, 0), (size - 1, 0), (0, size - 1), (size - 1, size - 1)):  # crop corners -> image
        xs.append((d * (u - tx) - b * (v - ty)) / det)
        ys.append((a * (v - ty) - c * (u - tx)) / det)
    lo = (math.floor(min(xs)) - 2 * factor, math.floor(min(ys)) - 2 * factor)
    hi = (math.ceil(max(xs)) + 2 * factor + 1, math.ceil(max(ys)) + 2 * factor + 1)
    if hi[0] <= 0 or hi[1] <= 0 or lo[0] >= w or lo[1] >= h:  # the crop lies wholly outside the image
        return np.zeros((1, 1, *image.shape[2:]), image.dtype), matrix  # black: every sample is 0
    x0, y0 = (max(0, v) // factor * factor for v in lo)
    # ends rounded up to the factor grid too (or the image's end), so the area resize is by exactly `factor`
    x1 = min(w, -(-max(hi[0], x0 + factor) // factor) * factor)
    y1 = min(h, -(-max(hi[1], y0 + factor) // factor) * factor)
    rw, rh = x1 - x0, y1 - y0
    small = cv2.resize(image[y0:y1, x0:x1], (max(1, rw // factor), max(1, rh // factor)), interpolation=cv2.INTER_AREA)
    # pixel-centre mapping of an area resize of the region: x_small = (x - x0 + 0.5) * (w_small / rw) - 0.5,
    # so small -> image is x = (x_small + 0.5) * (rw / w_small) - 0.5 + x0, composed before image -> crop
    kx, ky = rw / small.shape[1], rh / small.shape[0]
    ox, oy = (0.5 * kx - 0.5 + x0), (0.5 * ky - 0.5 + y0)
    to_crop = np.array(
        [[a * kx, b * ky, a * ox + b * oy + tx], [c * kx, d * ky, c * ox + d * oy + ty], [0.0, 0.0, 1.0]]
    )
    return small, to_crop


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

    def mirror(self, values: np.ndarray, permutation) -> np.ndarray:
        """A network's raw output for a crop mirrored left-right, mapped to the unmirrored crop: the points
        (or their maps) reordered by the scheme's flip permutation and reflected about the crop's centre."""
        values = np.asarray(values)
        if self.kind == "heatmap":  # (B, N, H, W): cell x <-> W - 1 - x, as crop pixel x <-> size - 1 - x
            return values[:, list(permutation), :, ::-1]
        points = values[:, list(permutation)]  # a copy, (B, N, 2)
        if self.kind == "normalized":  # the crop's outer pixel edges at -1 and 1
            points[..., 0] *= -1
        elif self.kind == "pixels":
            points[..., 0] = (self.size - 1) - points[..., 0]
        else:
            raise ValueError(f"unknown output space {self.kind!r}")
        return points

    def to_crop(self, values: np.ndarray) -> np.ndarray:
        """values * scale + offset in float64 (in place on one copy: this runs once per face)."""
        points = np.array(values, dtype=np.float64)
        if self.kind == "pixels":
            return points
        if self.kind == "normalized":  # (values + 1) * size / 2 - 0.5
            scale, offset = self.size / 2.0, self.size / 2.0 - 0.5
        elif self.kind == "heatmap":  # (values + 0.5) * stride - 0.5
            scale, offset = float(self.stride), self.stride / 2.0 - 0.5
        else:
            raise ValueError(f"unknown output space {self.kind!r}")
        points *= scale
        points += offset
        return points
