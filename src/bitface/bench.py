"""`bitface bench`: the bundled models (and peers that are installed) measured in one run.

For each model: file size; accuracy on the test set of its scheme (CUHK test for 5 points, by the
annotated box width; 300-W HELEN testset for 68 points, inter-ocular), with crops from the ground
truth as in training; and single-thread latency per face, two ways: a uint8 crop in, points out (the
network and its decoding), and through the API like for like with the peers: a 256 x 256 gray image
and a face box in, points in image coordinates out (cropping included, detection left out). Every
candidate is timed in turn, round after round, pinned to one core.

Peers (measured only when installed, never downloaded): dlib's 68-point ERT shape predictor
(`pip install dlib-bin face_recognition_models`, or point BITFACE_DLIB_MODEL at
shape_predictor_68_face_landmarks.dat). dlib runs in its own setup: its HOG detector's box on each
test image; faces it does not detect are counted as misses, and its NME is over the faces it found.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import bundled
from .api import Landmarker
from .detect import box_iou
from .evaluate.metrics import auc, failure_rate, nme_per_face
from .evaluate.protocol import evaluate_model
from .io import read_annotations
from .io.images import load_image
from .runtime import load_packed_model
from .runtime.native import kernel_path
from .schemes import get_scheme, tight_boxes

# the like-for-like timing input: one 256 x 256 gray image and a face box in it
TIMING_IMAGE = np.zeros((256, 256), np.uint8)
TIMING_BOX = [64, 64, 192, 192]

# scheme: (test set under the data folder, normalizer, threshold for AUC and failure rate)
TEST_SETS = {
    "5pt": ("cuhk_lfw_net_5pt/testImageList.txt", "box_width", 0.06),
    "68pt": ("300w_helen_68pt/testset", "interocular", 0.08),
}


@dataclass
class Candidate:
    name: str
    kind: str
    scheme: str
    file_bytes: int
    face: object  # callable: one face from a uint8 crop (None for peers, which crop for themselves)
    image_face: object  # callable: one face from the timing image and box
    accuracy: dict = field(default_factory=dict)
    latency_us: list[float] = field(default_factory=list)
    image_latency_us: list[float] = field(default_factory=list)


def default_data() -> Path:
    return Path(os.environ.get("BITFACE_DATA", Path.cwd().parent / "shared" / "data"))


def bundled_candidates(names: list[str] | None, data: Path, max_faces: int | None) -> list[Candidate]:
    rows = bundled.list_models()
    unknown = set(names or []) - {r["name"] for r in rows}
    if unknown:
        raise ValueError(f"unknown bundled model(s) {sorted(unknown)}; see `bitface models`")
    out = []
    for row in rows:
        if names and row["name"] not in names:
            continue
        model = load_packed_model(row["path"])
        crop = np.random.default_rng(0).integers(0, 256, (1, model.crop.size, model.crop.size), dtype=np.uint8)
        if model.input.channels == 3:
            crop = np.repeat(crop[..., None], 3, -1)
        api = Landmarker(row["path"], detector="none")
        candidate = Candidate(
            row["name"],
            row["kind"],
            model.scheme.name,
            row["file_bytes"],
            lambda m=model, c=crop: m.predict_crops(c),
            lambda api=api: api(TIMING_IMAGE, boxes=[TIMING_BOX]),
        )
        candidate.accuracy = accuracy_of(model, data, max_faces)
        out.append(candidate)
    return out


def _test_samples(scheme: str, data: Path, max_faces: int | None):
    relative, normalizer, threshold = TEST_SETS[scheme]
    source = data / relative
    if not source.exists():
        return None, f"test set not found at {source}", normalizer, threshold
    samples = read_annotations(source, check="exists").samples[:max_faces]
    return samples, relative, normalizer, threshold


def accuracy_of(model, data: Path, max_faces: int | None) -> dict:
    samples, where, normalizer, threshold = _test_samples(model.scheme.name, data, max_faces)
    if samples is None:
        return {"note": where}
    report = evaluate_model(model, samples, normalizer, where)
    return {
        "test_set": where,
        "normalizer": normalizer,
        "faces": report.faces,
        "missed": report.extra["skipped"],
        "nme": report.nme,
        f"auc_{threshold}": report.auc[str(threshold)],
        f"fr_{threshold}": report.fr[str(threshold)],
        "boxes": "from the ground truth, as in training",
    }


def dlib_model_file() -> Path | None:
    env = os.environ.get("BITFACE_DLIB_MODEL")
    if env:
        return Path(env)
    # Found without importing the package: its __init__ needs pkg_resources, gone from new setuptools.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"


def dlib_candidate(data: Path, max_faces: int | None) -> Candidate | str:
    """dlib's 68-point ERT model as a peer, or why it is not measured."""
    try:
        import dlib
    except ImportError:
        return "dlib: not installed (pip install dlib-bin face_recognition_models)"
    path = dlib_model_file()
    if path is None or not path.is_file():
        return (
            "dlib: no shape_predictor_68_face_landmarks.dat (install face_recognition_models or set BITFACE_DLIB_MODEL)"
        )
    predictor = dlib.shape_predictor(str(path))
    detector = dlib.get_frontal_face_detector()

    def landmarks(gray, box):
        shape = predictor(gray, dlib.rectangle(*(int(round(v)) for v in box)))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    samples, where, normalizer, threshold = _test_samples("68pt", data, max_faces)
    candidate = Candidate(
        "dlib-ert68 (peer)",
        "real (ERT, dlib)",
        "68pt",
        path.stat().st_size,
        None,
        lambda: landmarks(TIMING_IMAGE, TIMING_BOX),
    )
    if samples is None:
        candidate.accuracy = {"note": where}
        return candidate
    scheme = get_scheme("68pt")
    predictions, truths, missed = [], [], 0
    for sample in samples:
        gray = load_image(sample.image_path, "gray")
        found = [[d.left(), d.top(), d.right(), d.bottom()] for d in detector(gray, 1)]
        target = tight_boxes(sample.points[None])[0]
        best = max(found, key=lambda b: box_iou(np.asarray(b, float), target), default=None)
        if best is None or box_iou(np.asarray(best, float), target) < 0.3:
            missed += 1
            continue
        predictions.append(landmarks(gray, best))
        truths.append(sample.points)
    errors = nme_per_face(np.stack(predictions), np.stack(truths), scheme, normalizer)
    candidate.accuracy = {
        "test_set": where,
        "normalizer": normalizer,
        "faces": len(predictions),
        "missed": missed,
        "nme": float(100 * errors.mean()),
        f"auc_{threshold}": auc(errors, threshold),
        f"fr_{threshold}": failure_rate(errors, threshold),
        "boxes": "dlib's own HOG detector (missed faces counted, not scored)",
    }
    return candidate


