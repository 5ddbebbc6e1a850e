"""A packed model file as a landmark predictor: crops, runs the op graph, maps points back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.predictor import CroppedPredictor, settings_from
from ..export.format import PackedModel, load_packed
from ..io.sample import DataError
from .native import Network, decode_heatmaps


class PackedLandmarker(CroppedPredictor):
    def __init__(self, packed: PackedModel, source: str = "model"):
        meta = packed.meta
        try:
            for name, value in settings_from(meta).items():
                setattr(self, name, value)
            self.input_shape = tuple(int(v) for v in meta["input_shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: inconsistent metadata: {exc}") from None
        self.packed = packed
        self.info = meta.get("info", {})
        self.network = Network(packed, source)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.float32 or x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"input must be float32 of shape (batch, {', '.join(map(str, self.input_shape))}), "
                f"got {x.dtype} {x.shape}"
            )
        out = self.network(x)
        if self.output in ("normalized", "pixels"):
            return out.reshape(len(x), self.scheme.num_points, 2)
        return out

    def heatmap_points(self, maps: np.ndarray) -> np.ndarray:
        return decode_heatmaps(maps, self.heatmap_activation == "sigmoid").points  # the numpy decoding, in C


def load_packed_model(path: str | Path) -> PackedLandmarker:
    return PackedLandmarker(load_packed(path), str(path))
