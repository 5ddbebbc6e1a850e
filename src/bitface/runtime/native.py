"""The native runtime: a compiled plan run by the C extension, or the numpy reference where the
extension is not built or the graph has a construct the plan does not fuse."""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..data.heatmaps import Decoded, decode_argmax, gaussian_taps
from ..data.heatmaps import sigmoid as sigmoid_function
from ..export.format import PackedModel
from . import reference
from .plan import Unsupported, compile_plan

try:
    from . import _native
except ImportError as exc:  # not compiled (no C compiler at install time)
    _native = None
    NATIVE_MISSING = f"the native extension is not built ({exc})"
else:
    NATIVE_MISSING = None


def kernel_path() -> str:
    """'avx512', 'avx2' or 'portable' (native kernels), or 'reference' (numpy)."""
    if _native is None or os.environ.get("BITFACE_RUNTIME") == "reference":
        return "reference"
    return _native.isa()


class Network:
    """Runs a packed op graph on (B, C, H, W) float32 input; the same results as the reference
    (integer-exact in binary layers)."""

    def __init__(self, model: PackedModel, source: str = "model"):
        self.model = model
        self.plan = None
        self.why_reference = NATIVE_MISSING
        if os.environ.get("BITFACE_RUNTIME") == "reference":
            self.why_reference = "BITFACE_RUNTIME=reference"
        elif _native is not None:
            try:
                self.compiled = compile_plan(model)
            except Unsupported as exc:
                self.why_reference = f"the native plan does not support this graph ({exc})"
            else:
                c = self.compiled
                self.plan = _native.Plan(c.stages, c.buffers, c.output, int(np.prod(c.input_shape)))
        if self.plan is None and self.why_reference != "BITFACE_RUNTIME=reference":
            warnings.warn(
                f"{source}: running the slower numpy reference: {self.why_reference}", RuntimeWarning, stacklevel=3
            )

    @property
    def path(self) -> str:
        return kernel_path() if self.plan is not None else "reference"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.plan is None:
            return reference.run(self.model, x)
        x = np.ascontiguousarray(x, np.float32)
        out = np.empty((len(x), *self.compiled.output_shape), np.float32)
        self.plan.run(x, out)
        return out

    def _crops(self, crops: np.ndarray) -> np.ndarray:
        channels, height, width = self.compiled.input_shape
        shape = (height, width) if channels == 1 else (height, width, channels)
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.shape[1:] != shape:
            raise ValueError(
                f"run_crops: crops must be uint8 (batch, {', '.join(map(str, shape))}), got {crops.dtype} {crops.shape}"
            )
        return np.ascontiguousarray(crops)

    def run_crops(self, crops: np.ndarray, mean: float, std: float, mirror=None) -> np.ndarray:
        """uint8 (B, H, W[, C]) crops, normalized to (x - mean) / std in the plan's input stage: the
        same output as calling the network on the normalized float32 input, without that copy.
        mirror: for heatmap outputs, a test-time flip with this channel permutation (each map averaged
        with the map mirror[c] of the mirrored input, mirrored back: `CroppedPredictor.with_mirror`)."""
        crops = self._crops(crops)
        out = np.empty((len(crops), *self.compiled.output_shape), np.float32)
        self.plan.run_crops(crops, mean, std, _permutation(mirror), out)
        return out

    def run_crops_decoded(
        self,
        crops: np.ndarray,
        mean: float,
        std: float,
        sigmoid: bool,
        min_peak: float = 1e-6,
        smooth: float = 0.0,
        mirror=None,
    ):
        """run_crops, then `decode_heatmaps` of its (B, N, H, W) output: in one native call that decodes
        the maps where the network left them (no CHW copy, no map array)."""
        crops = self._crops(crops)
        channels = self.compiled.output_shape[0]
        out = np.empty((len(crops), channels, 4), np.float64)
        taps, permutation = gaussian_taps(smooth), _permutation(mirror)
        self.plan.run_crops_decoded(crops, mean, std, bool(sigmoid), float(min_peak), taps, permutation, out)
        return _decoded(out, (len(crops), channels))

    def _faces(self, gray: np.ndarray, matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.compiled.input_shape[0] != 1:
            raise ValueError(f"run_faces: the network takes {self.compiled.input_shape[0]} channels, not one gray")
        gray = np.ascontiguousarray(gray)
        if gray.dtype != np.uint8 or gray.ndim != 2:
            raise ValueError(f"run_faces: the image must be uint8 (H, W), got {gray.dtype} {gray.shape}")
        given = np.asarray(matrices, np.float64)
        if given.ndim != 3 or given.shape[1:] not in ((2, 3), (3, 3)):
            raise ValueError(f"run_faces: matrices must be finite (B, 2 or 3, 3), got shape {given.shape}")
        return gray, np.ascontiguousarray(given[:, :2])  # the native call refuses non-finite ones

    def run_faces(self, gray: np.ndarray, matrices: np.ndarray, mean: float, std: float, mirror=None) -> np.ndarray:
        """run_crops on the crops cv2.warpAffine would make from a uint8 gray image (H, W) with `matrices`
        (B, 2 or 3, 3; image -> crop; bilinear, 0 outside), bit for bit, sampled in the native call."""
        gray, matrices = self._faces(gray, matrices)
        out = np.empty((len(matrices), *self.compiled.output_shape), np.float32)
        self.plan.run_faces(gray, gray.shape[0], gray.shape[1], matrices, mean, std, _permutation(mirror), out)
        return out

    def run_faces_decoded(
        self,
        gray,
        matrices,
        mean: float,
        std: float,
        sigmoid: bool,
        stride: float,
        min_peak: float = 1e-6,
        smooth: float = 0.0,
        mirror=None,
    ) -> Decoded:
        """run_faces, its heatmaps decoded in the same native call (as run_crops_decoded) and the points
        mapped to image pixels (a map cell is `stride` crop pixels, as OutputSpace "heatmap" has it)."""
        gray, matrices = self._faces(gray, matrices)
        channels = self.compiled.output_shape[0]
        out = np.empty((len(matrices), channels, 4), np.float64)
        self.plan.run_faces_decoded(
            gray,
            gray.shape[0],
            gray.shape[1],
            matrices,
            mean,
            std,
            bool(sigmoid),
            float(min_peak),
            gaussian_taps(smooth),
            float(stride),
            _permutation(mirror),
            out,
        )
        return _decoded(out, (len(matrices), channels))


def _permutation(mirror) -> np.ndarray:
    """A test-time flip's channel permutation as the plan takes it: int32, empty for none."""
    return np.zeros(0, np.int32) if mirror is None else np.ascontiguousarray(mirror, np.int32)


def _decoded(out: np.ndarray, lead: tuple) -> Decoded:
    """decode_heatmaps' (..., 4) rows (x, y, confidence, valid) as a Decoded of shape `lead` (views of
    `out`: after a network run numpy's code is out of cache, and every call costs microseconds)."""
    if out.shape[:-1] != lead:
        out = out.reshape(*lead, 4)
    return Decoded(out[..., :2], out[..., 2], out[..., 3].astype(bool))  # the flags are 0.0 or 1.0


def decode_heatmaps(maps: np.ndarray, sigmoid: bool, min_peak: float = 1e-6, smooth: float = 0.0) -> Decoded:
    """`bitface.data.heatmaps.decode_argmax` in C, for (..., N, H, W) maps (float32 as the runtime
    writes them); the numpy decoder where the extension is not built or BITFACE_RUNTIME=reference."""
    if kernel_path() == "reference":
        return decode_argmax(maps, min_peak=min_peak, activation=sigmoid_function if sigmoid else None, smooth=smooth)
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    if maps.ndim < 3:
        raise ValueError(f"heatmaps must be (..., N, H, W), got shape {maps.shape}")
    *lead, h, w = maps.shape
    out = np.empty((int(np.prod(lead)), 4), np.float64)
    _native.decode_heatmaps(maps, h, w, bool(sigmoid), float(min_peak), gaussian_taps(smooth), out)
    return _decoded(out, tuple(lead))
