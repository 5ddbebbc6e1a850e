"""Shared test helpers: synthetic images with blobs at known sub-pixel positions, and the real data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from bitface.runtime import native

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


# A tiny synthetic MPII Human Pose annotation file: the RELEASE struct of mpii_human_pose_v1_u12_1.mat
# (struct arrays with fields MATLAB leaves empty where the annotators did), and blob images.

# 16 joints of a standing person in MPII order, 0-based, in a 160 x 160 image
PERSON16 = np.array(
    [[66, 140], [67, 115], [68, 90], [92, 90], [93, 115], [94, 140], [80, 90], [80, 55], [80, 47], [80, 28],
     [55, 92], [58, 74], [64, 56], [96, 56], [102, 74], [105, 92]], dtype=np.float64,
)  # fmt: skip
PERSON_HEAD_BOX = np.array([70.0, 27.0, 90.0, 49.0])  # 0-based [x0, y0, x1, y1]


def _struct_array(records: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    array = np.empty((1, len(records)), dtype=[(f, object) for f in fields])
    for i, record in enumerate(records):
        for f in fields:
            array[0, i][f] = record.get(f, np.zeros((0, 0)))  # a field a record lacks is MATLAB's []
    return array


def write_mpii_set(
    folder: Path, images: int = 21, seed: int = 0, missing: int = 3, bad_id_in: int | None = None
) -> tuple[Path, list]:
    """images/*.png and mpii_human_pose_v1_u12_1.mat (1-based, as MATLAB writes it). Every image
    holds one person jittered around PERSON16 (image k shifted by k px); image 2 also has a person
    without joints; the last image is a test image (img_train 0); `missing` joints of person 0 are
    not annotated and joint 9 of every person is marked occluded. Returns the .mat path and the
    0-based joints of the training images' people (NaN where not annotated). `bad_id_in`: that image's
    joint 4 gets the id 17, which MPII does not have."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    annolist, truth = [], []
    for k in range(images):
        points = PERSON16 + rng.uniform(-3, 3, PERSON16.shape) + k % 5
        write_image(folder / "images" / f"{k:09d}.png", blob_image(points, 160, 160, sigma=2.5))
        joints = [j for j in range(16) if not (k == 0 and j < missing)]
        point_records = [
            {
                "id": 17 if (k == bad_id_in and j == 4) else j,
                "x": points[j, 0] + 1,
                "y": points[j, 1] + 1,
                "is_visible": 0 if j == 9 else 1,
            }
            for j in joints
        ]
        head = PERSON_HEAD_BOX + k % 5 + 1
        rect = {
            "x1": head[0], "y1": head[1], "x2": head[2], "y2": head[3],
            "annopoints": {"point": _struct_array(point_records, ("id", "x", "y", "is_visible"))},
            "scale": 0.7, "objpos": {"x": 81.0 + k % 5, "y": 85.0 + k % 5},
        }  # fmt: skip
        rects = [rect] + ([{"scale": 0.5, "objpos": {"x": 20.0, "y": 20.0}}] if k == 2 else [])
        annorect = _struct_array(rects, ("x1", "y1", "x2", "y2", "annopoints", "scale", "objpos"))
        annolist.append({"image": {"name": f"{k:09d}.png"}, "annorect": annorect})
        truth.append(np.where(np.isin(np.arange(16), joints)[:, None], points, np.nan))
    release = {
        "annolist": _struct_array(annolist, ("image", "annorect")),
        "img_train": np.array([[1] * (images - 1) + [0]]),
    }
    path = folder / "mpii_human_pose_v1_u12_1.mat"
    savemat(path, {"RELEASE": release})
    return path, truth[: images - 1]


def face68(cx: float = 64.0, cy: float = 60.0, a: float = 40.0, b: float = 50.0) -> np.ndarray:
    """A plausible iBUG 68-point face (jaw, brows, nose, eyes, lips in their order) with the jaw an
    ellipse of half-width a and half-height b around (cx, cy)."""

    def ellipse(x, y, w, h, angles):
        angles = np.asarray(angles, dtype=np.float64)
        return np.stack([x + w * np.cos(angles), y - h * np.sin(angles)], 1)

    jaw = ellipse(cx, cy, a, -b, np.pi - np.arange(17) * np.pi / 16)
    brow = a * np.linspace(0.7, 0.15, 5)
    brows = np.stack([np.concatenate([cx - brow, cx + brow[::-1]]), np.full(10, cy - 0.4 * b)], 1)
    bridge = np.stack([np.full(4, cx), cy - b * np.linspace(0.25, -0.1, 4)], 1)
    base = np.stack([cx + a * np.linspace(-0.2, 0.2, 5), np.full(5, cy + 0.2 * b)], 1)
    eye_angles = [np.pi, 2 * np.pi / 3, np.pi / 3, 0, -np.pi / 3, -2 * np.pi / 3]
    eyes = [ellipse(cx + s * 0.4 * a, cy - 0.15 * b, 0.15 * a, 0.08 * b, eye_angles) for s in (-1, 1)]
    outer = ellipse(cx, cy + 0.55 * b, 0.4 * a, 0.18 * b, np.pi - np.arange(12) * np.pi / 6)
    inner = ellipse(cx, cy + 0.55 * b, 0.3 * a, 0.06 * b, np.pi - np.arange(8) * np.pi / 4)
    return np.concatenate([jaw, brows, bridge, base, *eyes, outer, inner])


def write_pts_set(folder: Path, faces: int = 12, seed: int = 0) -> Path:
    """A folder of 128 x 128 images with iBUG .pts beside them (1-based on disk): face68 jittered,
    its parts painted in distinct grey levels so a network can learn them."""
    from bitface.data.parts import part_labels

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(faces):
        points = face68() + rng.uniform(-2, 2, (68, 2)) + rng.uniform(-4, 4, 2)
        image = (part_labels(points, 128, 128) * 35 + rng.integers(0, 20, (128, 128))).astype(np.uint8)
        write_image(folder / f"face{i}.png", image)
        body = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in points)
        (folder / f"face{i}.pts").write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")
    return folder


KERNEL_PATHS = native._native.available() if native._native is not None else []


@pytest.fixture(params=KERNEL_PATHS)
def kernel_path(request):
    """Each native kernel path this CPU runs (portable, avx2, avx512), one at a time."""
    before = native._native.isa()
    native._native.set_isa(request.param)
    yield request.param
    native._native.set_isa(before)