def time_interleaved(candidates: list[Candidate], rounds: int = 30, calls: int = 20) -> None:
    """Microseconds per face: each round times `calls` calls of every candidate's ways in turn."""
    ways = [(f, times) for c in candidates for f, times in ((c.face, c.latency_us), (c.image_face, c.image_latency_us))]
    ways = [(f, times) for f, times in ways if f is not None]
    for f, _ in ways:
        for _ in range(3):
            f()
    for _ in range(rounds):
        for f, times in ways:
            start = time.perf_counter()
            for _ in range(calls):
                f()
            times.append(1e6 * (time.perf_counter() - start) / calls)


def summary_rows(candidates: list[Candidate]) -> list[dict]:
    rows = []
    for c in candidates:
        acc = c.accuracy
        rows.append(
            {
                "model": c.name,
                "kind": c.kind,
                "scheme": c.scheme,
                "file_bytes": c.file_bytes,
                "test_set": acc.get("test_set", acc.get("note")),
                "faces": acc.get("faces"),
                "missed": acc.get("missed"),
                "nme": acc.get("nme"),
                "normalizer": acc.get("normalizer"),
                "latency_us_median": statistics.median(c.latency_us) if c.latency_us else None,
                "latency_us_min": min(c.latency_us) if c.latency_us else None,
                "api_latency_us_median": statistics.median(c.image_latency_us) if c.image_latency_us else None,
                "api_latency_us_min": min(c.image_latency_us) if c.image_latency_us else None,
                "accuracy": acc,
            }
        )
    return rows


