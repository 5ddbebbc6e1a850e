"""Landmark accuracy metrics: NME under a named normalizer, per-point error, CED, AUC, failure rate,
yaw bins and PCK (PCKh for human pose). Errors are fractions of the normalizing distance inside the
code; reports show percent. Ground-truth points may be NaN where nobody annotated them (MPII joints):
they are left out of every mean, never counted as hits or misses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..schemes import Scheme, normalizing_distances

# Failure-rate / AUC thresholds per normalizer (GUIDE section 3): 0.08 and 0.10 for eye distances,
# 0.06 for box-normalized errors (as in the DHM paper).
THRESHOLDS = {
    "interocular": (0.08, 0.10),
    "interpupil": (0.08, 0.10),
    "box_width": (0.06,),
    "box_sqrt_wh": (0.06,),
    "box_diag": (0.06,),
    "head": (0.5,),  # PCKh@0.5 (the threshold is on each joint's error, see pck)
}
YAW_BINS = ((0, 30), (30, 60), (60, 90))


def point_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean error of every point, (B, N), in pixels; NaN where the ground truth is NaN."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"predictions {pred.shape} and ground truth {gt.shape} must both be (B, N, 2)")
    if not np.isfinite(pred).all():
        bad = int(np.flatnonzero(~np.isfinite(pred).all((1, 2)))[0])
        raise ValueError(f"prediction for face {bad} is not finite")
    return np.linalg.norm(pred - gt, axis=-1)


def nme_per_face(
    pred: np.ndarray, gt: np.ndarray, scheme: Scheme, normalizer: str, boxes: np.ndarray | None = None
) -> np.ndarray:
    """Mean point error of each face divided by its normalizing distance (a fraction, not percent)."""
    return face_means(point_errors(pred, gt)) / normalizing_distances(scheme, normalizer, gt, boxes)


def face_means(errors: np.ndarray) -> np.ndarray:
    """Mean over each face's annotated points of errors (B, N) that are NaN where not annotated."""
    annotated = np.isfinite(errors)
    if not annotated.any(1).all():
        bad = int(np.flatnonzero(~annotated.any(1))[0])
        raise ValueError(f"face {bad} has no annotated point to score")
    return np.where(annotated, errors, 0).sum(1) / annotated.sum(1)


def pck(normalized_errors: np.ndarray, threshold: float) -> tuple[float, np.ndarray]:
    """Percentage of Correct Keypoints: the fraction of annotated points whose error, as a fraction
    of the normalizing distance, is at most `threshold` (PCKh@0.5: head-normalized, 0.5), over all
    points and per point (NaN for a point never annotated)."""
    errors = np.asarray(normalized_errors, dtype=np.float64)
    annotated = np.isfinite(errors)
    hits = annotated & (np.where(annotated, errors, np.inf) <= threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_point = hits.sum(0) / annotated.sum(0)
    return float(hits.sum() / annotated.sum()), per_point


def ced(errors: np.ndarray, max_error: float, steps: int = 1001) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: thresholds in [0, max_error] and the fraction of faces at or below each."""
    errors = np.sort(np.asarray(errors, dtype=np.float64))
    thresholds = np.linspace(0, max_error, steps)
    return thresholds, np.searchsorted(errors, thresholds, side="right") / len(errors)


def auc(errors: np.ndarray, threshold: float) -> float:
    """Area under the CED curve from 0 to `threshold`, divided by `threshold` (1 = every error is 0).

    Computed exactly: the integral of the empirical CDF over [0, t] is mean(max(0, t - e)).
    """
    errors = np.asarray(errors, dtype=np.float64)
    return float(np.mean(np.clip(threshold - errors, 0, None)) / threshold)


def failure_rate(errors: np.ndarray, threshold: float) -> float:
    """Fraction of faces whose error is above `threshold`."""
    return float(np.mean(np.asarray(errors) > threshold))


def yaw_bins(errors: np.ndarray, yaw_degrees: np.ndarray) -> list[dict]:
    """Mean error per |yaw| bin [0,30), [30,60), [60,90]; faces with unknown (NaN) yaw are left out."""
    errors, yaw = np.asarray(errors), np.abs(np.asarray(yaw_degrees, dtype=np.float64))
    rows = []
    for lo, hi in YAW_BINS:
        inside = (yaw >= lo) & ((yaw < hi) if hi < 90 else (yaw <= hi))
        rows.append(
            {"yaw": [lo, hi], "faces": int(inside.sum()), "nme": float(errors[inside].mean()) if inside.any() else None}
        )
    return rows


@dataclass(frozen=True)
class PairedDifference:
    """The mean per-face difference of two models' errors on the same faces (a - b) and its bootstrap
    confidence interval."""

    mean: float
    low: float
    high: float
    confidence: float
    faces: int

    def verdict(self, expected_sign: int) -> str:
        """ "agrees" where the interval lies on the side of 0 that `expected_sign` (-1 or +1) names,
        "opposite" where it lies on the other side, else "no clear difference"."""
        if expected_sign not in (-1, 1):
            raise ValueError(f"expected_sign must be -1 or +1, got {expected_sign!r}")
        if self.low > 0 or self.high < 0:
            return "agrees" if (self.low > 0) == (expected_sign > 0) else "opposite"
        return "no clear difference"


def paired_difference(
    errors_a: np.ndarray, errors_b: np.ndarray, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> PairedDifference:
    """Mean of errors_a - errors_b over the same faces with a percentile bootstrap interval (faces
    resampled with replacement, the pairs kept together: SciPy's `stats.bootstrap`). It measures how
    far the test set's sampling of faces blurs a difference between two trained models, not how much a
    retrained model would move."""
    a, b = np.asarray(errors_a, dtype=np.float64), np.asarray(errors_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"per-face errors must be two 1-D arrays over the same faces, got {a.shape} and {b.shape}")
    if len(a) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-face errors must hold at least two faces and be finite")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    difference = a - b
    if np.all(difference == difference[0]):  # every resample has the same mean: no interval to estimate
        return PairedDifference(float(difference[0]), float(difference[0]), float(difference[0]), confidence, len(a))
    interval = stats.bootstrap(
        (difference,),
        np.mean,
        confidence_level=confidence,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return PairedDifference(float(difference.mean()), float(interval.low), float(interval.high), confidence, len(a))
