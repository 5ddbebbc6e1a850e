"""A preprocessed cache: each face decoded once and stored as a larger square patch around its crop
(so augmentation still has context to rotate and zoom into), keyed by the samples and settings."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..io.sample import DataError, Sample
from . import geometry
from .crop import CropSpec
from .pipeline import InputSpec, load_for


class PatchCache:
    """Patches of side `crop.size * context * oversample` centred on each face's crop.

    `matrices[i]` maps original-image coordinates into patch i. Samples whose image cannot be
    decoded are dropped and listed in `errors` (lenient), or raise (strict).
    """

    VERSION = 1

    def __init__(self, patches: np.ndarray, matrices: np.ndarray, kept: list[int], errors: list[str]):
        self.patches = patches
        self.matrices = matrices
        self.kept = kept
        self.errors = errors

    @classmethod
    def build(
        cls,
        samples: list[Sample],
        crop: CropSpec,
        spec: InputSpec,
        directory: str | Path | None = None,
        context: float = 2.0,
        oversample: float = 1.5,
        strict: bool = False,
        progress: bool = True,
    ) -> PatchCache:
        side_px = int(round(crop.size * context * oversample))
        key = cls._key(samples, crop, spec, context, side_px)
        if directory is not None:
            directory = Path(directory)
            stem = directory / f"patches-{key}"
            if stem.with_suffix(".json").is_file():
                return cls._load(stem)
        shape = (len(samples), side_px, side_px) + (() if spec.channels == 1 else (3,))
        patches = np.zeros(shape, dtype=np.uint8)
        matrices = np.zeros((len(samples), 3, 3))
        kept, errors = [], []
        for i, sample in enumerate(tqdm(samples, desc="caching crops", disable=not progress, leave=False)):
            centre, side = crop.square(crop.box_of(sample))
            matrix = geometry.crop_matrix(centre, side * context, side_px)
            try:
                image = load_for(sample, spec)
            except DataError as exc:
                if strict:
                    raise
                errors.append(str(exc))
                continue
            patches[i] = geometry.warp(image, matrix, side_px)
            matrices[i] = matrix
            kept.append(i)
        cache = cls(patches, matrices, kept, errors)
        if directory is not None:
            cache._save(stem)
        return cache

    @staticmethod
    def _key(samples, crop, spec, context, side_px) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps([PatchCache.VERSION, asdict(crop), asdict(spec), context, side_px]).encode())
        for s in samples:
            digest.update(str(s.image_path).encode())
            digest.update(np.ascontiguousarray(crop.box_of(s)).tobytes())
        return digest.hexdigest()[:16]

    def _save(self, stem: Path) -> None:
        # Two training runs started together build the same cache: each writes its own temporary file
        # and renames it into place (the contents are equal, the last rename wins); the .json, which
        # marks the cache complete, comes last.
        stem.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=stem.parent, prefix=stem.name, suffix=".tmp.npz", delete=False) as f:
            np.savez(f, patches=self.patches, matrices=self.matrices, kept=np.array(self.kept, dtype=np.int64))
        Path(f.name).replace(stem.with_suffix(".npz"))
        with tempfile.NamedTemporaryFile("w", dir=stem.parent, prefix=stem.name, suffix=".tmp.json", delete=False) as f:
            json.dump({"version": self.VERSION, "errors": self.errors}, f)
        Path(f.name).replace(stem.with_suffix(".json"))

    @classmethod
    def _load(cls, stem: Path) -> PatchCache:
        meta = json.loads(stem.with_suffix(".json").read_text())
        with np.load(stem.with_suffix(".npz")) as data:
            return cls(data["patches"], data["matrices"], data["kept"].tolist(), meta["errors"])
