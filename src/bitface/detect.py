"""Face detectors behind one interface, and the box calibration that maps a detector's boxes to the
face boxes our landmark models were trained on (as dlib does for its shape predictors).

`opencv-haar` (the default) is OpenCV's frontal-face Haar cascade, bundled with
opencv-python-headless 4.x: it needs nothing else and finds frontal faces of about 30 px and more;
it misses profiles and strongly rotated faces. `dlib-hog` is dlib's HOG detector, where dlib is
installed. Other detectors plug in with `register_detector`; each needs its box calibration
(benchmarks/detector_calibration.py --detector NAME), else its boxes are taken as they come.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import cv2
import numpy as np

from .registry import registrar
from .schemes import tight_boxes

DETECTORS: dict[str, Callable[[], Detector]] = {}


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # [x0, y0, x1, y1] in the detector's own convention
    score: float


class Detector:
    """A face detector: a gray uint8 image in, detections out. One Landmarker may call it from several
    threads at once; a detector whose calls share state (OpenCV's cascade does) takes a lock."""

    name = "detector"

    def __call__(self, gray: np.ndarray) -> list[Detection]:
        raise NotImplementedError


register_detector = registrar(DETECTORS, "detector")


@register_detector("opencv-haar")
class HaarDetector(Detector):
    """cv2.CascadeClassifier with haarcascade_frontalface_default.xml; the score is the number of
    neighbouring detections that support the box (OpenCV's levelWeights), larger is surer."""

    name = "opencv-haar"

    def __init__(self, min_size: int = 24, scale_factor: float = 1.1, min_neighbors: int = 4):
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise ValueError(
                f"opencv-haar: cannot load {path} (opencv-python-headless 5.x dropped the cascades; install 4.x)"
            )
        self.min_size, self.scale_factor, self.min_neighbors = min_size, scale_factor, min_neighbors
        # the cascade keeps its working buffers between calls: two threads at once swapped their faces
        self.lock = threading.Lock()

    def __call__(self, gray: np.ndarray) -> list[Detection]:
        with self.lock:
            boxes, _, weights = self.cascade.detectMultiScale3(
                gray,
                self.scale_factor,
                self.min_neighbors,
                minSize=(self.min_size, self.min_size),
                outputRejectLevels=True,
            )
        found = [
            Detection(np.array([x, y, x + w, y + h], dtype=np.float64), float(s))
            for (x, y, w, h), s in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).ravel(), strict=True)
        ]
        return sorted(found, key=lambda d: -d.score)


@register_detector("dlib-hog")
class DlibHogDetector(Detector):
    """dlib's HOG + linear SVM frontal face detector, where dlib is installed (`pip install dlib-bin`);
    the score is the SVM's margin. Slower than the Haar cascade, with fewer false faces."""

    name = "dlib-hog"

    def __init__(self, upsample: int = 1):
        try:
            import dlib
        except ImportError as error:
            raise ValueError("dlib-hog: dlib is not installed (pip install dlib-bin)") from error
        self.detector, self.upsample = dlib.get_frontal_face_detector(), upsample
        self.lock = threading.Lock()  # dlib does not say that one detector may run in two threads at once

    def __call__(self, gray: np.ndarray) -> list[Detection]:
        with self.lock:
            rects, scores, _ = self.detector.run(np.ascontiguousarray(gray), self.upsample, 0.0)
        found = [  # dlib's right and bottom are the last pixel's: one more for [x0, y0, x1, y1]
            Detection(np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=np.float64), float(score))
            for r, score in zip(rects, scores, strict=True)
        ]
        return sorted(found, key=lambda d: -d.score)


def get_detector(name: str) -> Detector:
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r} (known: {', '.join(sorted(DETECTORS))})")
    return DETECTORS[name]()


@dataclass(frozen=True)
class BoxCalibration:
    """Detector box -> training-style face box: centre moved by (dx, dy) detector widths/heights,
    width and height scaled by (sw, sh). Fitted by medians over matched training faces."""

    dx: float = 0.0
    dy: float = 0.0
    sw: float = 1.0
    sh: float = 1.0

    def apply(self, box: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
        w, h = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) / 2 + self.dx * w, (y0 + y1) / 2 + self.dy * h
        return np.array([cx - self.sw * w / 2, cy - self.sh * h / 2, cx + self.sw * w / 2, cy + self.sh * h / 2])

    @classmethod
    def fit(cls, detected: np.ndarray, truth: np.ndarray) -> BoxCalibration:
        """Medians over pairs of boxes (N, 4) each."""
        dw, dh = detected[:, 2] - detected[:, 0], detected[:, 3] - detected[:, 1]
        centre = lambda b: ((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2)  # noqa: E731
        (dcx, dcy), (tcx, tcy) = centre(detected), centre(truth)
        return cls(
            dx=float(np.median((tcx - dcx) / dw)),
            dy=float(np.median((tcy - dcy) / dh)),
            sw=float(np.median((truth[:, 2] - truth[:, 0]) / dw)),
            sh=float(np.median((truth[:, 3] - truth[:, 1]) / dh)),
        )


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


CALIBRATION_FILE = "detector_calibration.json"
# The calibration table's entry for the tight box of a model's own predicted points: refinement re-crops
# a face from the box that this maps its first landmarks to (identity for the "ibug68-points" convention).
LANDMARKS = "landmarks"


def _calibration_table() -> dict:
    path = resources.files("bitface.bundled") / CALIBRATION_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load_calibration(detector: str, box_convention: str) -> BoxCalibration:
    """The bundled calibration of `detector` to a box convention (e.g. 'cuhk'); identity if none."""
    entry = _calibration_table().get(detector, {}).get(box_convention)
    return BoxCalibration(**entry["calibration"]) if entry else BoxCalibration()


def load_landmark_calibration(box_convention: str) -> tuple[BoxCalibration | None, int]:
    """The calibration from the tight box of predicted points to `box_convention` (None if none is
    bundled), and the refinement passes a Landmarker makes by default for that convention."""
    entry = _calibration_table().get(LANDMARKS, {}).get(box_convention)
    return (BoxCalibration(**entry["calibration"]), int(entry["default_passes"])) if entry else (None, 0)


def box_from_points(points: np.ndarray, scores: np.ndarray | None, calibration: BoxCalibration) -> np.ndarray | None:
    """The face box implied by one face's predicted points (N, 2): the calibrated tight box of its usable
    points (finite, and with a confidence above 0 where the model gives one); None if fewer than half
    are usable, so that a failed prediction never moves the crop."""
    usable = np.isfinite(points).all(axis=1)
    if scores is not None:
        usable &= np.asarray(scores) > 0
    if usable.sum() * 2 < len(points):
        return None
    return calibration.apply(tight_boxes(points[usable]))
