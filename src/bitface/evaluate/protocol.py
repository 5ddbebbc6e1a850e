"""Scoring a model on an annotated set: the one path `bitface eval` and the benchmarks use.

Any model with `scheme`, `predict_samples(samples, progress=...)` and `crop_for(sample)` works
(a torch checkpoint now, a packed runtime model later). Faces whose image cannot be read are
counted in the report, never dropped silently.
"""

from __future__ import annotations

import numpy as np

from ..io.sample import Sample
from .report import Report, evaluate


def evaluate_model(
    model, samples: list[Sample], normalizer: str | None = None, name: str = "test", progress=None
) -> Report:
    """Predict every face and score it under one normalizer (default: the scheme's)."""
    return evaluate_model_under(model, samples, [normalizer], name, progress)[normalizer]


def evaluate_model_under(
    model, samples: list[Sample], normalizers: list[str | None], name: str = "test", progress=None
) -> dict[str | None, Report]:
    """One prediction pass, scored under each normalizer; each report says how faces were cropped
    and how many were skipped."""
    result = model.predict_samples(samples, progress=progress)
    if not result.indices:
        first = f"; first error: {result.errors[0]}" if result.errors else ""
        raise ValueError(f"{name}: no face could be predicted ({len(result.errors)} failed){first}")
    kept = [samples[i] for i in result.indices]
    gt = np.stack([s.points for s in kept])
    yaw = np.array([s.pose[0] for s in kept]) if all(s.pose is not None for s in kept) else None
    reports = {}
    for normalizer in normalizers:
        boxes = reference_boxes(kept, normalizer or model.scheme.default_normalizer)
        report = evaluate(result.points, gt, model.scheme, normalizer, boxes, yaw, name)
        report.extra["skipped"] = len(result.errors)
        report.extra["skipped_errors"] = result.errors[:20]
        report.extra["crop"] = _describe_crops(model, kept)
        reports[normalizer] = report
    return reports


def reference_boxes(samples: list[Sample], normalizer: str) -> np.ndarray | None:
    """The boxes a normalizer measures: the head boxes for ``head`` (every sample must have one),
    the annotated face boxes for the others when every sample has one, else None."""
    if normalizer == "head":
        missing = [s.source for s in samples if s.attributes.get("head_box") is None]
        if missing:
            raise ValueError(f"normalizer 'head' needs head boxes; {len(missing)} samples lack one, first {missing[0]}")
        return np.stack([s.attributes["head_box"] for s in samples])
    return np.stack([s.box for s in samples]) if all(s.box is not None for s in samples) else None


def _describe_crops(model, samples: list[Sample]) -> str:
    sources = {model.crop_for(s).source for s in samples}
    if sources == {"box"}:
        return "annotated face boxes"
    if sources == {"points"}:
        return "tight box of the ground-truth points, scaled to frame faces as the training boxes did"
    return "annotated boxes where present, else the calibrated box of the ground-truth points"