def plot(rows: list[dict], path: Path) -> Path:
    """NME against latency, one panel per scheme, marker area by file size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schemes = sorted({r["scheme"] for r in rows if r["nme"] is not None})
    fig, axes = plt.subplots(1, max(len(schemes), 1), figsize=(6 * max(len(schemes), 1), 4.5), squeeze=False)
    for ax, scheme in zip(axes[0], schemes, strict=False):
        for r in (r for r in rows if r["scheme"] == scheme and r["nme"] is not None):
            area = 30 + 400 * np.sqrt(r["file_bytes"] / max(x["file_bytes"] for x in rows))
            ax.scatter(r["api_latency_us_median"], r["nme"], s=area, alpha=0.6)
            ax.annotate(f"{r['model']}\n{r['file_bytes'] / 1024:.0f} KiB", (r["api_latency_us_median"], r["nme"]),
                        fontsize=7, xytext=(5, 5), textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.margins(x=0.2, y=0.12)  # room right of and above the highest points for their labels
        ax.set(xlabel="latency per face, image and box in (µs, one thread, log scale)",
               ylabel=f"NME (%, {TEST_SETS[scheme][1]})", title=f"{scheme}: {TEST_SETS[scheme][0]}")  # fmt: skip
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("bitface bench: accuracy vs speed (marker area: file size)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_bench(
    names: list[str] | None = None,
    data: Path | None = None,
    out: Path | None = None,
    peers: bool = True,
    rounds: int = 30,
    max_faces: int | None = None,
) -> dict:
    from .evaluate.results import markdown_table, pin_single_thread, provenance, write_results

    data = data or default_data()
    core = pin_single_thread()
    candidates = bundled_candidates(names, data, max_faces)
    notes = []
    if peers:
        peer = dlib_candidate(data, max_faces)
        if isinstance(peer, str):
            notes.append(peer)
        else:
            candidates.append(peer)
    time_interleaved(candidates, rounds)
    rows = summary_rows(candidates)
    result = {
        "provenance": provenance(
            data=str(data), core=core, rounds=rounds, max_faces=max_faces, kernel_path=kernel_path()
        ),
        "latency": "per face, detection excluded; latency_us: a uint8 crop in, points out (peers: none); "
        "api_latency_us: a 256 x 256 gray image and a box in, points out (Landmarker; dlib's predictor)",
        "rows": rows,
        "notes": notes,
    }
    if out is not None:
        out = Path(out)
        picture = plot(rows, out.with_name(out.name + ".png"))
        columns = ["model", "kind", "scheme", "file_bytes", "test_set", "faces", "missed", "nme"]
        columns += ["latency_us_median", "api_latency_us_median"]
        body = (
            "NME in % (5pt: CUHK test by box width; 68pt: HELEN testset inter-ocular). Latency: median of "
            f"{rounds} interleaved rounds, one thread pinned to one core, detection excluded; latency_us: a "
            "uint8 crop in, points out; api_latency_us: a 256 x 256 gray image and a face box in, points in "
            "image coordinates out (our `Landmarker`, dlib's shape predictor): like for like.\n\n"
            + markdown_table(rows, columns, {"nme": ".3f", "latency_us_median": ".1f", "api_latency_us_median": ".1f"})
            + "".join(f"\n- {n}" for n in notes)
            + f"\n\n![accuracy vs speed]({picture.name})\n"
        )
        write_results(out, result, "bitface bench: bundled models and peers", body)
    return result
