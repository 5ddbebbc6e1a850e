"""Following faces through video by their own landmarks, so the detector runs only now and then.

    tracker = FaceTracker(Landmarker(), detect_every=10)
    for frame in frames:
        faces = tracker(frame)

Between detections each face is cropped from the box its previous frame's landmarks imply (the
refinement box of `Landmarker`), which is the framing the model was trained on; detection (by far the
slowest step: tens to hundreds of milliseconds a frame for the Haar cascade against a millisecond or
less for the landmarks) runs on every `detect_every`-th frame and whenever no face is followed. At a
detection, a detected face that overlaps a followed one keeps the followed face (its framing is
steadier than a new detector box); the others start new faces. A followed face is dropped when its
landmarks lose confidence (heatmap models: the median point score under `min_score`; the bundled
68-point models score 0.68-0.79 on the 5% least sure HELEN test faces and about 0.3-0.4 on a box one
face width aside) or, for models that give no confidence (the 5-point regressors), when a detection
finds nothing where it is. Losing a face brings the detector back on the next frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from .api import Face, Landmarker, as_rgb
from .detect import box_iou

DETECT_EVERY = 10  # frames; `bitface predict`'s default on video (benchmarks/video_smoothing.py measures it)


class FaceTracker:
    def __init__(
        self, landmarker: Landmarker, detect_every: int | None = None, min_score: float = 0.5, match_iou: float = 0.3
    ):
        """detect_every None: DETECT_EVERY where the model's convention has a landmarks calibration, else 1."""
        if detect_every is None:
            detect_every = DETECT_EVERY if landmarker.landmark_calibration is not None else 1
        if isinstance(detect_every, bool) or not isinstance(detect_every, int) or detect_every < 1:
            raise ValueError(f"detect_every must be a whole number of frames >= 1, not {detect_every!r}")
        if landmarker.detector is None:
            raise ValueError("FaceTracker needs a Landmarker with a detector (detector='none' was given)")
        if detect_every > 1 and landmarker.landmark_calibration is None:
            raise ValueError(
                f"detect_every={detect_every}: following faces needs a landmarks calibration, and none is bundled "
                f"for convention {landmarker.convention!r} (use detect_every=1)"
            )
        self.landmarker, self.detect_every = landmarker, detect_every
        self.min_score, self.match_iou = min_score, match_iou
        self.faces: list[Face] = []
        self.frames = 0
        self.detections = 0  # frames the detector ran on

    def reset(self) -> None:
        self.faces, self.frames = [], 0

    def __call__(self, image, channel_order: str = "rgb") -> list[Face]:
        lm = self.landmarker
        pixels = as_rgb(image, channel_order)
        if lm.model.input.mode == "gray" and pixels.ndim == 3:
            # once per frame: detection reads it, and a gray model samples its crops from it natively
            # (given an RGB frame and boxes, the Landmarker would crop and convert each face instead)
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
        followed = self._follow(pixels) if self.detect_every > 1 else []
        lost = len(followed) < len(self.faces)
        if self.frames % self.detect_every == 0 or lost or not followed:
            self.detections += 1
            detected = lm(pixels)
            # a face without confidences of its own (a regressor's) lives while detections confirm it
            followed = [
                f
                for f in followed
                if f.point_scores is not None or any(box_iou(f.box, d.box) >= self.match_iou for d in detected)
            ]
            new = [d for d in detected if all(box_iou(f.box, d.box) < self.match_iou for f in followed)]
            followed += new
        self.frames += 1
        self.faces = followed
        return followed

    def _follow(self, pixels: np.ndarray) -> list[Face]:
        """The previous frame's faces, predicted again in this frame from their landmarks' boxes."""
        lm = self.landmarker
        kept = lm.landmark_boxes(self.faces)
        if not kept:
            return []
        now = lm(pixels, boxes=[box for _, box in kept], refine=0)
        for (before, _), face in zip(kept, now, strict=True):
            face.score, face.detector_box = before.score, before.detector_box
        confident = [f for f in now if f.point_scores is None or np.median(f.point_scores) >= self.min_score]
        distinct = []  # two faces that drifted onto one: the first stays
        for face in confident:
            if all(box_iou(face.box, other.box) < self.match_iou for other in distinct):
                distinct.append(face)
        return distinct
