"""An evaluation report: one set of predictions scored under one normalizer, written as JSON,
Markdown and a CED plot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..schemes import Scheme, normalizing_distances
from . import metrics

PCKH_THRESHOLD = 0.5


@dataclass
class Report:
    name: str
    scheme: str
    normalizer: str
    box_source: str  # where box_width took its boxes from: "annotation", "points", or "head" / "n/a"
    faces: int
    nme: float  # percent
    auc: dict[str, float]  # threshold -> AUC
    fr: dict[str, float]  # threshold -> failure rate (fraction)
    per_point: list[float]  # percent
    per_face: np.ndarray = field(repr=False)  # fractions
    yaw: list[dict] | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = {
            "name": self.name,
            "scheme": self.scheme,
            "normalizer": self.normalizer,
            "box_source": self.box_source,
            "faces": self.faces,
            "nme": self.nme,
            "auc": self.auc,
            "fr": self.fr,
            "per_point_nme": self.per_point,
        }
        if self.yaw is not None:
            data["yaw_bins"] = [{**row, "nme": None if row["nme"] is None else 100 * row["nme"]} for row in self.yaw]
        data.update(self.extra)
        return data

    def markdown(self) -> str:
        thresholds = list(self.auc)
        head = (
            "| set | faces | normalizer | NME (%) | " + " | ".join(f"AUC@{t} | FR@{t} (%)" for t in thresholds) + " |"
        )
        rule = "|" + "---|" * (4 + 2 * len(thresholds))
        row = (
            f"| {self.name} | {self.faces} | {self.normalizer} | {self.nme:.3f} | "
            + " | ".join(f"{self.auc[t]:.4f} | {100 * self.fr[t]:.2f}" for t in thresholds)
            + " |"
        )
        lines = [head, rule, row]
        if "pckh" in self.extra:
            pckh = self.extra["pckh"]
            lines.append(f"\nPCKh@{pckh['threshold']}: {pckh['total']:.2f}% of annotated joints")
        if self.box_source == "points":
            lines.append("\nbox_width uses the tight box of the ground-truth points (the set has no face boxes).")
        if self.yaw:
            lines += ["", "| yaw | faces | NME (%) |", "|---|---|---|"]
            lines += [
                f"| [{r['yaw'][0]}, {r['yaw'][1]}) | {r['faces']} | "
                + ("-" if r["nme"] is None else f"{100 * r['nme']:.3f}")
                + " |"
                for r in self.yaw
            ]
        return "\n".join(lines) + "\n"

    def save(self, stem: str | Path) -> list[Path]:
        """Write STEM.json, STEM.md and STEM_ced.png."""
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        paths = [stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_name(stem.name + "_ced.png")]
        paths[0].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        paths[1].write_text(self.markdown())
        plot_ced({self.name: self.per_face}, self.normalizer, paths[2])
        return paths


def evaluate(
    pred: np.ndarray,
    gt: np.ndarray,
    scheme: Scheme,
    normalizer: str | None = None,
    boxes: np.ndarray | None = None,
    yaw: np.ndarray | None = None,
    name: str = "test",
) -> Report:
    """Score predictions (B, N, 2) against ground truth in the same (original image) coordinates."""
    normalizer = normalizer or scheme.default_normalizer
    if normalizer not in metrics.THRESHOLDS:
        raise ValueError(f"unknown normalizer {normalizer!r}; choose one of {', '.join(metrics.THRESHOLDS)}")
    gt = np.asarray(gt, dtype=np.float64)
    errors = metrics.point_errors(pred, gt)
    distances = normalizing_distances(scheme, normalizer, gt, boxes)
    per_face = metrics.face_means(errors) / distances
    normalized = errors / distances[:, None]
    thresholds = metrics.THRESHOLDS[normalizer]
    box_source = {"box_width": "annotation" if boxes is not None else "points", "head": "head"}
    report = Report(
        name=name,
        scheme=scheme.name,
        normalizer=normalizer,
        box_source=box_source.get(normalizer, "n/a"),
        faces=len(gt),
        nme=float(100 * per_face.mean()),
        auc={str(t): metrics.auc(per_face, t) for t in thresholds},
        fr={str(t): metrics.failure_rate(per_face, t) for t in thresholds},
        per_point=[float(100 * np.nanmean(col)) if np.isfinite(col).any() else None for col in normalized.T],
        per_face=per_face,
        yaw=metrics.yaw_bins(per_face, yaw) if yaw is not None else None,
    )
    if normalizer == "head":  # human pose: PCKh@0.5 is the number the field reports
        total, per_joint = metrics.pck(normalized, PCKH_THRESHOLD)
        report.extra["pckh"] = {
            "threshold": PCKH_THRESHOLD,
            "total": 100 * total,
            "per_joint": {
                name: None if np.isnan(v) else 100 * float(v)
                for name, v in zip(scheme.point_names, per_joint, strict=True)
            },
        }
    return report


LINE_STYLES = ("-", "--", ":", "-.")


def line_style(i: int) -> tuple[str, str]:
    """The colour and line style of a panel's i-th curve: the ten tab10 colours, then again dashed, and so
    on (40 distinct curves before any repeats)."""
    colour, style = divmod(i, 10)[::-1]
    return f"C{colour}", LINE_STYLES[style % len(LINE_STYLES)]


def plot_ced(
    curves: dict[str, np.ndarray],
    normalizer: str,
    path: str | Path,
    max_error: float | None = None,
    panels: dict[str, list[str]] | None = None,
) -> Path:
    """CED curves of one or more methods (per-face errors as fractions) as a PNG. `panels` (title: the
    labels drawn on it) puts groups of curves on axes of their own, one above the other (an ablation's
    rows apart from the longer runs); every curve goes on exactly one. Past a few curves a panel's legend
    moves beside its axes, and colours repeat only with another line style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = panels or {"": list(curves)}
    placed = [label for labels in panels.values() for label in labels]
    problems = {
        "on no panel": sorted(set(curves) - set(placed)),
        "on more than one": sorted({label for label in placed if placed.count(label) > 1}),
        "with no curve": sorted(set(placed) - set(curves)),
    }
    if any(problems.values()):
        said = "; ".join(f"{what}: {labels}" for what, labels in problems.items() if labels)
        raise ValueError(f"plot_ced panels: every curve goes on exactly one panel; {said}")
    max_error = max_error or max(metrics.THRESHOLDS[normalizer])
    most = max(len(labels) for labels in panels.values())
    beside = most > 6
    height = max(3.5, 0.2 * most + 1.0) if beside else 3.5
    fig, axes = plt.subplots(len(panels), 1, figsize=(8 if beside else 5, height * len(panels)), dpi=120, squeeze=False)
    for ax, (title, labels) in zip(axes[:, 0], panels.items(), strict=True):
        for i, label in enumerate(labels):
            errors = curves[label]
            x, y = metrics.ced(errors, max_error)
            colour, style = line_style(i)
            label = f"{label} (AUC {metrics.auc(errors, max_error):.3f})"
            ax.plot(100 * x, 100 * y, label=label, color=colour, linestyle=style)
        ax.set_xlabel(f"NME ({normalizer}, %)")
        ax.set_ylabel("faces (%)")
        ax.set_xlim(0, 100 * max_error)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        if title:
            ax.set_title(title, fontsize=10)
        if beside:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
        else:
            ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
