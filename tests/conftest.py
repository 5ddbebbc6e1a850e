"""Shared test helpers: synthetic images with blobs at known sub-pixel positions, and the real data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def blob_image(points: np.ndarray, width: int, height: int, sigma: float = 2.0, channels: int = 3) -> np.ndarray:
    """uint8 image, black, with a Gaussian blob centred exactly at each 0-based (x, y) point."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    canvas = np.zeros((height, width))
    for x, y in points:
        canvas = np.maximum(canvas, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)))
    gray = np.round(canvas * 255).astype(np.uint8)
    return gray if channels == 1 else np.repeat(gray[..., None], 3, axis=2)


def blob_centres(image: np.ndarray, guesses: np.ndarray, radius: int = 5) -> np.ndarray:
    """Intensity-weighted centre of the blob nearest each guess (window of +/- radius pixels)."""
    gray = image if image.ndim == 2 else image.mean(2)
    gray = gray.astype(np.float64)
    h, w = gray.shape
    centres = []
    for gx, gy in guesses:
        x0, x1 = max(0, int(round(gx)) - radius), min(w, int(round(gx)) + radius + 1)
        y0, y1 = max(0, int(round(gy)) - radius), min(h, int(round(gy)) + radius + 1)
        window = gray[y0:y1, x0:x1]
        window = np.clip(window - 0.1 * window.max(), 0, None)  # drop the faint tails that leak from neighbours
        ys, xs = np.mgrid[y0:y1, x0:x1]
        total = window.sum()
        centres.append([(xs * window).sum() / total, (ys * window).sum() / total])
    return np.array(centres)


def write_image(path: Path, image: np.ndarray) -> Path:
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), bgr)
    return path


# Five points spread like a face (eyes, nose, mouth corners) in a 120 x 100 image, at sub-pixel positions.
FACE5 = np.array([[38.25, 40.5], [79.75, 41.25], [59.5, 62.0], [42.0, 80.75], [77.5, 81.25]])


@pytest.fixture
def face_image(tmp_path) -> tuple[Path, np.ndarray]:
    """A PNG (lossless) with blobs at FACE5, and those 0-based points."""
    return write_image(tmp_path / "face.png", blob_image(FACE5, 120, 100)), FACE5.copy()


def shared_data(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"needs ../shared/data/{relative}, which is absent on this machine")
    return path


# A tiny synthetic 5-point training set: faces drawn as blobs, in the CUHK list format.


def write_cuhk_set(folder: Path, faces: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(faces):
        points = FACE5 + rng.uniform(-4, 4, FACE5.shape)
        write_image(folder / f"face{i}.png", blob_image(points, 120, 100, sigma=3.0))
        left, right, top, bottom = 20, 100, 22, 100
        coords = " ".join(f"{x:.2f} {y:.2f}" for x, y in points)
        lines.append(f"face{i}.png {left} {right} {top} {bottom} {coords}")
    path = folder / "list.txt"
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


@pytest.fixture
def tiny_recipe(tmp_path, monkeypatch) -> Path:
    """A recipe file training a small regression net for 2 epochs on 16 synthetic faces."""
    monkeypatch.setenv("BITFACE_CACHE", str(tmp_path / "cache"))
    data = write_cuhk_set(tmp_path / "data")
    recipe = {
        "name": "tiny",
        "model": {"name": "regression", "options": {"structure": "10-20-40-80", "method": "acn", "dropout": 0.0}},
        "data": {"train": str(data), "val": str(data), "scheme": "5pt", "normalizer": "box_width"},
        "crop": {"size": 39, "source": "box", "margin": 0.05},
        "augment": {"rotation": 5, "flip": 0.5},
        "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "schedule": "cosine", "warmup_epochs": 0.5},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path
