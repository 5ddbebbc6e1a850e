"""Gaussian heatmap targets with sub-pixel centres, and decoding back to coordinates.

Coordinates here are heatmap cells in the pixel-centre convention (cell j has its centre at j);
`geometry.OutputSpace("heatmap", ...)` converts to and from crop pixels.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np


def gaussian_heatmaps(points: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    """(N, height, width) float32 maps, exp(-d^2 / 2 sigma^2) around each (sub-pixel) point.

    A point with a non-finite coordinate gets an all-zero map (nothing to learn there).
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    gx = np.exp(-((xs[None, :] - points[:, :1]) ** 2) / (2 * sigma**2))  # (N, W)
    gy = np.exp(-((ys[None, :] - points[:, 1:]) ** 2) / (2 * sigma**2))  # (N, H)
    maps = (gy[:, :, None] * gx[:, None, :]).astype(np.float32)
    maps[~np.isfinite(points).all(1)] = 0
    return maps


@dataclass
class Decoded:
    """Decoded points (..., N, 2) in heatmap cells, a confidence per point, and whether it is usable.

    An invalid point (all-zero, flat or non-finite map) sits at the map's centre with confidence 0
    and valid False: never a silent (0, 0).
    """

    points: np.ndarray
    confidence: np.ndarray
    valid: np.ndarray


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function in float64, without overflow and without the cancellation of
    0.5 * (1 + tanh(x / 2)) for very negative x (the C decoder computes it the same way)."""
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@functools.lru_cache(maxsize=16)
def _taps(sigma: float) -> np.ndarray:
    radius = math.ceil(2 * sigma)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-(k**2) / (2 * sigma**2))
    taps = (taps / taps.sum()).astype(np.float32)
    taps.flags.writeable = False
    return taps


def gaussian_taps(sigma: float) -> np.ndarray:
    """The float32 taps of a normalized 1-D Gaussian of `sigma` cells, radius ceil(2 sigma) (the 5% of
    its mass further out is left out); none for sigma 0."""
    if not 0 <= sigma <= 100:
        raise ValueError(f"smoothing sigma must be in [0, 100] cells, got {sigma}")
    return _taps(float(sigma)) if sigma > 0 else np.zeros(0, np.float32)


def smooth_maps(maps: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """(..., H, W) maps convolved with `taps` along W, then along H, edges replicated, in float32: each
    output the sum over the taps in order of tap * value (the native runtime computes the same values
    bit for bit)."""
    x = np.asarray(maps, dtype=np.float32)
    r = len(taps) // 2
    for axis in (x.ndim - 1, x.ndim - 2):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        padded = np.pad(x, pad, mode="edge")
        acc = np.zeros_like(x)
        for k, tap in enumerate(taps):
            acc += tap * np.take(padded, np.arange(k, k + x.shape[axis]), axis=axis)
        x = acc
    return x


def decode_argmax(
    heatmaps: np.ndarray, refine: bool = True, min_peak: float = 1e-6, activation=None, smooth: float = 0.0
) -> Decoded:
    """Argmax of each map, refined to sub-pixel precision by fitting a parabola to the log of the
    peak and its neighbours along each axis (exact for a Gaussian peak away from the border).

    activation: an increasing function the maps pass through first (e.g. `sigmoid` of logits); it
    is applied only to the few values the decoding reads, not to every pixel.
    smooth: the sigma (cells) of a Gaussian that smooths the raw maps first (`smooth_maps`), DARK's
    distribution modulation (Zhang et al., CVPR 2020): a noisy map's argmax then lands on the mode of
    its mass, not on a spike. Whether a map is usable is judged on the smoothed map; the confidence is
    still the raw map's activated peak (smoothing lowers peaks). 0: none."""
    raw = heatmaps
    if smooth:
        heatmaps = smooth_maps(heatmaps, gaussian_taps(smooth))

    def act(v):  # the few values read, in float64
        v = np.asarray(v, np.float64)
        return v if activation is None else activation(v)

    maps = np.asarray(heatmaps)
    if not np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float64)
    if maps.ndim < 3:
        raise ValueError(f"heatmaps must be (..., N, H, W), got shape {maps.shape}")
    *lead, h, w = maps.shape
    flat = maps.reshape(-1, h * w)
    finite_values = np.isfinite(flat)
    finite = finite_values.all(1)
    everywhere = bool(finite.all())  # the usual case: no masking passes over the maps
    safe = flat if everywhere else np.where(finite_values, flat, -np.inf)
    index = safe.argmax(1)
    peak = act(safe[np.arange(len(flat)), index])
    valid = finite & (peak > min_peak) & (peak > act(np.where(finite, flat.min(1), np.inf)))
    y, x = np.divmod(index, w)
    coords = np.stack([x, y], 1).astype(np.float64)
    if refine:
        grid = (flat if everywhere else np.where(finite_values, flat, 0)).reshape(-1, h, w)
        rows = np.arange(len(flat))
        for axis, (pos, limit) in enumerate(((x, w), (y, h))):
            inner = valid & (pos > 0) & (pos < limit - 1)
            lo_pos = np.clip(pos - 1, 0, limit - 1)
            hi_pos = np.clip(pos + 1, 0, limit - 1)
            if axis == 0:
                lo, mid, hi = grid[rows, y, lo_pos], grid[rows, y, x], grid[rows, y, hi_pos]
            else:
                lo, mid, hi = grid[rows, lo_pos, x], grid[rows, y, x], grid[rows, hi_pos, x]
            eps = 1e-10
            llo, lmid, lhi = (np.log(np.maximum(act(v), eps)) for v in (lo, mid, hi))
            curvature = llo - 2 * lmid + lhi
            with np.errstate(divide="ignore", invalid="ignore"):
                offset = np.where(curvature < 0, 0.5 * (llo - lhi) / curvature, 0.0)
            coords[:, axis] += np.where(inner, np.clip(offset, -0.5, 0.5), 0.0)
    if smooth:  # usable maps are finite everywhere, raw ones too
        peak = act(np.asarray(raw, np.float32).reshape(-1, h * w).max(1))
    return _finish(coords, np.where(valid, peak, 0.0), valid, lead, h, w)


def decode_soft_argmax(heatmaps: np.ndarray, beta: float = 1.0) -> Decoded:
    """Expected position under softmax(beta * map), the maps read as logits (numpy version of the
    differentiable decoder; on probability-like maps it is biased towards the map centre)."""
    maps = np.asarray(heatmaps, dtype=np.float64)
    if maps.ndim < 3:
        raise ValueError(f"heatmaps must be (..., N, H, W), got shape {maps.shape}")
    *lead, h, w = maps.shape
    flat = maps.reshape(-1, h * w)
    finite = np.isfinite(flat).all(1)
    logits = beta * np.where(finite[:, None], flat, 0.0)
    logits -= logits.max(1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(1, keepdims=True)
    ys, xs = np.divmod(np.arange(h * w), w)
    coords = np.stack([weights @ xs, weights @ ys], 1)
    spread = flat.max(1, initial=-np.inf, where=np.isfinite(flat)) - flat.min(
        1, initial=np.inf, where=np.isfinite(flat)
    )
    valid = finite & (spread > 1e-6)
    return _finish(coords, np.where(valid, weights.max(1), 0.0), valid, lead, h, w)


def _finish(coords, confidence, valid, lead, h, w) -> Decoded:
    coords[~valid] = [(w - 1) / 2, (h - 1) / 2]
    return Decoded(
        points=coords.reshape(*lead, 2),
        confidence=confidence.reshape(lead),
        valid=valid.reshape(lead),
    )
