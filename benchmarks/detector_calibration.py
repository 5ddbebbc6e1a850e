"""Fit and measure the detector box calibration of the 5-point models (the CUHK box convention).

    python benchmarks/detector_calibration.py    # writes src/bitface/bundled/detector_calibration.json
                                                 # and benchmarks/results/detector_calibration.{json,md}

Fit: the detector runs on CUHK training images; each annotated face is matched to the detection of
largest IoU (>= 0.3); the calibration is the median offset and scale from detection to annotation.
Measure, on CUHK test: the miss rate (faces with no detection of IoU >= 0.3, counted, not dropped),
and the NME of the detected faces with calibrated detector boxes against the annotated boxes, for
each bundled model.
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
from bitface.detect import CALIBRATION_FILE, BoxCalibration, box_iou, get_detector  # noqa: E402
from bitface.evaluate.metrics import nme_per_face  # noqa: E402
from bitface.evaluate.results import markdown_table, provenance, write_results  # noqa: E402
from bitface.io import read_annotations  # noqa: E402
from bitface.io.images import load_image  # noqa: E402
from bitface.schemes import get_scheme  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cuhk_lfw_net_5pt"
TRAIN = DATA / "trainImageList_subset.txt"
TEST = DATA / "testImageList.txt"
MIN_IOU = 0.3
SCHEME = get_scheme("5pt")


def match(detector, samples, calibration: BoxCalibration | None = None):
    """Per sample: (calibrated detector box, score) of the best-overlapping detection, or None."""
    calibration = calibration or BoxCalibration()
    found = []
    for sample in samples:
        gray = load_image(sample.image_path, "gray")
        boxes = [(calibration.apply(d.box), d.score) for d in detector(gray)]
        best = max(boxes, key=lambda b: box_iou(b[0], sample.box), default=None)
        found.append(best if best is not None and box_iou(best[0], sample.box) >= MIN_IOU else None)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="opencv-haar")
    parser.add_argument("--fit-faces", type=int, default=2000, help="training faces used for the fit")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    detector = get_detector(args.detector)
    train = read_annotations(TRAIN, check="exists").samples[: args.fit_faces]
    pairs = [(m[0], s.box) for m, s in zip(match(detector, train), train, strict=True) if m is not None]
    calibration = BoxCalibration.fit(np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    print(f"fit on {len(pairs)} of {len(train)} training faces: {calibration}", flush=True)

    test = read_annotations(TEST, check="exists").samples
    matched = match(detector, test, calibration)
    detected = [i for i, m in enumerate(matched) if m is not None]
    rows = []
    for entry in bundled.list_models():
        lm = Landmarker(entry["name"], detector="none")
        images = [load_image(test[i].image_path, "gray") for i in detected]
        with_truth = lm.batch(images, [[test[i].box] for i in detected])
        with_detector = lm.batch(images, [[matched[i][0]] for i in detected])
        truth = np.stack([test[i].points for i in detected])
        boxes = np.stack([test[i].box for i in detected])
        nme_truth, nme_det = (
            float(np.mean(nme_per_face(np.stack([f[0].points for f in faces]), truth, SCHEME, "box_width", boxes)))
            * 100
            for faces in (with_truth, with_detector)
        )
        rows.append(
            {
                "model": entry["name"],
                "faces": len(test),
                "detected": len(detected),
                "miss_rate": 1 - len(detected) / len(test),
                "nme_annotated_box": nme_truth,
                "nme_detector_box": nme_det,
                "relative_increase": nme_det / nme_truth - 1,
            }
        )
        print(rows[-1], flush=True)
    table_path = ROOT / "src" / "bitface" / "bundled" / CALIBRATION_FILE
    table = json.loads(table_path.read_text()) if table_path.is_file() else {}
    table.setdefault(args.detector, {})["cuhk"] = {
        "calibration": calibration.__dict__,
        "fitted_on": f"{len(pairs)} faces of {TRAIN.name}",
        "command": "python benchmarks/detector_calibration.py",
    }
    table_path.write_text(json.dumps(table, indent=2) + "\n")
    data = {
        "provenance": provenance(detector=args.detector, test_set=str(TEST.relative_to(ROOT.parent))),
        "calibration": calibration.__dict__,
        "fit_faces": len(pairs),
        "rows": rows,
    }
    body = (
        f"Calibration of `{args.detector}` boxes to CUHK boxes, fitted on {len(pairs)} training faces: "
        f"{calibration}.\n\nCUHK test; NME in % of the annotated box width, over the detected faces.\n\n"
        + markdown_table(
            rows,
            ["model", "faces", "detected", "miss_rate", "nme_annotated_box", "nme_detector_box", "relative_increase"],
            {"miss_rate": ".1%", "nme_annotated_box": ".3f", "nme_detector_box": ".3f", "relative_increase": "+.1%"},
        )
    )
    write_results(ROOT / "benchmarks" / "results" / "detector_calibration", data, "Detector box calibration", body)


if __name__ == "__main__":
    main()
