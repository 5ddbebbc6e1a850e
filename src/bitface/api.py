"""The Landmarker: faces and landmarks in images, on the packed runtime (no torch).

    from bitface import Landmarker
    lm = Landmarker()                     # the default bundled model and detector
    faces = lm("photo.jpg")               # [Face(box, points, score)], points in image pixels

Images are a path, a PIL image or a numpy uint8 array: (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA.
Arrays from OpenCV are BGR: say so with `channel_order="bgr"` (then (H, W, 4) is BGRA).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import bundled
from .detect import Detection, box_from_points, get_detector, load_calibration, load_landmark_calibration
from .io.images import load_image
from .runtime import load_packed_model


@dataclass
class Face:
    box: np.ndarray  # [x0, y0, x1, y1]: the face box the landmarks were predicted from
    points: np.ndarray  # (N, 2) x, y in image pixels (pixel centres at integers)
    score: float | None = None  # the detector's confidence (None for boxes the caller gave)
    detector_box: np.ndarray | None = field(default=None, repr=False)
    # (N,) each point's confidence from a heatmap model: the peak of its map after the model's activation
    # (a probability for the bundled 68-point models; 0 where a map had no usable peak). None for
    # coordinate regressors (the 5-point models), which give none.
    point_scores: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        scores = self.point_scores
        return {
            "box": [round(float(v), 2) for v in self.box],
            "points": [[round(float(x), 3), round(float(y), 3)] for x, y in self.points],
            "score": None if self.score is None else round(float(self.score), 4),
            "point_scores": None if scores is None else [round(float(v), 4) for v in scores],
        }


def as_rgb(image, channel_order: str = "rgb", where: str = "image") -> np.ndarray:
    """A path, PIL image or uint8 array -> uint8 RGB (H, W, 3) or gray (H, W)."""
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', not {channel_order!r}")
    if isinstance(image, (str, Path)):
        return load_image(image, "rgb")
    if type(image).__module__.startswith("PIL."):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"{where}: expected a uint8 array, got {array.dtype} (scale floats to 0..255 first)")
    if array.ndim == 2:
        return array
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"{where}: expected (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.shape[2] == 1:
        return array[:, :, 0]
    rgb = array[:, :, :3]
    return np.ascontiguousarray(rgb[:, :, ::-1] if channel_order == "bgr" else rgb)


class Landmarker:
    """A bundled model name (see `bitface models`) or a .bitface path, and a detector name.

    refine: how many times a detected face is cropped again from the box its own landmarks imply (the
    box the model was trained on, through the bundled "landmarks" calibration) and predicted anew. A
    detector's box, even calibrated, frames faces less consistently than training did; one pass
    takes most of that loss back (benchmarks/results/detector_calibration.md) for one more network
    run per face, small next to detection. None: the bundled default of the model's box convention
    (1 where the box is the points' own tight box, as for the 68-point models; 0 for the 5-point
    models, for which a pass gains less and doubles their landmark time). Boxes the caller gives are
    taken as they are.

    flip_test: also run each face mirrored left-right and average the two outputs (test-time flip):
    more accurate (benchmarks/results/hourglass_68.md) for twice the network time."""

    def __init__(
        self,
        model: str | Path | None = None,
        detector: str = "opencv-haar",
        refine: int | None = None,
        flip_test: bool = False,
    ):
        if not isinstance(flip_test, bool):
            raise ValueError(f"flip_test must be True or False, not {flip_test!r}")
        model = model or bundled.default_model()
        path = Path(model) if str(model).endswith(".bitface") else bundled.model_path(str(model))
        self.name = str(model)
        self.model = load_packed_model(path)
        self.model.flip_test = flip_test
        self.detector = get_detector(detector) if detector != "none" else None
        convention = self.model.info.get("box_convention", "cuhk")
        self.calibration = load_calibration(detector, convention) if self.detector else None
        self.convention = convention
        self.landmark_calibration, default_passes = load_landmark_calibration(convention)
        self.refine = self._passes(default_passes if refine is None else refine)

    def _passes(self, refine) -> int:
        if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
            raise ValueError(f"refine must be a whole number of passes >= 0, not {refine!r}")
        if refine and self.landmark_calibration is None:
            raise ValueError(f"refine={refine}: no landmarks calibration is bundled for convention {self.convention!r}")
        return refine

    def __call__(self, image, boxes=None, channel_order: str = "rgb", refine: int | None = None) -> list[Face]:
        return self.batch([image], None if boxes is None else [boxes], channel_order, refine)[0]

    def detect(self, rgb_or_gray: np.ndarray) -> list[Detection]:
        if self.detector is None:
            raise ValueError("this Landmarker has no detector (detector='none'): pass boxes")
        gray = rgb_or_gray if rgb_or_gray.ndim == 2 else cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGB2GRAY)
        return self.detector(gray)

    def batch(
        self, images: list, boxes: list | None = None, channel_order: str = "rgb", refine: int | None = None
    ) -> list[list[Face]]:
        """Faces of every image; the faces of one image go through the network in one native call.
        boxes: per image, face boxes [x0, y0, x1, y1] in the training annotations' convention
        (used instead of detection). refine: passes from the landmarks' own boxes; None: this
        Landmarker's `refine` for detected faces, 0 for given boxes."""
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"{len(images)} images but {len(boxes)} lists of boxes")
        refine = (self.refine if boxes is None else 0) if refine is None else self._passes(refine)
        mode = self.model.input.mode
        found = []
        for i, image in enumerate(images):
            rgb = as_rgb(image, channel_order, where=f"image {i}")
            gray = rgb if rgb.ndim == 2 else None
            if boxes is not None:
                faces = [Face(np.asarray(b, dtype=np.float64).reshape(4), None) for b in boxes[i]]
            else:  # detect on a gray image made once here, so a gray model can crop from it too
                gray = gray if gray is not None else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
                faces = [Face(self.calibration.apply(d.box), None, d.score, d.box) for d in self.detect(gray)]
            # a gray model reads the gray image where detection made one (its crops are sampled in the
            # native call); otherwise only the small crops are converted, not the whole image
            source = gray if mode == "gray" and gray is not None else rgb
            self._predict(source, faces)
            for _ in range(refine):
                moved = self.landmark_boxes(faces)
                for face, box in moved:
                    face.box = box
                self._predict(source, [face for face, _ in moved])
            found.append(faces)
        return found

    def landmark_boxes(self, faces: list[Face]) -> list[tuple[Face, np.ndarray]]:
        """The faces whose landmarks imply a box (`box_from_points` through the landmarks calibration),
        each with that box: where refinement and FaceTracker crop them next."""
        boxes = [box_from_points(face.points, face.point_scores, self.landmark_calibration) for face in faces]
        return [(face, box) for face, box in zip(faces, boxes, strict=True) if box is not None]

    def _predict(self, source: np.ndarray, faces: list[Face]) -> None:
        """Landmarks of faces from their boxes, in one native call."""
        if not faces:
            return
        points, scores = self.model.predict_in_image(source, [self.model.crop.matrix(face.box) for face in faces])
        for k, face in enumerate(faces):
            face.points = points[k]
            face.point_scores = None if scores is None else scores[k]
