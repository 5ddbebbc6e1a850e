"""A trained model on disk: a safetensors file of weights whose metadata says how to rebuild the
network and how faces are cropped and decoded, so it predicts on images with nothing else at hand.
safetensors cannot run code when loaded (unlike a pickle).

Metadata keys (JSON strings under "bitface"): model {name, options}, scheme, crop, fallback_crop
(for faces with no box: a crop from the points calibrated to the training boxes), input, output,
heatmap, and free-form info (recipe, epoch, metrics).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..data.crop import CropSpec
from ..data.pipeline import InputSpec
from ..data.predictor import CroppedPredictor, settings_from
from ..io.sample import DataError, Sample
from ..schemes import Scheme, tight_boxes
from .registry import create_model

FORMAT_VERSION = 1


@dataclass
class LandmarkModel(CroppedPredictor):
    """A network plus everything needed to run it on faces in original images."""

    network: nn.Module
    model_name: str
    model_options: dict
    scheme: Scheme
    crop: CropSpec
    input: InputSpec
    output: str = "normalized"
    heatmap_stride: int = 4
    heatmap_activation: str = "none"
    heatmap_smooth: float = 0.0
    fallback_crop: CropSpec | None = None
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.network.eval()
        dtype = next(self.network.parameters()).dtype  # float64 after network.double(): a precision reference
        return self.network(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dtype)).numpy()

    def metadata(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "model": {"name": self.model_name, "options": self.model_options},
            **self.settings(),
            "info": self.info,
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically (a temporary file renamed over the target), so a crash never leaves half a model."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tensors = {k: v.detach().contiguous().clone() for k, v in self.network.state_dict().items()}
        save_file(tensors, str(tmp), metadata={"bitface": json.dumps(self.metadata())})
        os.replace(tmp, path)
        return path


def load_model(path: str | Path) -> LandmarkModel:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such model file")
    try:
        with safe_open(str(path), "pt") as handle:
            raw = (handle.metadata() or {}).get("bitface")
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path}: not a readable safetensors model file ({exc})") from None
    if raw is None:
        raise DataError(f"{path}: a safetensors file without bitface metadata (not a bitface model)")
    meta = json.loads(raw)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: model format {meta.get('format_version')} (this bitface reads {FORMAT_VERSION})")
    try:
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["model"]["options"].items()}
        network = create_model(meta["model"]["name"], **options)
        network.load_state_dict(tensors)
        return LandmarkModel(
            network=network.eval(),
            model_name=meta["model"]["name"],
            model_options=options,
            info=meta.get("info", {}),
            **settings_from(meta),
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path}: inconsistent model file: {exc}") from None


def calibrate_points_crop(samples: list[Sample], crop: CropSpec) -> CropSpec | None:
    """A crop from the tight box of the points that matches, in median, the crop the annotated boxes
    give: for test sets without face boxes (e.g. MTFL), so the network sees faces framed as in training.
    None when no sample has a box."""
    with_box = [s for s in samples if s.box is not None]
    if not with_box or crop.source != "box":
        return None
    points_boxes = tight_boxes(np.stack([s.points for s in with_box]))
    ratios, shifts_x, shifts_y = [], [], []
    for sample, pbox in zip(with_box, points_boxes, strict=True):
        centre, side = crop.square(np.asarray(sample.box, dtype=np.float64))
        width, height = pbox[2] - pbox[0], pbox[3] - pbox[1]
        if width <= 0 or height <= 0:
            continue
        ratios.append(side / max(width, height))
        shifts_x.append((centre[0] - (pbox[0] + pbox[2]) / 2) / width)
        shifts_y.append((centre[1] - (pbox[1] + pbox[3]) / 2) / height)
    if not ratios:
        return None
    return CropSpec(
        size=crop.size,
        source="points",
        margin=(float(np.median(ratios)) - 1) / 2,
        shift_x=float(np.median(shifts_x)),
        shift_y=float(np.median(shifts_y)),
    )
