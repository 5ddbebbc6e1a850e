"""Temporal smoothing of landmarks in video: the One Euro filter (Casiez, Roussel and Vogel, CHI 2012)
on each tracked face.

    smoother = LandmarkSmoother(fps=30)
    for frame in frames:
        faces = smoother(lm(frame))      # the same faces, with smoothed boxes and points

A One Euro filter is a low-pass filter whose cutoff rises with speed: a still face is smoothed
strongly (no jitter), a moving one lightly (little lag). Speeds are measured in face-box sizes per
second, so one setting works for small and large faces. Faces are matched to the previous frame's
tracks by box overlap; a face that matches no track starts a new one, unsmoothed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .detect import box_iou


def _alpha(cutoff, dt: float):
    """The smoothing factor of an exponential filter with this cutoff (Hz; a float or an array)."""
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over an array of any shape (every element filtered independently).

    min_cutoff (Hz): the cutoff at rest (lower: less jitter, more lag when slow);
    beta: how fast the cutoff rises with speed (higher: less lag when fast);
    d_cutoff (Hz): the cutoff of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"need min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.value: np.ndarray | None = None
        self.speed: np.ndarray | None = None

    def __call__(self, x: np.ndarray, dt: float, scale: float = 1.0) -> np.ndarray:
        """The filtered value of sample x, taken dt seconds after the previous one; speeds are divided
        by `scale` before they raise the cutoff (e.g. a face's size, to filter in its units)."""
        x = np.asarray(x, dtype=np.float64)
        if dt <= 0:
            raise ValueError(f"the time step must be positive, got {dt}")
        if self.value is None or self.value.shape != x.shape:
            self.value, self.speed = x.copy(), np.zeros_like(x)
            return x.copy()
        a_d = _alpha(self.d_cutoff, dt)
        self.speed = a_d * (x - self.value) / dt + (1 - a_d) * self.speed
        cutoff = self.min_cutoff + self.beta * np.abs(self.speed) / scale
        a = _alpha(cutoff, dt)
        self.value = a * x + (1 - a) * self.value
        return self.value.copy()


@dataclasses.dataclass
class _Track:
    box: np.ndarray
    filter: OneEuroFilter
    missed: int = 0


class LandmarkSmoother:
    """Smooths the faces of consecutive frames (a list of `bitface.Face` per call).

    The defaults were chosen with `benchmarks/video_smoothing.py` (jitter on a still face, lag on a
    moving one); beta's speed unit is face-box sizes per second.
    """

    def __init__(
        self,
        fps: float = 30.0,
        min_cutoff: float = 0.3,
        beta: float = 10.0,
        d_cutoff: float = 1.0,
        match_iou: float = 0.3,
        keep_missed: int = 2,
    ):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.dt = 1.0 / fps
        self.settings = {"min_cutoff": min_cutoff, "beta": beta, "d_cutoff": d_cutoff}
        self.match_iou = match_iou
        self.keep_missed = keep_missed
        self.tracks: list[_Track] = []

    def reset(self) -> None:
        self.tracks = []

    def __call__(self, faces: list) -> list:
        unmatched = list(range(len(self.tracks)))
        smoothed, new_tracks = [], []
        # Greedy matching, best overlap first.
        pairs = sorted(
            (
                (box_iou(t.box, np.asarray(f.box)), ti, fi)
                for ti, t in enumerate(self.tracks)
                for fi, f in enumerate(faces)
            ),
            reverse=True,
        )
        match: dict[int, int] = {}
        for iou, ti, fi in pairs:
            if iou < self.match_iou:
                break
            if ti in unmatched and fi not in match:
                match[fi] = ti
                unmatched.remove(ti)
        for fi, face in enumerate(faces):
            box = np.asarray(face.box, dtype=np.float64)
            track = self.tracks[match[fi]] if fi in match else _Track(box, OneEuroFilter(**self.settings))
            size = max(box[2] - box[0], box[3] - box[1], 1e-6)
            state = np.concatenate([box, np.asarray(face.points, dtype=np.float64).ravel()])
            out = track.filter(state, self.dt, scale=size)
            track.box, track.missed = out[:4], 0
            new_tracks.append(track)
            smoothed.append(dataclasses.replace(face, box=out[:4], points=out[4:].reshape(-1, 2)))
        for ti in unmatched:
            track = self.tracks[ti]
            track.missed += 1
            if track.missed <= self.keep_missed:
                new_tracks.append(track)
        self.tracks = new_tracks
        return smoothed
