"""Training augmentation, applied identically to pixels and points: one affine (rotation, scale,
translation, horizontal flip) composed with the crop and applied in a single warp, then photometric
jitter on the pixels only."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import geometry


@dataclass(frozen=True)
class AugmentSpec:
    rotation: float = 0.0  # degrees, uniform in [-rotation, rotation]
    scale: tuple[float, float] = (1.0, 1.0)  # uniform zoom factor range
    translation: float = 0.0  # fraction of the crop size, uniform in each axis
    flip: float = 0.0  # probability of a horizontal flip
    brightness: float = 0.0  # additive, fraction of 255
    contrast: float = 0.0  # multiplicative, 1 +/- contrast
    blur: float = 0.0  # probability of a small Gaussian blur
    noise: float = 0.0  # std of additive Gaussian noise, in grey levels

    def __post_init__(self):
        checks = {
            "rotation": 0 <= self.rotation <= 180,
            "scale": 0 < self.scale[0] <= self.scale[1],
            "translation": 0 <= self.translation < 1,
            "flip": 0 <= self.flip <= 1,
            "brightness": 0 <= self.brightness <= 1,
            "contrast": 0 <= self.contrast < 1,
            "blur": 0 <= self.blur <= 1,
            "noise": self.noise >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"augmentation values out of range: {', '.join(f'{k}={getattr(self, k)}' for k in bad)}")

    def sample_geometry(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, bool]:
        """A random crop-space affine and whether it flips."""
        angle = rng.uniform(-self.rotation, self.rotation) if self.rotation else 0.0
        scale = rng.uniform(*self.scale) if self.scale != (1.0, 1.0) else 1.0
        shift = rng.uniform(-self.translation, self.translation, 2) * size if self.translation else (0.0, 0.0)
        flip = bool(self.flip and rng.random() < self.flip)
        return geometry.about_centre(size, angle, scale, shift, flip), flip

    def photometric(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not (self.brightness or self.contrast or self.blur or self.noise):
            return image
        out = image.astype(np.float32)
        if self.contrast:
            mean = out.mean()
            out = (out - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
        if self.brightness:
            out += rng.uniform(-self.brightness, self.brightness) * 255
        if self.blur and rng.random() < self.blur:
            out = cv2.GaussianBlur(out, (3, 3), rng.uniform(0.3, 1.0))
        if self.noise:
            out += rng.normal(0, self.noise, out.shape).astype(np.float32)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)  # +0.5: round rather than truncate
