"""Jitter and lag of video landmarks, raw and with the One Euro smoothing `bitface predict` applies.

    python benchmarks/video_smoothing.py    # writes benchmarks/results/video_smoothing.{json,md}

Synthetic videos from real faces (the bundled sample image and the first CUHK test images, when
../shared/data is there), 30 fps, each frame with fresh camera-like noise (Gaussian, sigma 3 gray
levels), through the default model and detector (`Landmarker()`):

- still: the face does not move. Jitter = RMS frame-to-frame motion of the points, in % of the
  face-box width. Raw landmarks jitter because the detector box and the pixels change slightly.
- moving: the image slides right at 3 px per frame. Lag = how far the points trail the true path
  (the still face's mean points plus the known shift), in frames, after a 15-frame run-in. The image
  slides across a wider gray frame, so the face never leaves it.

A grid of (min_cutoff, beta) is replayed over the same raw landmarks; the default is the setting
with the least jitter whose lag stays within 1 frame. LandmarkSmoother's defaults must be it
(tests/test_smooth.py reads this file).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bitface import bundled  # noqa: E402
from bitface.api import Landmarker  # noqa: E402
from bitface.evaluate.results import markdown_table, provenance, write_results  # noqa: E402
from bitface.io import read_annotations  # noqa: E402
from bitface.io.images import load_image  # noqa: E402
from bitface.smooth import LandmarkSmoother  # noqa: E402

CUHK_TEST = ROOT.parent / "shared" / "data" / "cuhk_lfw_net_5pt" / "testImageList.txt"
FPS = 30.0
FRAMES = 75
RUN_IN = 15
NOISE = 3.0
SPEED = 3.0  # px per frame
MAX_LAG = 1.0  # frames
MIN_CUTOFFS = (0.3, 0.5, 1.0, 2.0)
BETAS = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0)


def faces_source() -> list[tuple[str, np.ndarray]]:
    images = [("astronaut (bundled sample)", load_image(bundled.sample_image(), "rgb"))]
    if CUHK_TEST.is_file():
        for sample in read_annotations(CUHK_TEST, check="exists").samples[:9]:
            images.append((Path(sample.image_path).name, load_image(sample.image_path, "rgb")))
    return images


def frames(image: np.ndarray, speed: float, rng: np.random.Generator):
    """The image sliding right across a gray frame wide enough to keep it whole (sub-pixel shifts)."""
    h, w = image.shape[:2]
    span = int(np.ceil(SPEED * FRAMES))
    for t in range(FRAMES):
        moved = cv2.warpAffine(
            image, np.float32([[1, 0, speed * t], [0, 1, 0]]), (w + span, h), borderMode=cv2.BORDER_CONSTANT,
            borderValue=(128, 128, 128),
        )  # fmt: skip
        noisy = moved.astype(np.float32) + rng.normal(0, NOISE, moved.shape)
        yield np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def raw_track(lm: Landmarker, image: np.ndarray, speed: float, seed: int) -> list | None:
    """Per frame, the face nearest the first frame's face (None if any frame lost it)."""
    track = []
    for frame in frames(image, speed, np.random.default_rng(seed)):
        faces = lm(frame)
        if not faces:
            return None
        if track:
            previous = track[-1].box
            faces.sort(key=lambda f: np.abs(np.asarray(f.box) - previous).sum())
        track.append(faces[0])
    return track


def smooth(track: list, **settings) -> np.ndarray:
    smoother = LandmarkSmoother(fps=FPS, **settings)
    return np.stack([smoother([face])[0].points for face in track])


def jitter(points: np.ndarray, width: float) -> float:
    steps = np.diff(points[RUN_IN:], axis=0)  # (T-1, N, 2)
    return float(100 * np.sqrt((steps**2).sum(-1).mean()) / width)


def lag(points: np.ndarray, truth: np.ndarray) -> float:
    behind = truth[RUN_IN:, :, 0] - points[RUN_IN:, :, 0]
    return float(behind.mean() / SPEED)


def main() -> None:
    lm = Landmarker()
    sequences = []
    for index, (name, image) in enumerate(faces_source()):
        still = raw_track(lm, image, 0.0, seed=index)
        moving = raw_track(lm, image, SPEED, seed=1000 + index)
        if still is None or moving is None:
            print(f"{name}: the detector lost the face in some frame; left out", flush=True)
            continue
        rest = np.stack([f.points for f in still]).mean(0)
        shift = np.array([[SPEED * t, 0.0] for t in range(FRAMES)])[:, None, :]
        width = float(np.median([f.box[2] - f.box[0] for f in still]))
        sequences.append({"name": name, "still": still, "moving": moving, "truth": rest[None] + shift, "width": width})
    if not sequences:
        raise SystemExit("no sequence kept its face in every frame")

    def measure(settings: dict | None) -> dict:
        def points(track):
            return np.stack([f.points for f in track]) if settings is None else smooth(track, **settings)

        jitters = [jitter(points(s["still"]), s["width"]) for s in sequences]
        lags = [lag(points(s["moving"]), s["truth"]) for s in sequences]
        return {"jitter_pct": float(np.mean(jitters)), "lag_frames": float(np.mean(lags))}

    raw = measure(None)
    grid = []
    for min_cutoff in MIN_CUTOFFS:
        for beta in BETAS:
            grid.append({"min_cutoff": min_cutoff, "beta": beta, **measure({"min_cutoff": min_cutoff, "beta": beta})})
    within = [g for g in grid if g["lag_frames"] <= MAX_LAG]
    chosen = min(within, key=lambda g: g["jitter_pct"]) if within else min(grid, key=lambda g: g["lag_frames"])
    default = LandmarkSmoother().settings
    current = measure(default)
    data = {
        "provenance": provenance(
            "python benchmarks/video_smoothing.py",
            model=lm.name,
            detector="opencv-haar",
            sequences=[s["name"] for s in sequences],
            fps=FPS,
            frames=FRAMES,
            run_in_frames=RUN_IN,
            noise_sigma=NOISE,
            speed_px_per_frame=SPEED,
        ),
        "raw": raw,
        "smoothed_default": {**default, **current},
        "chosen": chosen,
        "max_lag_frames": MAX_LAG,
        "grid": grid,
    }
    rows = [
        {"landmarks": "raw", **raw},
        {"landmarks": f"One Euro default (min_cutoff {default['min_cutoff']}, beta {default['beta']})", **current},
    ]
    body = (
        f"{len(sequences)} faces, {FRAMES} frames each at {FPS:.0f} fps, fresh noise (sigma {NOISE}) every frame; "
        f"jitter in % of the face-box width per frame (still face), lag in frames behind the true path "
        f"(face sliding {SPEED} px per frame).\n\n"
        + markdown_table(rows, ["landmarks", "jitter_pct", "lag_frames"], {"jitter_pct": ".3f", "lag_frames": ".2f"})
        + f"\nJitter reduced {raw['jitter_pct'] / max(current['jitter_pct'], 1e-9):.1f}x by the default smoothing. "
        f"Grid pick (least jitter with lag <= {MAX_LAG} frame): "
        f"min_cutoff {chosen['min_cutoff']}, beta {chosen['beta']}.\n\n"
        + markdown_table(
            grid, ["min_cutoff", "beta", "jitter_pct", "lag_frames"], {"jitter_pct": ".3f", "lag_frames": ".2f"}
        )
    )
    write_results(
        ROOT / "benchmarks" / "results" / "video_smoothing", data, "Video landmark smoothing: jitter and lag", body
    )
    print(f"raw {raw}, default {current}, chosen {chosen}")


if __name__ == "__main__":
    main()
