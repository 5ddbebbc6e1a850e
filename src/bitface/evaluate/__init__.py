"""Metrics (NME variants, CED, AUC, FR, yaw bins) and reports (JSON, Markdown, CED plot)."""

from .metrics import THRESHOLDS, auc, ced, failure_rate, nme_per_face, point_errors, yaw_bins
from .report import Report, evaluate, plot_ced

__all__ = [
    "THRESHOLDS",
    "Report",
    "auc",
    "ced",
    "evaluate",
    "failure_rate",
    "nme_per_face",
    "plot_ced",
    "point_errors",
    "yaw_bins",
]
