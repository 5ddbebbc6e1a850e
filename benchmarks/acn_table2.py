"""Reproduce the ACN paper's Table 2: 4 structures x {CNN, XNOR-Net, ACN, 1-bit ACN} 5-point regressors.

    python benchmarks/acn_table2.py train    # trains the 16 recipes in configs/acn_table2/ (resumable)
    python benchmarks/acn_table2.py report   # evaluates them, writes benchmarks/results/acn_table2.{json,md,png}

`train` runs two recipes at a time, one thread each, in runs/acn_table2/<recipe>/; a run that was
stopped resumes from its last epoch, a finished one is skipped. `report` scores every finished model
(a row whose run folder is not on this machine keeps its committed result, and says so)
(the last epoch: the test set is never used to pick an epoch) on CUHK test (3,466 faces, crops from
the annotated boxes) and MTFL-AFLW (2,995 faces, no boxes: crops from the points' box calibrated to
the CUHK training boxes), under box_width and interpupil.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import trained_rows

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "acn_table2"
RUNS = ROOT / "runs" / "acn_table2"
DATA = ROOT.parent / "shared" / "data"
TEST_SETS = {
    "cuhk_test": DATA / "cuhk_lfw_net_5pt" / "testImageList.txt",
    "mtfl_aflw": DATA / "mtfl_aflw_5pt" / "testing.txt",
}
STRUCTURES = ("10-20-40-80", "20-40-60-80", "40-60-80-100", "20-20-40-40-60-60-80-80")
METHODS = ("cnn", "xnor", "acn", "acn1bit")
TRAIN_COST = {"10-20-40-80": 1, "20-40-60-80": 2, "40-60-80-100": 3, "20-20-40-40-60-60-80-80": 4}
# The ACN paper's Table 2 (CUHK test, NME % by face-box width, 10,000 training faces): theirs, not ours.
PAPER_TABLE2 = {
    "10-20-40-80": {"cnn": 2.1532, "acn": 2.2436, "acn1bit": 3.1224},
    "20-40-60-80": {"cnn": 2.06, "acn": 2.1925, "acn1bit": 3.0633},
    "40-60-80-100": {"cnn": 2.0190, "acn": 1.9429, "acn1bit": 2.8099},
    "20-20-40-40-60-60-80-80": {"cnn": 1.8994, "acn": 1.9000, "acn1bit": 3.1091},
}
BUNDLED = ROOT / "models"  # the best FP / ACN / 1-bit ACN models, committed with model cards
DEFAULT_MODEL = "regression5-cnn"  # the most accurate; the binary ones trade accuracy for speed
# beside the best model of each method: the smallest 1-bit network, for the lowest latency
FAST = {"name": "regression5-acn1bit-fast", "structure": "10-20-40-80", "method": "acn1bit"}


def recipe_path(structure: str, method: str) -> Path:
    return RECIPES / f"{structure}_{method}.yaml"


def run_folder(structure: str, method: str) -> Path:
    return RUNS / f"{structure}_{method}"


def train(parallel: int, methods: tuple[str, ...]) -> None:
    from bitface.train.queue import pending_command, run_queue

    jobs = []
    for structure in sorted(STRUCTURES, key=lambda s: -TRAIN_COST[s]):  # longest first: the short ones fill the end
        for method in methods:
            command = pending_command(recipe_path(structure, method), run_folder(structure, method))
            if command:
                jobs.append(command)
    run_queue(jobs, parallel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("train", "report", "bundle"), help="bundle: re-bundle from the results file")
    parser.add_argument("--parallel", type=int, default=2, help="recipes trained at once (one thread each)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS, help="train only these methods")
    args = parser.parse_args()
    if args.stage == "train":
        train(args.parallel, tuple(args.methods))
    elif args.stage == "bundle":
        rows = json.loads((ROOT / "benchmarks" / "results" / "acn_table2.json").read_text())["rows"]
        bundle(rows)
    else:
        report()


def score(structure: str, method: str, test_samples: dict) -> dict:
    from bitface.evaluate.protocol import evaluate_model_under
    from bitface.models.model_file import load_model
    from bitface.models.summary import summarize

    folder = run_folder(structure, method)
    model = load_model(folder / "model.safetensors")
    totals = summarize(model.network, (model.input.channels, model.crop.size, model.crop.size)).totals()
    row = {
        "row": f"{structure}_{method}",
        "structure": structure,
        "method": method,
        "params": totals["params"],
        "memory_bits": totals["memory_bits"],
        "fp32_bits": 32 * totals["params"],
        "nme": {},
        "nme_interpupil": {},
        "auc_box_width": {},
        **trained_rows.training_record(folder),
        "checkpoint": str((folder / "model.safetensors").relative_to(ROOT)),
        "recipe": str(recipe_path(structure, method).relative_to(ROOT)),
        "paper_nme_cuhk": PAPER_TABLE2[structure].get(method),
        "scored_from": "run",
    }
    for name, samples in test_samples.items():
        reports = evaluate_model_under(model, samples, ["box_width", "interpupil"], name)
        row["nme"][name] = reports["box_width"].nme
        row["nme_interpupil"][name] = reports["interpupil"].nme
        row["auc_box_width"][name] = reports["box_width"].auc["0.06"]
        row.setdefault("box_source", {})[name] = reports["box_width"].box_source
        row.setdefault("crop", {})[name] = reports["box_width"].extra["crop"]
        row.setdefault("skipped", {})[name] = reports["box_width"].extra["skipped"]
    return row


def plot_curves(structure: str, path: Path) -> Path:
    """The paper's Figure 3: training curves of CNN, ACN and 1-bit ACN for one structure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for method, label in (("cnn", "CNN"), ("acn", "ACN"), ("acn1bit", "1-bit ACN"), ("xnor", "XNOR-Net")):
        log = trained_rows.read_log(run_folder(structure, method))
        epochs = [r["epoch"] for r in log]
        left.plot(epochs, [r["loss"] for r in log], label=label)
        scored = [r for r in log if r["val"]]  # recipes validate every few epochs
        right.plot([r["epoch"] for r in scored], [r["val"]["nme"] for r in scored], label=label, marker=".")
    left.set(xlabel="epoch", ylabel="training loss (L1, normalized coordinates)", yscale="log")
    right.set(xlabel="epoch", ylabel="CUHK test NME (%, box width)", ylim=(0, 10))
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(f"Training curves, {structure} (cf. the ACN paper's Figure 3)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def bundle(rows: list[dict]) -> list[dict]:
    """Copy the best model (lowest CUHK test NME) of CNN, ACN and 1-bit ACN, and the FAST one, to models/
    with a card. A row carried from the committed results (its run folder is not here) keeps the
    committed checkpoint, which is the one it was scored from."""
    BUNDLED.mkdir(exist_ok=True)
    chosen = []
    picks = [
        (f"regression5-{m}", min((r for r in rows if r["method"] == m), key=lambda r: r["nme"]["cuhk_test"]), None)
        for m in ("cnn", "acn", "acn1bit")
    ]
    fast = next(r for r in rows if (r["structure"], r["method"]) == (FAST["structure"], FAST["method"]))
    picks.append((FAST["name"], fast, "the smallest and fastest 1-bit network of the table (its structure)"))
    for name, best, why in picks:
        target = BUNDLED / f"{name}.safetensors"
        if (ROOT / best["checkpoint"]).is_file():
            shutil.copyfile(ROOT / best["checkpoint"], target)
        elif not (target.is_file() and f"structure {best['structure']}," in (BUNDLED / f"{name}.md").read_text()):
            raise FileNotFoundError(f"{name}: {best['checkpoint']} is not on this machine; train that row first")
        (BUNDLED / f"{name}.md").write_text(model_card(name, best, why))
        chosen.append({"name": name, "file": str(target.relative_to(ROOT)), **best})
    package_models(chosen)
    return chosen


def package_models(chosen: list[dict]) -> None:
    """Packed copies inside the package (what `bitface predict` and the API run), with their cards
    and their entries in the index that `bitface models` lists."""
    from bitface.export.bundle import bundle_model

    for entry in chosen:
        name = entry["name"]
        card = (
            (BUNDLED / f"{name}.md")
            .read_text()
            .replace(
                "The file stores FP32 training weights; packed files come later.",
                f"This packed file: {{file_bytes}} bytes (`bitface summary {name}`).",
            )
        )
        index_entry = {
            "scheme": "5pt",
            "structure": entry["structure"],
            "method": entry["method"],
            "kind": trained_rows.KINDS["real" if entry["method"] == "cnn" else entry["method"]],
            "box_convention": "cuhk",
            "nme": {"cuhk_test_box_width": entry["nme"]["cuhk_test"], "mtfl_aflw_box_width": entry["nme"]["mtfl_aflw"]},
            "command": "python benchmarks/acn_table2.py train && python benchmarks/acn_table2.py report",
        }
        bundle_model(ROOT / entry["file"], name, index_entry, card, default=DEFAULT_MODEL)


def wall_minutes() -> float | None:
    """Minutes from the first run's start (its recipe copy is written then) to the last epoch written
    by any run (its log); None unless all 16 run folders are here."""
    folders = [run_folder(s, m) for s in STRUCTURES for m in METHODS]
    if not all((f / "recipe.yaml").is_file() and (f / "log.jsonl").is_file() for f in folders):
        return None
    start = min((f / "recipe.yaml").stat().st_mtime for f in folders)
    return (max((f / "log.jsonl").stat().st_mtime for f in folders) - start) / 60


def model_card(name: str, row: dict, why: str | None = None) -> str:
    why = why or f"the best `{row['method']}` of the four structures by CUHK test NME"
    kib = row["memory_bits"] / 8 / 1024
    return f"""# {name}: 5-point landmarks, {row["structure"]} regression network, {row["method"]}

- **What**: the ACN paper's 4-conv + 2-FC regression network (structure {row["structure"]}, method `{row["method"]}`),
  on 39 x 39 gray crops of a face box; predicts 5 points (eye centres, nose tip, mouth corners; CUHK order).
- **Recipe**: `{row["recipe"]}`, {row["epochs"]} epochs, {row["train_minutes"]:.1f} minutes on one CPU thread.
- **Size as the paper counts it**: {row["params"]:,} parameters, {kib:.1f} KiB
  (FP32 would be {row["fp32_bits"] / 8 / 1024:.1f} KiB). The file stores FP32 training weights; packed files come later.
- **Accuracy** (final epoch, no selection on test; `python benchmarks/acn_table2.py report`):
  CUHK test {row["nme"]["cuhk_test"]:.3f}% NME by face-box width
  ({row["nme_interpupil"]["cuhk_test"]:.2f}% inter-pupil);
  MTFL-AFLW {row["nme"]["mtfl_aflw"]:.3f}% by the width of the points' box
  ({row["nme_interpupil"]["mtfl_aflw"]:.2f}% inter-pupil). Chosen as {why}.
- **Input**: the face box a detector gives, as in the CUHK lists (left, top, right, bottom); the crop is the
  box's square grown by 5% per side. Boxes from another detector frame faces differently: calibrate first.
- **Training data**: CUHK "LFW + Webface" training subset, 5,000 faces (Sun, Wang and Tang, CVPR 2013),
  from `../shared/data/cuhk_lfw_net_5pt/trainImageList_subset.txt`.
- **Terms**: the data is for research / non-commercial use only (CUHK MMLab; LFW images from UMass; web
  images belong to their owners), so this model is for research use only. Cite Sun et al., CVPR 2013 and
  Zhang et al., "Amplitude Convolutional Networks" if you use it.
"""


def report(parallel: int = 1) -> None:
    from bitface.evaluate.results import markdown_table, provenance, write_results
    from bitface.io import read_annotations

    stamp = provenance(  # before this report writes its first file: its outputs do not make the tree dirty
        "python benchmarks/acn_table2.py train && python benchmarks/acn_table2.py report",
        train_set="CUHK trainImageList_subset.txt (5,000 faces)",
        test_sets={k: str(v.relative_to(DATA)) for k, v in TEST_SETS.items()},
        threads_per_run=1,
    )
    test_samples = {name: read_annotations(path, check="exists").samples for name, path in TEST_SETS.items()}
    from bitface.train.queue import finished_epochs
    from bitface.train.recipe import load_recipe

    out = ROOT / "benchmarks" / "results" / "acn_table2"
    committed, revision = trained_rows.committed_rows(out.with_suffix(".json"))
    plan, jobs = [], []  # plan: (structure, method, index into jobs or the carried result)
    for structure in STRUCTURES:
        for method in METHODS:
            name, folder = f"{structure}_{method}", run_folder(structure, method)
            if folder.is_dir() and finished_epochs(folder) >= load_recipe(recipe_path(structure, method)).train.epochs:
                plan.append((structure, method, len(jobs)))
                jobs.append((structure, method, test_samples))
            elif name in committed:
                row = trained_rows.carried({"row": name, **committed[name]}, revision, recipe_path(structure, method))
                plan.append((structure, method, row))
            else:
                raise FileNotFoundError(f"{name}: neither a finished run in {folder} nor a committed result")
    scored = trained_rows.map_rows(score, jobs, parallel)
    rows = [scored[how] if isinstance(how, int) else how for _, _, how in plan]
    for (structure, method, _), row in zip(plan, rows, strict=True):
        print(f"{structure} {method}: {row['nme']} ({row['scored_from']})", flush=True)
    curves = out.with_name("acn_table2_curves.png")
    if all(run_folder("20-40-60-80", m).is_dir() for m in METHODS):
        plot_curves("20-40-60-80", curves)
    else:  # the committed figure stays
        print(f"{curves.name} kept: the 20-40-60-80 run folders are not all on this machine", flush=True)
    bundled = bundle(rows)
    total_minutes = sum(r["train_minutes"] for r in rows)
    wall = wall_minutes()
    data = {
        "provenance": stamp,
        "protocol": {
            "nme": "box_width: CUHK test uses its annotated face boxes; MTFL-AFLW has none, so the tight box of "
            "the 5 ground-truth points (narrower: NMEs are not comparable across the two sets)",
            "nme_interpupil": "distance between the two eye centres",
            "epoch": "the final epoch of every run; the test set was never used to choose an epoch",
            "mtfl_crop": "faces without boxes are cropped from the points' box, scaled and shifted to frame "
            "faces as the CUHK training boxes did (median fit on the training set)",
        },
        "total_train_minutes": total_minutes,
        "wall_minutes": wall,
        "rows": rows,
        "bundled": [
            {"name": b["name"], "file": b["file"], "structure": b["structure"], "method": b["method"]} for b in bundled
        ],
        "curves": str(curves.relative_to(ROOT)),
    }
    table_rows = [
        {
            "structure": r["structure"],
            "method": r["method"],
            "params (M)": r["params"] / 1e6,
            "memory (KiB)": r["memory_bits"] / 8 / 1024,
            "CUHK NME": r["nme"]["cuhk_test"],
            "paper CUHK NME": r["paper_nme_cuhk"],
            "MTFL NME": r["nme"]["mtfl_aflw"],
            "CUHK NME ip": r["nme_interpupil"]["cuhk_test"],
            "MTFL NME ip": r["nme_interpupil"]["mtfl_aflw"],
            "epochs": r["epochs"],
            "train min": r["train_minutes"],
            "scored from": r["scored_from"],
        }
        for r in rows
    ]
    columns = list(table_rows[0])
    formats = {c: ".3f" for c in columns if "NME" in c} | {
        "params (M)": ".3f",
        "memory (KiB)": ".1f",
        "train min": ".1f",
    }
    body = (
        "NME in % of the face-box width (box_width) and of the inter-pupil distance (ip). "
        "'paper CUHK NME' is the ACN paper's Table 2 (theirs, trained on 10,000 faces; the paper gives no "
        "XNOR-Net row for this table). Ours: 5,000 training faces, the final epoch of each run. 'scored "
        "from': run = a finished run on the machine that wrote this report; committed (REV) = the result "
        "written at REV, kept because run folders are not committed.\n\n"
        + markdown_table(table_rows, columns, formats)
        + f"\nTotal training time: {total_minutes:.1f} minutes of one CPU thread each (the training loops), "
        + "two runs at a time"
        + (
            f"; {wall:.1f} minutes of wall clock from the first run's start to the last one's end (validation "
            "and any pause between resumed sessions included).\n"
            if wall is not None
            else " (the wall clock is known only where every run folder is on the machine).\n"
        )
        + "\nMTFL box_width uses the tight box of the 5 points (the set has no face boxes).\n"
        + f"\n![training curves]({curves.name})\n"
    )
    write_results(out, data, "ACN paper Table 2: 5-point regression, CNN / XNOR-Net / ACN / 1-bit ACN", body)


if __name__ == "__main__":
    main()
