"""A packed model file as a landmark predictor: crops, runs the op graph, maps points back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.geometry import apply, invert, warp_source
from ..data.heatmaps import Decoded
from ..data.pipeline import to_original
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
        return self._points_shape(self.network(x))

    def predict_crops_scored(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 crops (B, S, S[, 3]) -> points (B, N, 2) in crop pixels and per-point confidences; the
        native plan normalizes them itself (no float copy in numpy), with the same result as
        `forward(input.normalize(..))`."""
        crops = np.asarray(crops)
        channels, size = self.input_shape[0], self.input_shape[1:]
        shape = size if channels == 1 else (*size, channels)
        if self.network.plan is None or crops.dtype != np.uint8 or crops.ndim < 1 or crops.shape[1:] != shape:
            return super().predict_crops_scored(crops)
        if self.output == "heatmap":  # decoded in the same native call, the maps read where they lie
            sigmoid = self.heatmap_activation == "sigmoid"
            decoded = self.network.run_crops_decoded(
                crops, self.input.mean, self.input.std, sigmoid, smooth=self.heatmap_smooth, mirror=self._mirror()
            )
            return self.space.to_crop(decoded.points), decoded.confidence
        output = self._points_shape(self.network.run_crops(crops, self.input.mean, self.input.std))
        if self.flip_test:  # coordinates: the mirrored crops' points mirrored back here
            mirrored = self.network.run_crops(np.ascontiguousarray(crops[:, :, ::-1]), self.input.mean, self.input.std)
            output = self.with_mirror(output, self._points_shape(mirrored))
        return self.decode_scored(output)

    def _mirror(self) -> np.ndarray | None:
        """The channel permutation of a native test-time flip of heatmaps (None without one)."""
        return np.asarray(self.scheme.flip_permutation, np.int32) if self.flip_test else None

    def predict_in_image(self, image: np.ndarray, matrices: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """As CroppedPredictor.predict_in_image; a gray model on a gray image samples its crops in the
        native call that runs the network: the crops `warp` makes, bit for bit, without making them
        (cv2.warpAffine's arithmetic; a face that the crop shrinks more than 2x is sampled from its
        area-downsampled region, as `warp` does it)."""
        image = np.asarray(image)
        native = self.network.plan is not None and self.input_shape[0] == 1 and image.ndim == 2
        if not native or image.dtype != np.uint8 or (self.flip_test and self.output != "heatmap"):
            return super().predict_in_image(image, matrices)  # a coordinate model's flip mirrors crops
        image = np.ascontiguousarray(image)
        sources = [warp_source(image, m, self.crop.size) for m in matrices]
        direct = [i for i, (source, _) in enumerate(sources) if source is image]
        # one native call for the faces sampled from the image itself, one per face sampled from its region
        groups = [(direct, image)] if direct else []
        groups += [([i], source) for i, (source, _) in enumerate(sources) if source is not image]
        results = [
            self._sampled(
                np.ascontiguousarray(source), [sources[i][1] for i in indices], [matrices[i] for i in indices]
            )
            for indices, source in groups
        ]
        if len(groups) == 1:
            return results[0]
        points = np.empty((len(matrices), self.scheme.num_points, 2))
        scores = None if results[0][1] is None else np.empty((len(matrices), self.scheme.num_points))
        for (indices, _), (p, c) in zip(groups, results, strict=True):
            points[indices] = p
            if scores is not None:
                scores[indices] = c
        return points, scores

    def _sampled(self, source: np.ndarray, to_crop: list, matrices: list) -> tuple[np.ndarray, np.ndarray | None]:
        """Points in original image pixels and confidences of the crops `to_crop` (source -> crop) of a
        gray source: the image itself (a face's to_crop is then its matrix, original -> crop) or a region."""
        if self.output == "heatmap":  # decoded in the native call, in source pixels
            sigmoid = self.heatmap_activation == "sigmoid"
            decoded = self.network.run_faces_decoded(
                source,
                to_crop,
                self.input.mean,
                self.input.std,
                sigmoid,
                self.heatmap_stride,
                smooth=self.heatmap_smooth,
                mirror=self._mirror(),
            )
            points = decoded.points
            if any(t is not m for m, t in zip(matrices, to_crop, strict=True)):  # a region: -> crop -> original
                points = np.stack([apply(invert(m) @ t, p) for m, t, p in zip(matrices, to_crop, points, strict=True)])
            return points, decoded.confidence
        out = self.network.run_faces(source, to_crop, self.input.mean, self.input.std)
        in_crop, scores = self.decode_scored(self._points_shape(out))
        return np.stack([to_original(p, m) for p, m in zip(in_crop, matrices, strict=True)]), scores

    def _points_shape(self, out: np.ndarray) -> np.ndarray:
        if self.output in ("normalized", "pixels"):
            return out.reshape(len(out), self.scheme.num_points, 2)
        return out

    def heatmaps_decoded(self, maps: np.ndarray) -> Decoded:
        return decode_heatmaps(maps, self.heatmap_activation == "sigmoid", smooth=self.heatmap_smooth)  # in C


def load_packed_model(path: str | Path) -> PackedLandmarker:
    return PackedLandmarker(load_packed(path), str(path))
