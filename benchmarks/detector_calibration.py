"""Fit and measure the detector box calibrations of the bundled models, one per box convention.

    python benchmarks/detector_calibration.py    # writes src/bitface/bundled/detector_calibration.json
                                                 # and benchmarks/results/detector_calibration.{json,md}
    python benchmarks/detector_calibration.py --detector dlib-hog   # its entry in the same table, and
                                                 # benchmarks/results/detector_calibration_dlib-hog.{json,md}

Conventions: "cuhk" (the 5-point models: CUHK's annotated face boxes) and "ibug68-points" (the
68-point models: the tight box of the 68 points, which their crops grow by a margin).
Fit: the detector runs on training images; each face is matched to the detection of largest IoU
(>= 0.3) with its convention's box; the calibration is the median offset and scale from detection
to that box. Measure, on each convention's test set: the miss rate (faces with no detection of
IoU >= 0.3, counted, not dropped), and the NME of the detected faces with calibrated detector
boxes against boxes from the annotation, for each bundled model of that convention, without and
with one refinement pass. Refinement's own calibration ("landmarks" in the bundled table) maps the
tight box of a face's points to the convention's box: fitted on every training face's annotation
(identity for "ibug68-points", whose box is that tight box).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bitface import bundled  # noqa: E402
from bitface.api import Landmarker  # noqa: E402
from bitface.detect import CALIBRATION_FILE, LANDMARKS, BoxCalibration, box_iou, get_detector  # noqa: E402
from bitface.evaluate.metrics import nme_per_face  # noqa: E402
from bitface.evaluate.results import markdown_table, provenance, write_results  # noqa: E402
from bitface.io import read_annotations  # noqa: E402
from bitface.io.images import load_image  # noqa: E402
from bitface.schemes import get_scheme, tight_boxes  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MIN_IOU = 0.3
# Refinement passes a Landmarker makes by default, per convention: where the box is the points' own
# tight box (68 points), one pass, which takes back most of what a detector box costs. The 5-point
# models' box is extrapolated about 2x from 5 points; a pass gains them less (the table shows how much)
# and doubles their landmark time, which is what they are picked for: they keep the detector's box
# unless asked.
DEFAULT_PASSES = {"cuhk": 0, "ibug68-points": 1}
# convention: train sources, test source, scheme, normalizer, where the target box comes from
CONVENTIONS = {
    "cuhk": (
        [DATA / "cuhk_lfw_net_5pt" / "trainImageList_subset.txt"],
        DATA / "cuhk_lfw_net_5pt" / "testImageList.txt",
        "5pt",
        "box_width",
        "annotated face box",
    ),
    "ibug68-points": (
        [DATA / "300w_helen_68pt" / "trainset", DATA / "ytf_68pt" / "training"],
        DATA / "300w_helen_68pt" / "testset",
        "68pt",
        "interocular",
        "tight box of the 68 points",
    ),
}


def target_box(sample, convention: str) -> np.ndarray:
    if convention == "cuhk":
        return np.asarray(sample.box, dtype=np.float64)
    return tight_boxes(sample.points[None])[0]


def match(detector, samples, convention: str, calibration: BoxCalibration | None = None):
    """Per sample: (calibrated detector box, score, raw detector box) of the best-overlapping
    detection, or None."""
    calibration = calibration or BoxCalibration()
    found = []
    for sample in samples:
        gray = load_image(sample.image_path, "gray")
        target = target_box(sample, convention)
        boxes = [(calibration.apply(d.box), d.score, d.box) for d in detector(gray)]
        best = max(boxes, key=lambda b: box_iou(b[0], target), default=None)
        found.append(best if best is not None and box_iou(best[0], target) >= MIN_IOU else None)
    return found


def spread(samples: list, count: int) -> list:
    """`count` samples spread evenly over the list (every source of a joined list gets its share)."""
    if len(samples) <= count:
        return samples
    return [samples[i] for i in np.linspace(0, len(samples) - 1, count).round().astype(int)]


def command(detector) -> str:
    return "python benchmarks/detector_calibration.py" + (
        "" if detector.name == "opencv-haar" else f" --detector {detector.name}"
    )


def calibrate(detector, convention: str, fit_faces: int) -> tuple[dict, list[dict]]:
    train_sources, test_source, scheme_name, normalizer, box_source = CONVENTIONS[convention]
    scheme = get_scheme(scheme_name)
    every_train = [s for src in train_sources for s in read_annotations(src, check="exists").samples]
    train = spread(every_train, fit_faces)
    # Refinement's calibration: from the tight box of a face's points to the convention's box.
    points_boxes = tight_boxes(np.stack([s.points for s in every_train]))
    from_points = BoxCalibration.fit(points_boxes, np.stack([target_box(s, convention) for s in every_train]))
    print(f"{convention}: landmarks to box: {from_points}", flush=True)
    # A loose first fit brings detections of a differently framed convention over the IoU gate.
    rough = BoxCalibration()
    for _ in range(2):
        found = match(detector, train, convention, rough)
        pairs = [(m[2], target_box(s, convention)) for m, s in zip(found, train, strict=True) if m]
        rough = BoxCalibration.fit(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    calibration = rough
    print(f"{convention}: fit on {len(pairs)} of {len(train)} training faces: {calibration}", flush=True)

    test = read_annotations(test_source, check="exists").samples
    matched = match(detector, test, convention, calibration)
    detected = [i for i, m in enumerate(matched) if m is not None]
    rows = []
    for entry in bundled.list_models():
        if entry.get("box_convention", "cuhk") != convention:
            continue
        lm = Landmarker(entry["name"], detector="none")  # the boxes come from `matched`
        lm.landmark_calibration = from_points  # the fit this run bundles, not the one bundled before it
        images = [load_image(test[i].image_path, "gray") for i in detected]
        with_truth = lm.batch(images, [[target_box(test[i], convention)] for i in detected])
        with_detector = lm.batch(images, [[matched[i][0]] for i in detected], refine=0)
        refined = lm.batch(images, [[matched[i][0]] for i in detected], refine=1)
        truth = np.stack([test[i].points for i in detected])
        boxes = np.stack([target_box(test[i], convention) for i in detected])
        nme_truth, nme_det, nme_refined = (
            float(np.mean(nme_per_face(np.stack([f[0].points for f in faces]), truth, scheme, normalizer, boxes))) * 100
            for faces in (with_truth, with_detector, refined)
        )
        rows.append(
            {
                "convention": convention,
                "model": entry["name"],
                "test_set": str(test_source.relative_to(DATA)),
                "normalizer": normalizer,
                "faces": len(test),
                "detected": len(detected),
                "miss_rate": 1 - len(detected) / len(test),
                "nme_annotated_box": nme_truth,
                "nme_detector_box": nme_det,
                "relative_increase": nme_det / nme_truth - 1,
                "nme_refined": nme_refined,
                "refined_increase": nme_refined / nme_truth - 1,
            }
        )
        print(rows[-1], flush=True)
    fit = {
        "calibration": calibration.__dict__,
        "landmark_calibration": from_points.__dict__,
        "target": box_source,
        "fitted_on": f"{len(pairs)} faces of {', '.join(str(p.relative_to(DATA)) for p in train_sources)}",
        "train_sets": ", ".join(str(p.relative_to(DATA)) for p in train_sources),
        "test_set": str(test_source.relative_to(DATA)),
        "detected": len(detected),
        "faces": len(test),
        "miss_rate": 1 - len(detected) / len(test),
        "command": command(detector),
    }
    return fit, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="opencv-haar")
    parser.add_argument("--fit-faces", type=int, default=2000, help="training faces used for each fit")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    detector = get_detector(args.detector)
    table_path = ROOT / "src" / "bitface" / "bundled" / CALIBRATION_FILE
    table = json.loads(table_path.read_text()) if table_path.is_file() else {}
    fits, rows = {}, []
    for convention in CONVENTIONS:
        fits[convention], convention_rows = calibrate(detector, convention, args.fit_faces)
        rows += convention_rows
        table.setdefault(args.detector, {})[convention] = {
            k: fits[convention][k] for k in ("calibration", "target", "fitted_on", "command")
        }
        table.setdefault(LANDMARKS, {})[convention] = {
            "calibration": fits[convention]["landmark_calibration"],
            "target": fits[convention]["target"],
            "fitted_on": "every training face's annotated points: " + fits[convention]["train_sets"],
            "default_passes": DEFAULT_PASSES[convention],
            "command": "python benchmarks/detector_calibration.py",
        }
    table_path.write_text(json.dumps(table, indent=2) + "\n")
    data = {"provenance": provenance(detector=args.detector), "calibrations": fits, "rows": rows}
    body = "".join(
        f"- `{args.detector}` to {c} ({f['target']}), fitted on {f['fitted_on']}: "
        f"{BoxCalibration(**f['calibration'])}; "
        f"test {f['test_set']}: {f['detected']} of {f['faces']} faces detected (miss rate {f['miss_rate']:.1%})\n"
        for c, f in fits.items()
    )
    body += "".join(
        f"- refinement to {c}: the predicted points' tight box, then {BoxCalibration(**f['landmark_calibration'])}\n"
        for c, f in fits.items()
    )
    body += (
        "\nNME of the detected faces (% of the annotated box width for cuhk, inter-ocular for 68 points): "
        "from the annotation's box (as in training and in the models' test figures), from the calibrated "
        "detector box alone (`refine=0`), and after one refinement pass that crops again from the box "
        "of the first pass's points (`refine=1`; the Landmarker's default for the 68-point models, "
        "whose box is the points' own; the 5-point ones default to 0).\n\n"
    )
    body += markdown_table(
        rows,
        [
            "convention",
            "model",
            "test_set",
            "faces",
            "detected",
            "miss_rate",
            "nme_annotated_box",
            "nme_detector_box",
            "relative_increase",
            "nme_refined",
            "refined_increase",
        ],  # fmt: skip
        {
            "miss_rate": ".1%",
            "nme_annotated_box": ".3f",
            "nme_detector_box": ".3f",
            "relative_increase": "+.1%",
            "nme_refined": ".3f",
            "refined_increase": "+.1%",
        },
    )
    name = "detector_calibration" + ("" if args.detector == "opencv-haar" else f"_{args.detector}")
    write_results(ROOT / "benchmarks" / "results" / name, data, f"Detector box calibration: {args.detector}", body)


if __name__ == "__main__":
    main()
