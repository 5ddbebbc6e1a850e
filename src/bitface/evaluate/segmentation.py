"""Semantic segmentation scores (Long et al., FCN, as the binary hourglass paper's Table 15 reports
them): pixel accuracy, mean per-class accuracy and mean intersection over union, from one confusion
matrix accumulated over a whole test set."""

from __future__ import annotations

import numpy as np


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts, rows the true class, columns the predicted one."""
    truth, predicted = np.asarray(truth).ravel(), np.asarray(predicted).ravel()
    if truth.shape != predicted.shape:
        raise ValueError(f"{truth.size} true labels but {predicted.size} predicted ones")
    if truth.size and (truth.max() >= classes or predicted.max() >= classes):
        raise ValueError(f"labels must lie in 0..{classes - 1}")
    return np.bincount(truth.astype(np.int64) * classes + predicted, minlength=classes * classes).reshape(
        classes, classes
    )


def segmentation_scores(matrix: np.ndarray, names: tuple[str, ...]) -> dict:
    """Pixel accuracy, mean accuracy and mean IU (percent) of a confusion matrix, plus per-class
    accuracy and IU. Classes absent from the ground truth are left out of the means (FCN's rule)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    present = matrix.sum(1) > 0
    hits = np.diag(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = hits / matrix.sum(1)
        iou = hits / (matrix.sum(1) + matrix.sum(0) - hits)
    return {
        "pixel_accuracy": 100 * float(hits.sum() / matrix.sum()),
        "mean_accuracy": 100 * float(accuracy[present].mean()),
        "mean_iu": 100 * float(iou[present].mean()),
        "per_class": {
            name: {"accuracy": 100 * float(a), "iu": 100 * float(u)} if p else None
            for name, a, u, p in zip(names, accuracy, iou, present, strict=True)
        },
        "pixels": int(matrix.sum()),
    }
