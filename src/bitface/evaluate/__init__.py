"""Metrics (NME variants, CED, AUC, FR, yaw bins, the paired difference of two models) and reports
(JSON, Markdown, CED plot)."""

from .metrics import (
    THRESHOLDS,
    PairedDifference,
    auc,
    ced,
    failure_rate,
    nme_per_face,
    paired_difference,
    point_errors,
    yaw_bins,
)
from .report import Report, evaluate, plot_ced

__all__ = [
    "THRESHOLDS",
    "PairedDifference",
    "Report",
    "auc",
    "ced",
    "evaluate",
    "failure_rate",
    "nme_per_face",
    "paired_difference",
    "plot_ced",
    "point_errors",
    "yaw_bins",
]
