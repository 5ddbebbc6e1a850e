"""What every landmark model shares, whatever runs it (torch at training time, the packed runtime
after export): how a face is cropped, how the crop becomes the input, and how the output maps back
to points in the original image. Subclasses supply `forward(x)`: (B, C, S, S) float32 -> raw output."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import cv2
import numpy as np

from ..io.sample import DataError, Sample
from ..schemes import Scheme, get_scheme
from .crop import CropSpec
from .geometry import OutputSpace, warp
from .heatmaps import Decoded, decode_argmax, sigmoid
from .pipeline import InputSpec, load_for, to_original


@dataclass
class PredictionSet:
    points: np.ndarray  # (K, N, 2) original-image coordinates of the faces in `indices`
    indices: list[int]
    errors: list[str]


class CroppedPredictor:
    scheme: Scheme
    crop: CropSpec
    input: InputSpec
    output: str
    heatmap_stride: int
    heatmap_activation: str  # "none", or "sigmoid" for maps output as logits
    heatmap_smooth: float  # sigma (cells) of the Gaussian that smooths the maps before decoding; 0: none
    fallback_crop: CropSpec | None
    # test-time flip: each crop also run mirrored left-right, the two outputs averaged (mirror) before
    # decoding; a run-time choice, not stored in model files, that doubles the network time
    flip_test: bool = False

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def settings(self) -> dict:
        """The cropping, input and decoding settings as plain data (model-file metadata)."""
        return {
            "scheme": self.scheme.name,
            "crop": dataclasses.asdict(self.crop),
            "fallback_crop": None if self.fallback_crop is None else dataclasses.asdict(self.fallback_crop),
            "input": dataclasses.asdict(self.input),
            "output": self.output,
            "heatmap_stride": self.heatmap_stride,
            "heatmap_activation": self.heatmap_activation,
            "heatmap_smooth": self.heatmap_smooth,
        }

    @property
    def space(self) -> OutputSpace:
        return _output_space(self.output, self.crop.size, self.heatmap_stride)

    def crop_for(self, sample: Sample) -> CropSpec:
        """The annotated box's crop, or for a face without a box the calibrated crop from its points."""
        if sample.box is None and self.fallback_crop is not None:
            return self.fallback_crop
        return self.crop

    def decode(self, output: np.ndarray) -> np.ndarray:
        """Raw output (B, N, 2) coordinates or (B, N, H, W) heatmaps -> points (B, N, 2) in crop pixels."""
        return self.decode_scored(output)[0]

    def decode_scored(self, output: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """`decode`, and for heatmap models each point's confidence (B, N): its map's peak after the
        model's activation (a probability for cross-entropy models; 0 for an unusable map). Coordinate
        regressors have no per-point confidence: None."""
        if self.output != "heatmap":
            return self.space.to_crop(output), None  # a float64 copy
        decoded = self.heatmaps_decoded(output)
        return self.space.to_crop(decoded.points), decoded.confidence

    def heatmaps_decoded(self, maps: np.ndarray) -> Decoded:
        """Heatmaps (B, N, H, W) -> points (B, N, 2) in cells and their confidences. The maps stay
        float32: the decoder reads few values in float64. (The packed runtime does the same in C.)"""
        activation = sigmoid if self.heatmap_activation == "sigmoid" else None
        return decode_argmax(maps, activation=activation, smooth=self.heatmap_smooth)

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (B, S, S[, 3]) -> points (B, N, 2) in crop pixels."""
        return self.predict_crops_scored(crops)[0]

    def predict_crops_scored(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """`predict_crops` and the per-point confidences of `decode_scored`."""
        x = self.input.normalize(crops)
        output = self.forward(x)
        if self.flip_test:
            output = self.with_mirror(output, self.forward(np.ascontiguousarray(x[..., ::-1])))
        return self.decode_scored(output)

    def with_mirror(self, output: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
        """The test-time flip's output: the mean of the raw output of the crops and that of their mirror
        images mapped back, (a + b) / 2 in the outputs' dtype (as the native runtime computes it)."""
        return (output + self.space.mirror(mirrored, self.scheme.flip_permutation)) / 2

    def predict_in_image(self, image: np.ndarray, matrices: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """The faces at `matrices` (3x3, image -> crop, from `crop.matrix(box)`) of one uint8 image, gray
        (H, W) or RGB (H, W, 3), each crop converted to the model's input mode: points (B, N, 2) in image
        pixels and the per-point confidences of `decode_scored`."""
        crops = np.stack([to_mode(warp(image, m, self.crop.size), self.input.mode) for m in matrices])
        points, scores = self.predict_crops_scored(crops)
        return np.stack([to_original(p, m) for p, m in zip(points, matrices, strict=True)]), scores

    def predict_samples(self, samples: list[Sample], batch_size: int = 256, progress=None) -> PredictionSet:
        """Predict every face in original-image coordinates; faces whose image fails to load are
        listed in `errors` and left out of `indices`, never scored as zeros."""
        points, indices, errors = [], [], []
        batch, matrices, batch_indices = [], [], []

        def flush():
            if batch:
                pred = self.predict_crops(np.stack(batch))
                points.extend(to_original(p, m) for p, m in zip(pred, matrices, strict=True))
                indices.extend(batch_indices)
                batch.clear(), matrices.clear(), batch_indices.clear()

        for i, sample in enumerate(progress(samples) if progress else samples):
            try:
                image = load_for(sample, self.input)
            except DataError as exc:
                errors.append(str(exc))
                continue
            matrix = self.crop_for(sample).matrix_for(sample)
            batch.append(warp(image, matrix, self.crop.size))
            matrices.append(matrix)
            batch_indices.append(i)
            if len(batch) == batch_size:
                flush()
        flush()
        return PredictionSet(
            np.asarray(points, dtype=np.float64).reshape(-1, self.scheme.num_points, 2), indices, errors
        )


def to_mode(image: np.ndarray, mode: str) -> np.ndarray:
    """A uint8 gray or RGB image in `mode` ("gray" or "rgb"), by OpenCV's colour conversion."""
    if mode == "gray" and image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if mode == "rgb" and image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return image


def settings_from(meta: dict) -> dict:
    """The inverse of CroppedPredictor.settings: keyword arguments for the predictor's fields.
    Raises KeyError, TypeError or ValueError on inconsistent metadata (callers name the file)."""
    fallback = meta.get("fallback_crop")
    return {
        "scheme": get_scheme(meta["scheme"]),
        "crop": CropSpec(**meta["crop"]),
        "fallback_crop": None if fallback is None else CropSpec(**fallback),
        "input": InputSpec(**meta["input"]),
        "output": meta["output"],
        "heatmap_stride": int(meta.get("heatmap_stride", 4)),
        "heatmap_activation": _activation(meta.get("heatmap_activation", "none")),
        "heatmap_smooth": _smooth(meta.get("heatmap_smooth", 0.0)),  # files written before it: none
    }


def _activation(name: str) -> str:
    if name not in ("none", "sigmoid"):
        raise ValueError(f"heatmap_activation must be 'none' or 'sigmoid', not {name!r}")
    return name


def _smooth(sigma) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not 0 <= sigma <= 100:
        raise ValueError(f"heatmap_smooth must be a number of cells in [0, 100], not {sigma!r}")
    return float(sigma)


@functools.lru_cache(maxsize=64)
def _output_space(output: str, crop_size: int, heatmap_stride: int) -> OutputSpace:
    """One OutputSpace per setting (decoding runs once per face; building it each time showed up)."""
    if output == "heatmap":
        return OutputSpace("heatmap", crop_size // heatmap_stride, heatmap_stride)
    return OutputSpace(output, crop_size)
