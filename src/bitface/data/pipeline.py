"""From an annotated image to a network input and back: crop (+ augmentation), normalize, and map
predictions to the original image exactly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.images import load_image
from ..io.sample import Sample
from ..schemes import Scheme
from . import geometry
from .augment import AugmentSpec
from .crop import CropSpec


@dataclass(frozen=True)
class InputSpec:
    """How a uint8 crop becomes the float network input: (value - mean) / std, 1 (gray) or 3 (RGB) channels."""

    channels: int = 1
    mean: float = 127.5
    std: float = 127.5

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {self.channels}")
        if self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def mode(self) -> str:
        return "gray" if self.channels == 1 else "rgb"

    def normalize(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (..., H, W) or (..., H, W, 3) -> float32 (..., C, H, W)."""
        x = (np.asarray(crops, dtype=np.float32) - self.mean) / self.std
        if self.channels == 1:
            return x[..., None, :, :]
        return np.moveaxis(x, -1, -3)


@dataclass
class Example:
    crop: np.ndarray  # uint8 (S, S) or (S, S, 3)
    points: np.ndarray  # (N, 2) in crop pixels
    matrix: np.ndarray  # (3, 3) original image -> crop


def make_example(
    image: np.ndarray,
    sample: Sample,
    crop: CropSpec,
    scheme: Scheme | None = None,
    augment: AugmentSpec | None = None,
    rng: np.random.Generator | None = None,
    source_matrix: np.ndarray | None = None,
) -> Example:
    """Crop (and optionally augment) one face.

    `image` is the original image, or a pre-cropped patch of it with `source_matrix` mapping
    original coordinates into that patch (the preprocessed cache): points always come from the
    original annotation through one exact matrix.
    """
    matrix = crop.matrix_for(sample)
    points = sample.points
    if augment is not None:
        if rng is None:
            raise ValueError("augmentation needs a random generator")
        extra, flipped = augment.sample_geometry(rng, crop.size)
        matrix = extra @ matrix
        if flipped:
            if scheme is None:
                raise ValueError("flip augmentation needs the landmark scheme (for its flip permutation)")
            points = points[list(scheme.flip_permutation)]
    pixels_matrix = matrix if source_matrix is None else matrix @ geometry.invert(source_matrix)
    patch = geometry.warp(image, pixels_matrix, crop.size)
    if augment is not None:
        patch = augment.photometric(patch, rng)
    return Example(crop=patch, points=geometry.apply(matrix, points), matrix=matrix)


def to_original(points_in_crop: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map crop-pixel points back to the original image through the inverse of the crop matrix."""
    return geometry.apply(geometry.invert(matrix), points_in_crop)


def load_for(sample: Sample, spec: InputSpec) -> np.ndarray:
    return load_image(sample.image_path, spec.mode)
