"""Facial part segmentation with the binary hourglass (Bulat & Tzimiropoulos, ICCV 2017, appendix A3,
Table 15), at the 68-point rows' reduced scale: 128 px gray crops, 32 x 32 class maps, one hourglass.

    python benchmarks/face_parts.py train [--rows NAME ...]   # trains configs/parts/<row>.yaml (resumable)
    python benchmarks/face_parts.py report                    # scores them, writes benchmarks/results/face_parts.*

Seven classes (skin, lower lip, upper lip, inner mouth, eyes, nose, background) are painted from the 68
ground-truth points (bitface.data.parts). Scores are pixel accuracy, mean class accuracy and mean IU over
the HELEN testset (330 faces) at crop resolution: the class logits are upsampled to the 128 px crop and
compared with the masks drawn there. Each row is scored at its last epoch; rows not yet trained are listed
as pending, never filled in.
"""

from __future__ import annotations

from pathlib import Path

import trained_rows

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "parts"
RUNS = ROOT / "runs" / "parts"
RESULTS = ROOT / "benchmarks" / "results" / "face_parts"  # .json and .md
DATA = ROOT.parent / "shared" / "data"
TEST_SET = DATA / "300w_helen_68pt" / "testset"
ROWS = ("bottleneck_real", "bottleneck_xnor", "hpm48_xnor")  # the paper's three networks, in its order
COMMAND = "python benchmarks/face_parts.py train && python benchmarks/face_parts.py report"


def score(row: str, test_samples: list) -> dict:
    from bitface.data.dataset import HeatmapSpec, LandmarkDataset
    from bitface.models.model_file import load_model
    from bitface.models.summary import summarize
    from bitface.train.recipe import load_recipe
    from bitface.train.trainer import score_parts

    folder = RUNS / row
    recipe = load_recipe(RECIPES / f"{row}.yaml")
    model = load_model(folder / "model.safetensors")
    totals = summarize(model.network, (model.input.channels, model.crop.size, model.crop.size)).totals()
    test = LandmarkDataset(
        test_samples, recipe.scheme, recipe.crop, recipe.input, None, "parts", HeatmapSpec(recipe.target.stride)
    )
    return {
        "row": row,
        "block": recipe.model.options["block"],
        "binarization": recipe.model.options["binarization"],
        "features": model.model_options.get("features"),
        "params": totals["params"],
        "memory_bits": totals["memory_bits"],
        **score_parts(model.network, test),
        **trained_rows.training_record(folder),
        "recipe": str((RECIPES / f"{row}.yaml").relative_to(ROOT)),
    }


def report(parallel: int = 1) -> None:
    from bitface.evaluate.results import markdown_table, provenance, write_results
    from bitface.io import read_annotations
    from bitface.train.queue import finished_epochs
    from bitface.train.recipe import load_recipe

    test_samples = read_annotations(TEST_SET, check="exists").samples
    committed, revision = trained_rows.committed_rows(RESULTS.with_suffix(".json"))
    plan, jobs, pending = [], [], []  # plan: an index into jobs, or the carried result
    for row in ROWS:
        epochs = load_recipe(RECIPES / f"{row}.yaml").train.epochs
        done = finished_epochs(RUNS / row)
        if done >= epochs:
            plan.append(len(jobs))
            jobs.append((row, test_samples))
        elif row in committed:  # its run folder is not on this machine
            plan.append(trained_rows.carried(committed[row], revision, RECIPES / f"{row}.yaml"))
        else:
            pending.append({"row": row, "epochs_done": done, "epochs": epochs})
    scored = [{**result, "scored_from": "run"} for result in trained_rows.map_rows(score, jobs, parallel)]
    rows = [scored[how] if isinstance(how, int) else how for how in plan]
    for row in rows:
        print(f"{row['row']}: mean IU {row['mean_iu']:.2f}% ({row['scored_from']})", flush=True)
    data = {
        "provenance": provenance(
            COMMAND,
            train_sets=["300w_helen_68pt/trainset (870)", "ytf_68pt/training (3,462)"],
            test_sets={"helen_test": str(TEST_SET.relative_to(DATA))},
            threads_per_run=1,
        ),
        "protocol": {
            "classes": "background, skin, lower lip, upper lip, inner mouth, eyes, nose (bitface.data.parts)",
            "scale": "128 x 128 gray crops from the ground-truth points' box grown 20% per side; 32 x 32 class "
            "maps (stride 4) upsampled bilinearly to the crop for scoring; one hourglass of depth 3",
            "scores": "pixel accuracy, mean class accuracy and mean IU (FCN's definitions, percent) from one "
            "confusion matrix over all HELEN testset pixels",
            "epoch": "the last epoch of every run; the test set never chose an epoch",
        },
        "rows": rows,
        "pending": pending,
    }
    table = [
        {
            "network": f"{'binary' if r['binarization'] != 'real' else 'real'}, {r['block']} ({r['features']})",
            "params": r["params"],
            "pixel acc. (%)": r["pixel_accuracy"],
            "mean acc. (%)": r["mean_accuracy"],
            "mean IU (%)": r["mean_iu"],
            **{f"IU {c}": r["per_class"][c]["iu"] for c in ("eyes", "nose", "upper_lip", "lower_lip")},
            "epochs": r["epochs"],
            "train min": r["train_minutes"],
            "scored from": r["scored_from"],
        }
        for r in rows
    ]
    columns = list(table[0]) if table else []
    formats = {c: ".2f" for c in columns if "%" in c or c.startswith("IU")} | {"train min": ".1f"}
    body = (
        "HELEN testset (300-W, 330 faces), masks painted from the 68 ground-truth points; the last epoch of every "
        "run. Training: 300-W HELEN trainset (870) + YTF training (3,462), 128 px gray, one thread per run. "
        "'scored from': run = a finished run on the machine that wrote this report; committed (REV) = the "
        "result written at REV, kept because run folders are not committed.\n\n"
        + (markdown_table(table, columns, formats) if table else "No row has finished training yet.\n")
        + trained_rows.pending_note(pending)
    )
    write_results(RESULTS, data, "Facial part segmentation (Table 15)", body)


if __name__ == "__main__":
    trained_rows.main(__doc__, ROWS, RECIPES, RUNS, report)
