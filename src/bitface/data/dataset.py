"""torch Dataset glue (needs the `train` extra). Each item is a dict of tensors:

    image   float32 (C, S, S)  normalized network input
    target  float32 (N, 2) points in the output space, or (N, H, W) heatmaps, or int64 (H, W) part
            classes (output "parts", see bitface.data.parts)
    points  float32 (N, 2) points in crop pixels
    matrix  float64 (3, 3) original image -> crop (for exact inverse mapping)
    index   int64         position in `samples`

Randomness comes from (seed, epoch, index), so results do not depend on worker count and a resumed
run sees exactly the augmentations it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..io.sample import Sample
from ..schemes import Scheme
from .augment import AugmentSpec
from .cache import PatchCache
from .crop import CropSpec
from .geometry import OutputSpace
from .heatmaps import gaussian_heatmaps
from .parts import part_labels
from .pipeline import InputSpec, load_for, make_example


@dataclass(frozen=True)
class HeatmapSpec:
    stride: int = 4
    sigma: float = 1.5


class LandmarkDataset(Dataset):
    def __init__(
        self,
        samples: list[Sample],
        scheme: Scheme,
        crop: CropSpec,
        input_spec: InputSpec | None = None,
        augment: AugmentSpec | None = None,
        output: str = "normalized",
        heatmap: HeatmapSpec | None = None,
        cache: PatchCache | None = None,
        seed: int = 0,
    ):
        if not samples:
            raise ValueError("no samples to build a dataset from")
        bad = [s.source for s in samples if s.num_points != scheme.num_points]
        if bad:
            raise ValueError(
                f"{len(bad)} samples do not have {scheme.num_points} points ({scheme.name}); first: {bad[0]}"
            )
        if output in ("heatmap", "parts"):
            heatmap = heatmap or HeatmapSpec()
            if crop.size % heatmap.stride:
                raise ValueError(f"crop size {crop.size} is not a multiple of the heatmap stride {heatmap.stride}")
            self.space = OutputSpace("heatmap", crop.size // heatmap.stride, heatmap.stride)
        else:
            self.space = OutputSpace(output, crop.size)
        if cache is not None and len(cache.patches) != len(samples):
            raise ValueError(f"the patch cache holds {len(cache.patches)} faces but {len(samples)} samples were given")
        self.output = output
        self.cache = cache
        # With a cache, faces whose image failed to decode are left out.
        self.indices = list(cache.kept) if cache is not None else list(range(len(samples)))
        self.samples = samples
        self.scheme = scheme
        self.crop = crop
        self.input_spec = input_spec or InputSpec()
        self.augment = augment
        self.heatmap = heatmap
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        index = self.indices[item]
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.cache is not None:
            image, source_matrix = self.cache.patches[index], self.cache.matrices[index]
        else:
            image, source_matrix = load_for(sample, self.input_spec), None
        example = make_example(image, sample, self.crop, self.scheme, self.augment, rng, source_matrix)
        targets = self.space.from_crop(example.points)
        if self.output == "parts":
            targets = part_labels(targets, self.space.size, self.space.size).astype(np.int64)
        elif self.space.kind == "heatmap":
            targets = gaussian_heatmaps(targets, self.space.size, self.space.size, self.heatmap.sigma)
        else:
            targets = targets.astype(np.float32)
        return {
            "image": torch.from_numpy(self.input_spec.normalize(example.crop)),
            "target": torch.from_numpy(targets),
            "points": torch.from_numpy(example.points.astype(np.float32)),
            "matrix": torch.from_numpy(example.matrix),
            "index": torch.tensor(index),
        }


def make_loader(
    dataset: LandmarkDataset, batch_size: int, shuffle: bool, workers: int = 0, seed: int = 0
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=generator,
        persistent_workers=False,  # workers must see set_epoch(): they are re-created each epoch
        drop_last=False,
    )
