"""Facial part masks from the 68 iBUG points (Bulat & Tzimiropoulos, ICCV 2017, appendix A3): the
points joined into polygons that enclose each part, seven classes in all.

Polygons are filled with sub-pixel vertices (OpenCV's fixed-point `shift`) in the pixel-centre
convention of the points, so a mask drawn at heatmap resolution and one drawn at crop resolution
describe the same face. Later parts are painted over earlier ones: the mouth's inside over the lips,
everything over the skin.
"""

from __future__ import annotations

import cv2
import numpy as np

PART_CLASSES = ("background", "skin", "lower_lip", "upper_lip", "inner_mouth", "eyes", "nose")
_SUBPIXEL_BITS = 4  # vertices at 1/16 pixel

# class -> polygons of iBUG 68 point indices (0-based), in painting order
_POLYGONS = (
    ("skin", [list(range(0, 17)) + list(range(26, 16, -1))]),  # jaw, closed along the brows
    ("nose", [[27, 31, 32, 33, 34, 35]]),  # bridge top down to the nostrils
    ("eyes", [list(range(36, 42)), list(range(42, 48))]),
    ("upper_lip", [[48, 49, 50, 51, 52, 53, 54, 64, 63, 62, 61, 60]]),  # outer upper lip back along the inner
    ("lower_lip", [[54, 55, 56, 57, 58, 59, 48, 60, 67, 66, 65, 64]]),
    ("inner_mouth", [list(range(60, 68))]),
)


def part_labels(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) uint8 class indices into PART_CLASSES for one face's 68 points (x, y)."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"part masks are built from the 68 iBUG points, got points of shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("part masks need all 68 points; some are not finite")
    labels = np.zeros((height, width), dtype=np.uint8)
    fixed = np.round(points * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    for name, polygons in _POLYGONS:
        cv2.fillPoly(labels, [fixed[p] for p in polygons], PART_CLASSES.index(name), cv2.LINE_8, _SUBPIXEL_BITS)
    return labels
