"""68-point binary hourglass ablation (Bulat & Tzimiropoulos, ICCV 2017, Tables 2-7; the ACN paper's
Table 4), at our reduced scale: 128 px gray crops, 32 x 32 heatmaps, one hourglass of depth 3.

    python benchmarks/hourglass_68.py train [--rows NAME ...]   # trains configs/hourglass68/<row>.yaml (resumable)
    python benchmarks/hourglass_68.py report                    # scores them, writes benchmarks/results/hourglass_68.*
    python benchmarks/hourglass_68.py bundle                    # re-exports the shipped models only

`train` runs two rows at a time, one thread each, in runs/hourglass68/<row>/, in the order of ROWS
(the rows the paper's claims rest on first); a stopped run resumes, a finished one is skipped.
`report` scores every finished row (its last epoch: the test set never picks an epoch) on the
HELEN testset of 300-W (330 faces, inter-ocular NME, AUC and failure rate at 0.08 and 0.10; the
primary number) and on the YTF test split (770 faces; it repeats training people and videos, so
it is only a secondary check). Rows not yet trained are listed as pending, never filled in.
The report ends with the papers' comparisons (PAPER_CLAIMS) as they come out here: each pair of
rows' per-face difference with a bootstrap interval over the test faces.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import trained_rows

from bitface.models.summary import PAPER_BLOCKS

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "hourglass68"
RUNS = ROOT / "runs" / "hourglass68"
DATA = ROOT.parent / "shared" / "data"
TEST_SETS = {
    "helen_test": DATA / "300w_helen_68pt" / "testset",
    "ytf_test": DATA / "ytf_68pt" / "test",
}
# the rows in training order; each is configs/hourglass68/<row>.yaml, which says its block,
# binarization, loss and augmentation (the report reads them from there)
ROWS = (
    "hpm_xnor",
    "hpm_real",
    "bottleneck_xnor",
    "hpm48_xnor",
    "bottleneck_real",
    "hpm_xnor_l2",
    "hpm_xnor_noaug",
    "hpm_xnor_init",  # starts from hpm_real's weights (train.init)
    "hpm_acn1bit",
    "hpm_acn",
    "hpm48_real",
    "multiscale_xnor",
    "multiscale_no1x1_xnor",
    "wider_xnor",
    "multiscale_real",
    "multiscale_no1x1_real",
    "wider_real",
    # the shipped models: the best block trained 4x longer (not ablation rows: a larger budget)
    "hpm_real_long",
    "hpm_xnor_long",  # starts from hpm_real's weights and distills from it (train.teacher)
    "hpm_acn1bit_long",  # starts from and distills from hpm_real_long (the real model shipped before hpm_real_cont)
    "hpm_acn1bit_long_lightaug",  # the same with half the geometric augmentation
    "hpm_acn1bit_cont",  # a second cosine cycle from hpm_acn1bit_long_lightaug
    "hpm_acn1bit_cont_noaug",  # the same with flips and shifts only
    "hpm_acn1bit_cont2",  # a third cosine cycle from hpm_acn1bit_cont (not shipped: +0.03 points)
    "hpm_acn1bit_fast",  # the max-pool before the first block, from hpm_acn1bit_cont
    "hpm_acn1bit_fast96",  # the same at 96 px, from hpm_acn1bit_fast
    "hpm_real_cont",  # a second cosine cycle from hpm_real_long
    "hpm_acn1bit_teach2",  # a cycle from hpm_acn1bit_cont distilled from hpm_real_cont
    "hpm_real_cont2",  # a third cosine cycle from hpm_real_cont, half the geometric augmentation
    "hpm_acn1bit_teach3",  # hpm_acn1bit_teach2 distilled from hpm_real_cont2
    "hpm96_acn1bit",  # the 1-bit network at 96 features, from scratch, distilled from hpm_real_cont2 (its model file)
    "hpm96_acn1bit_cont",  # a second cosine cycle from hpm96_acn1bit
    "hpm96_acn1bit_cont_noaug",  # the same with flips and shifts only
    "hpm96_acn1bit_cont2",  # a third cosine cycle from hpm96_acn1bit_cont
    "hpm96_acn1bit_cont3",  # a fourth cosine cycle from hpm96_acn1bit_cont2 (shipped)
    "hpm96_acn1bit_cont3_flipteacher",  # the same distilled from the teacher's test-time flip
    "hpm96_acn1bit_cont4",  # a fifth cosine cycle from hpm96_acn1bit_cont3
    "hpm96_acn1bit_cont4_att",  # the same with attention transfer from the real teacher
    "hpm96_binact",  # two-stage training, stage 1: sign inputs on float weights, from scratch
    "hpm96_acn1bit_2stage",  # stage 2: the 1-bit network from hpm96_binact's weights
    "hpm96_acn1bit_2stage_cont",  # a second cosine cycle from hpm96_acn1bit_2stage
    "hpm_binact",  # two-stage training at 64 features, stage 1
    "hpm_acn1bit_2stage",  # stage 2: the 64-feature 1-bit network from hpm_binact's weights
    "hpm96_acn1bit_160",  # hpm96_acn1bit_2stage_cont's cycle at 160 px crops
    "hpm_real_cont3",  # a fourth cosine cycle from hpm_real_cont2
    "hpm_real_160",  # the same at 160 px crops
    "hpm112_binact",  # two-stage training at 112 features (8-bit real first conv and head), stage 1
    "hpm112_acn1bit_2stage",  # stage 2: the 112-feature 1-bit network from hpm112_binact's weights
)
# The papers' comparisons that these rows repeat: (source, what the paper found, the row the paper
# found better, the row it found worse, the paper's figures for the two). Bulat & Tzimiropoulos report
# PCKh on MPII (higher is better), the ACN paper NME on the full 300-W test set (lower is better).
PAPER_PCKH = {label: pckh for label, _, _, _, _, pckh in PAPER_BLOCKS}  # their Tables 2 and 4
PAPER_CLAIMS = (
    ("B&T Table 2", "wider (4b) beats the bottleneck (4a)", "wider_xnor", "bottleneck_xnor",
     f"PCKh {PAPER_PCKH['wider']} vs {PAPER_PCKH['bottleneck']}"),
    ("B&T Table 2", "multi-scale (4c) beats the bottleneck", "multiscale_xnor", "bottleneck_xnor",
     f"PCKh {PAPER_PCKH['multiscale']} vs {PAPER_PCKH['bottleneck']}"),
    ("B&T Table 2", "no 1x1 convs (4d) beats multi-scale (4c)", "multiscale_no1x1_xnor", "multiscale_xnor",
     f"PCKh {PAPER_PCKH['multiscale_no1x1']} vs {PAPER_PCKH['multiscale']}"),
    ("B&T Table 2", "the hierarchical block (4e) beats the bottleneck", "hpm_xnor", "bottleneck_xnor",
     f"PCKh {PAPER_PCKH['hpm']} vs {PAPER_PCKH['bottleneck']}"),
    ("B&T Table 2", "4e beats 4d, with fewer parameters", "hpm_xnor", "multiscale_no1x1_xnor",
     f"PCKh {PAPER_PCKH['hpm']} vs {PAPER_PCKH['multiscale_no1x1']}"),
    ("B&T Table 4", "at matched parameters (4e at 3/4 width) 4e beats the bottleneck", "hpm48_xnor",
     "bottleneck_xnor", f"PCKh {PAPER_PCKH['hpm at 3/4 width']} vs {PAPER_PCKH['bottleneck']}"),
    ("B&T Table 5", "real, at similar parameters: 4e beats the bottleneck", "hpm48_real", "bottleneck_real",
     "PCKh 85.5 vs 83.1 (their wider bottleneck, 7.0M vs 6.2M)"),
    ("B&T Table 6", "augmentation helps the binary network", "hpm_xnor", "hpm_xnor_noaug", "PCKh 76.0 vs 72.1"),
    ("B&T Table 7", "sigmoid cross-entropy beats L2", "hpm_xnor", "hpm_xnor_l2", "PCKh 76.0 vs 73.8"),
    ("B&T Table 8", "the real block beats its binary twin", "hpm_real", "hpm_xnor", "PCKh 85.5 vs 78.1"),
    ("ACN Table 4", "ACN (binary weights) beats XNOR-Net", "hpm_acn", "hpm_xnor", "NME 4.39 vs 7.24"),
    ("ACN Table 4", "1-bit ACN beats XNOR-Net", "hpm_acn1bit", "hpm_xnor", "NME 5.10 vs 7.24"),
    ("ACN Table 4", "ACN beats 1-bit ACN", "hpm_acn", "hpm_acn1bit", "NME 4.39 vs 5.10"),
)  # fmt: skip
THRESHOLDS = {"0.08": "08", "0.1": "10"}  # report key: field suffix (auc_08, fr_10, ...)
RESULTS = ROOT / "benchmarks" / "results" / "hourglass_68.json"
PER_FACE = RESULTS.with_name("hourglass_68_per_face.json")  # HELEN per-face errors: the CED of carried rows
MODELS = ROOT / "models"  # committed checkpoints (with model cards) of the shipped rows
SHIPPED = {
    # the hpm block trained 4x longer (hpm_real_long, 40 epochs), then two more cosine cycles of 20
    # (the last with half the geometric augmentation)
    "hpm_real_cont2": "landmarks68-hourglass-real",
    "hpm_xnor_long": "landmarks68-hourglass-xnor",  # from and distilled from hpm_real, 2.4x longer
    # 1-bit ACN from and distilled from hpm_real_long, a second cycle with half the geometric
    # augmentation: of the four acn1bit_long/cont rows the best on HELEN test with detector boxes
    # (benchmarks/detector_calibration.py); hpm_acn1bit_cont_noaug is better with annotated boxes but
    # worse with detected ones (trained without scale jitter). No separate validation split: chosen on test.
    "hpm_acn1bit_cont": "landmarks68-hourglass-acn1bit",
    # the max-pool before the first block: about 30% faster, from and distilled as hpm_acn1bit_cont
    "hpm_acn1bit_fast": "landmarks68-hourglass-acn1bit-fast",
    # the same at 96 px from its weights, the fastest 68-point model
    "hpm_acn1bit_fast96": "landmarks68-hourglass-acn1bit-fast96",
    # the 1-bit network at 96 features (its binary weights 143 KiB as the papers count them): the most
    # accurate binary model, about twice the work of the 64-feature one (its fourth cosine cycle)
    "hpm96_acn1bit_cont3": "landmarks68-hourglass-acn1bit-96",
}
# shipped row: the rows it was chosen over
PICKED_ON_TEST = {
    "hpm_real_cont2": "hpm_real_cont (the cycle it continues)",
    "hpm96_acn1bit_cont3": "hpm96_acn1bit, hpm96_acn1bit_cont and hpm96_acn1bit_cont2 (the cycles it "
    "continues), hpm96_acn1bit_cont_noaug, hpm96_acn1bit_cont3_flipteacher, hpm96_acn1bit_cont4, "
    "hpm96_acn1bit_cont4_att and hpm96_acn1bit_2stage_cont (hpm96_acn1bit_2stage, level with it within the "
    "test set's sampling, did not replace it)",
    "hpm_acn1bit_cont": "hpm_acn1bit_long, hpm_acn1bit_long_lightaug and hpm_acn1bit_cont_noaug (the last "
    "more accurate with annotated boxes, less with detector boxes)",
}


def is_ablation(row: str) -> bool:
    """One of the ablation rows (10 epochs, the paper's comparisons), not a shipped model's longer run."""
    return ROWS.index(row) <= ROWS.index("wider_real")


def recipe_path(row: str) -> Path:
    return RECIPES / f"{row}.yaml"


def run_folder(row: str) -> Path:
    return RUNS / row


def score(row: str, test_samples: dict, committed: dict | None = None) -> tuple[dict, dict]:
    """The row's results and its per-face HELEN errors (for the CED plot): from its finished run, or,
    where the run is not on this machine, from the committed checkpoint with the committed training
    fields (`committed`: the row as the results file holds it)."""
    from bitface.evaluate.protocol import evaluate_model
    from bitface.models.model_file import load_model
    from bitface.models.summary import summarize
    from bitface.train.recipe import load_recipe

    if committed is None:
        model = load_model(run_folder(row) / "model.safetensors")
        trained = {**trained_rows.training_record(run_folder(row)), "checkpoint": None}
    else:
        model = load_model(ROOT / committed["checkpoint"])
        carried = ("epochs", "train_minutes", "checkpoint", "trained_at", "trained_on")
        trained = {k: committed[k] for k in carried if k in committed}
    totals = summarize(model.network, (model.input.channels, model.crop.size, model.crop.size)).totals()
    recipe = load_recipe(recipe_path(row))
    init, teacher = recipe.train.init, recipe.train.teacher  # another row's weights to start from / distill
    result = {
        "row": row,
        "ablation": is_ablation(row),
        "block": recipe.model.options["block"],
        "binarization": recipe.model.options["binarization"],
        "loss": recipe.train.loss,
        "augment": recipe.augment is not None,
        "features": model.model_options.get("features"),
        "early_pool": bool(model.model_options.get("early_pool", False)),
        "input_size": model.crop.size,
        "params": totals["params"],
        "memory_bits": totals["memory_bits"],
        "binary_macs": totals["binary_macs"],
        "float_macs": totals["float_macs"],
        "epochs": trained["epochs"],
        "train_minutes": trained["train_minutes"],  # not counting the row it starts from
        "trained_at": trained.get("trained_at", ["unrecorded"]),  # bitface revisions that trained it
        "trained_on": trained.get("trained_on", ["unrecorded"]),  # and the CPUs
        "init": str(Path(init).resolve().relative_to(ROOT)) if init else None,
        "teacher": str(Path(teacher).resolve().relative_to(ROOT)) if teacher else None,
        "distill": recipe.train.distill if teacher else None,
        "teacher_flip": recipe.train.teacher_flip if teacher else None,
        "attention": recipe.train.attention if teacher else None,  # train.attention's beta
        "recipe": str(recipe_path(row).relative_to(ROOT)),
        "checkpoint": trained["checkpoint"],
        "scored_from": "run" if committed is None else "checkpoint",
    }
    curves = {}
    model.heatmap_smooth = 0.0  # the ablation's decoding, the same for every row: argmax and refinement
    for name, samples in test_samples.items():
        report = evaluate_model(model, samples, "interocular", name)
        suffix = "" if name == "helen_test" else f"_{name.removesuffix('_test')}"
        result[f"nme_io{suffix}"] = report.nme
        for t, label in THRESHOLDS.items():
            result[f"auc_{label}{suffix}"] = report.auc[t]
            result[f"fr_{label}{suffix}"] = report.fr[t]
        result[f"skipped{suffix}"] = report.extra["skipped"]
        curves[name] = report.per_face
    # the shipped decoding: the maps smoothed first by the recipe's Gaussian (DARK's modulation)
    model.heatmap_smooth = recipe.target.smooth
    report = evaluate_model(model, test_samples["helen_test"], "interocular", "helen_test")
    result |= {
        "decode_smooth": model.heatmap_smooth,
        "nme_io_smoothed": report.nme,
        "auc_08_smoothed": report.auc["0.08"],
    }
    result |= {"fr_08_smoothed": report.fr["0.08"], "fr_10_smoothed": report.fr["0.1"]}
    model.flip_test = True  # and each face averaged with its mirror image (Landmarker(flip_test=True))
    report = evaluate_model(model, test_samples["helen_test"], "interocular", "helen_test")
    result |= {"nme_io_flip": report.nme, "auc_08_flip": report.auc["0.08"], "fr_08_flip": report.fr["0.08"]}
    return result, curves


def gather(test_samples: dict, parallel: int = 1) -> tuple[list[dict], list[dict], dict]:
    """Every row's result, the rows still pending and the per-face HELEN errors. A finished run on this
    machine is scored; a row whose run is not here keeps its committed result (run folders are not
    committed), rescored from its checkpoint where that is committed, unless its recipe now builds
    another network (a block changed since); the rest are pending. Scoring runs `parallel` rows at a
    time (one process and thread each)."""
    from bitface.train.queue import finished_epochs
    from bitface.train.recipe import load_recipe

    committed, revision = trained_rows.committed_rows(RESULTS)
    old_curves = json.loads(PER_FACE.read_text()) if PER_FACE.is_file() else {}
    plan, jobs, pending = [], [], []  # plan: (row, index into jobs) or (row, carried result)
    for row in ROWS:
        epochs = load_recipe(recipe_path(row)).train.epochs
        done = finished_epochs(run_folder(row))
        before = committed.get(row)
        if before and row not in SHIPPED:
            before = {**before, "checkpoint": None}  # models/ holds only the shipped rows' checkpoints
        if done >= epochs:
            plan.append((row, len(jobs)))
            jobs.append((row, test_samples, None))
        elif before and before["checkpoint"] and (ROOT / before["checkpoint"]).is_file():
            plan.append((row, len(jobs)))
            jobs.append((row, test_samples, before))
        elif before and before["params"] != trained_rows.recipe_size(recipe_path(row))["params"]:  # a stale result
            pending.append({"row": row, "epochs_done": done, "epochs": epochs})
        elif before:  # scored before by this command; its run folder is not on this machine
            result = trained_rows.carried(before, revision, recipe_path(row)) | {"ablation": is_ablation(row)}
            curves = {"helen_test": np.array(old_curves[row])} if row in old_curves else {}
            plan.append((row, (result, curves)))
        else:
            pending.append({"row": row, "epochs_done": done, "epochs": epochs})
    scored = trained_rows.map_rows(score, jobs, parallel)
    rows, ced = [], {}
    for row, how in plan:
        result, curves = scored[how] if isinstance(how, int) else how
        rows.append(result)
        if "helen_test" in curves:
            ced[row] = curves["helen_test"]
        print(f"{row}: NME_io {result['nme_io']:.3f}% ({result['scored_from']})", flush=True)
    return rows, pending, ced


def paper_comparisons(rows: list[dict], per_face: dict) -> list[dict]:
    """Each of PAPER_CLAIMS as it comes out here: the NME of the two rows (raw decoding, the ablation's),
    the mean per-face difference (the paper's better row minus its worse one: negative where the
    paper's ordering holds) with a 95% bootstrap interval over the HELEN test faces, and the verdict."""
    from bitface.evaluate import paired_difference

    nme = {r["row"]: r["nme_io"] for r in rows}
    trained_at = {r["row"]: r.get("trained_at", ["unrecorded"]) for r in rows}
    out = []
    for source, finding, better, worse, paper in PAPER_CLAIMS:
        entry = {"source": source, "paper_found": finding, "paper": paper, "better": better, "worse": worse}
        if better in nme and worse in nme:
            entry["trained_at"] = [trained_at[better], trained_at[worse]]
        if better in per_face and worse in per_face:
            diff = paired_difference(100 * np.asarray(per_face[better]), 100 * np.asarray(per_face[worse]))
            entry |= {
                "nme_io_better": nme[better],
                "nme_io_worse": nme[worse],
                "difference": diff.mean,
                "ci95": [diff.low, diff.high],
                "here": diff.verdict(-1),
            }
        elif better in nme and worse in nme:  # carried from a results file that kept no per-face errors
            entry["here"] = "no per-face errors"
        else:
            entry["here"] = "pending"
        out.append(entry)
    return out


def training_code(comparison: dict) -> str:
    """Whether one revision of bitface trained both rows of a comparison (a like-for-like comparison)
    or which ones did: rows from earlier reports are unrecorded, and the trainer has changed since."""
    if "trained_at" not in comparison:
        return ""
    better, worse = (", ".join(revisions) for revisions in comparison["trained_at"])
    return f"one revision ({better})" if better == worse and "unrecorded" not in better else f"{better} vs {worse}"


def comparisons_section(comparisons: list[dict]) -> str:
    def cell(c: dict) -> dict:
        done = "difference" in c
        return {
            "source": c["source"],
            "the paper found": c["paper_found"],
            "the paper's figures": c["paper"],
            "rows": f"{c['better']} vs {c['worse']}",
            "NME_io here": f"{c['nme_io_better']:.3f} vs {c['nme_io_worse']:.3f}" if done else "",
            "difference [95% CI]": f"{c['difference']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]" if done else "",
            "here": c["here"],
            "trained by": training_code(c),
        }

    from bitface.evaluate.results import markdown_table

    table = [cell(c) for c in comparisons]
    return (
        "\n## The papers' comparisons, here\n\n"
        "Each comparison the ablation repeats, with the papers' figures (Bulat & Tzimiropoulos: PCKh on MPII, "
        "higher is better; the ACN paper: NME on the full 300-W test set) and ours (HELEN testset NME_io, raw "
        "decoding, lower is better). Difference: the mean over the 330 faces of the per-face NME of the row "
        "the paper found better minus that of the other (negative: the paper's ordering holds), with a 95% "
        "percentile-bootstrap interval over the faces (`bitface.evaluate.paired_difference`). 'agrees': the "
        "interval lies below 0; 'opposite': above; 'no clear difference': it spans 0; 'pending': a row is "
        "still training; 'no per-face errors': a row carried from an earlier report, which kept none. The "
        "interval covers the sampling of test faces only, not the spread between training runs of one "
        "recipe (one run per row), which it does not measure. 'trained by': the bitface revisions that "
        "trained the two rows; only a comparison that one revision trained is like for like (rows from "
        "earlier reports say 'unrecorded': the trainer has changed since them).\n\n"
        + markdown_table(table, list(table[0]))
    )


def input_size(row: dict) -> int:
    """A row's crop size (rows scored before the field was recorded were all 128 px)."""
    return row.get("input_size", 128)


def lineage(row: dict) -> str:
    """What a row started from and learned from besides the labels, for its model card."""
    parts = [f"started from `{row['init']}`"] if row.get("init") else []
    if row.get("teacher"):
        from bitface.models.model_file import load_model

        teacher = ROOT / row["teacher"]  # a run folder may be gone: then its size goes unsaid
        size = load_model(teacher).crop.size if teacher.is_file() else input_size(row)
        at = f", a {size} px teacher: its inputs and maps resized" if size != input_size(row) else ""
        parts.append(f"distilled from `{row['teacher']}` (weight {row['distill']}{at})")
    return "; " + " and ".join(parts) if parts else ""


def training_history(row: dict, rows: dict[str, dict]) -> list[dict]:
    """The rows whose weights a row was trained from, first to last, ending with the row: each one's
    `init` is the previous one's run (a chain stops at a start from scratch or from a committed file)."""
    chain = [row]
    while (init := chain[0].get("init")) and Path(init).name == "model.safetensors":
        previous = rows.get(Path(init).parent.name)
        if previous is None or previous in chain:
            break
        chain.insert(0, previous)
    return chain


def history_line(row: dict, rows: dict[str, dict]) -> str:
    """A model card's line on every stage that trained the model, where more than one did."""
    chain = training_history(row, rows)
    if len(chain) == 1:
        return ""
    stages = " → ".join(
        f"`{r['row']}` ({r['binarization']}, {r['epochs']} epochs, {r['train_minutes']:.0f} min)" for r in chain
    )
    start = f"`{chain[0]['init']}`" if chain[0].get("init") else "scratch"
    epochs, minutes = sum(r["epochs"] for r in chain), sum(r["train_minutes"] for r in chain)
    teachers = " (not counting the teachers' own training)" if any(r.get("teacher") for r in chain) else ""
    return (
        f"\n- **Training history** (each stage from the previous one's weights, the first from {start}): "
        f"{stages}; {epochs} epochs, {minutes:.0f} minutes in all on one CPU thread{teachers}."
    )


def model_card(name: str, row: dict, rows: dict[str, dict]) -> str:
    rival = PICKED_ON_TEST.get(row["row"])
    chosen = f"; this recipe was picked over those of {rival} on HELEN test" if rival else ""
    size = input_size(row)
    cells = size // 4
    early = (
        f"; the max-pool comes before the stem's first block, which so runs at {cells} x {cells} instead of "
        f"{size // 2} x {size // 2} "
        "(about 4x fewer operations in the network's most expensive block; the same parameters)"
        if row.get("early_pool")
        else ""
    )
    return f"""# {name}: 68 points, binary-hourglass family, {row["block"]} block, {row["binarization"]}

- **What**: one hourglass (depth 3, {row["features"]} features) of {row["block"]} blocks
  (Bulat & Tzimiropoulos, ICCV 2017), binarization `{row["binarization"]}` (first conv and heatmap head real),
  on {size} x {size} gray crops; 68 heatmaps at {cells} x {cells}, smoothed, decoded with sub-pixel
  refinement; iBUG 68-point order{early}.
- **Recipe**: `{row["recipe"]}`, {row["epochs"]} epochs, {row["train_minutes"]:.0f} minutes on one CPU
  thread{lineage(row)}.{history_line(row, rows)}
- **Size as the paper counts it**: {row["params"]:,} parameters, {row["memory_bits"] / 8 / 1024:.1f} KiB.
  This packed file: {{file_bytes}} bytes (`bitface summary {name}`).
- **Accuracy** (last epoch: no epoch chosen on test{chosen}; `python benchmarks/hourglass_68.py report`):
  300-W HELEN testset (330 faces) inter-ocular NME {row["nme_io_smoothed"]:.3f}%, AUC@0.08
  {row["auc_08_smoothed"]:.4f}, failure rate@0.08 {100 * row["fr_08_smoothed"]:.2f}%, with the maps smoothed
  before decoding by a Gaussian of {row["decode_smooth"]} cells (the targets' sigma; DARK's modulation, which
  this file's decoder does); {row["nme_io_flip"]:.3f}% with a test-time flip (`flip_test=True`, twice the
  network time); {row["nme_io"]:.3f}% decoding the raw maps; YTF test split
  {row["nme_io_ytf"]:.3f}% (raw maps; same people as training).
- **Input**: a face box in the convention of the tight box of the 68 points (the crop grows it by 20% per
  side); `Landmarker` maps detector boxes to it with the calibration in detector_calibration.json.
- **Training data**: 300-W HELEN trainset (870 faces present of 2,000) and the Udacity YouTube Faces
  68-point training set (3,462 frames), from `../shared/data/`.
- **Terms**: 300-W annotations are distributed by iBUG for research use; HELEN images are Flickr photos of
  their owners; YouTube Faces frames are research data (Wolf et al.). This model is for research /
  non-commercial use only. Cite Sagonas et al. (300-W), Le et al. (HELEN), Wolf et al. (YTF) and
  Bulat & Tzimiropoulos, ICCV 2017.
"""


def bundle(rows: list[dict]) -> None:
    """Commit the shipped rows' checkpoints to models/ (from their runs where they were scored from one,
    else the committed checkpoints are re-exported) and their packed files into the package."""
    import shutil

    from bitface.export.bundle import bundle_model
    from bitface.models.model_file import load_model

    MODELS.mkdir(exist_ok=True)
    for row in rows:
        name = SHIPPED.get(row["row"])
        if name is None:
            continue
        target = MODELS / f"{name}.safetensors"
        if row.get("scored_from") == "run":
            shutil.copyfile(run_folder(row["row"]) / "model.safetensors", target)
        model = load_model(target)
        if model.heatmap_smooth != row["decode_smooth"]:  # a run written before decoders smoothed
            model.heatmap_smooth = row["decode_smooth"]
            model.save(target)
        row["checkpoint"] = str(target.relative_to(ROOT))
        card = model_card(name, row, {r["row"]: r for r in rows})
        packed_size = f"The packed file's size: see src/bitface/bundled/{name}.md"
        (MODELS / f"{name}.md").write_text(card.replace("This packed file: {file_bytes} bytes", packed_size))
        structure = f"hourglass-{row['block']}-{row['features']}" + ("-early-pool" if row.get("early_pool") else "")
        structure += f"-{input_size(row)}px" if input_size(row) != 128 else ""
        entry = {
            "scheme": "68pt",
            "structure": structure,
            "method": row["binarization"],
            "kind": trained_rows.KINDS[row["binarization"]],
            "box_convention": "ibug68-points",
            "nme": {"helen_test_interocular": row["nme_io_smoothed"], "ytf_test_interocular": row["nme_io_ytf"]},
            "command": "python benchmarks/hourglass_68.py train && python benchmarks/hourglass_68.py report",
        }
        bundle_model(target, name, entry, card)


def report(parallel: int = 1) -> None:
    from bitface.evaluate.report import plot_ced
    from bitface.evaluate.results import markdown_table, provenance, write_results
    from bitface.io import read_annotations

    stamp = provenance(  # before this report writes its first file: its outputs do not make the tree dirty
        "python benchmarks/hourglass_68.py train && python benchmarks/hourglass_68.py report",
        train_sets=["300w_helen_68pt/trainset (870)", "ytf_68pt/training (3,462)"],
        test_sets={k: str(v.relative_to(DATA)) for k, v in TEST_SETS.items()},
        threads_per_run=1,
    )
    test_samples = {name: read_annotations(path, check="exists").samples for name, path in TEST_SETS.items()}
    rows, pending, ced = gather(test_samples, parallel)
    per_face = {row: [round(float(e), 6) for e in errors] for row, errors in ced.items()}
    comparisons = paper_comparisons(rows, per_face)  # from the errors as written: a reader recomputes them
    bundle(rows)
    out = RESULTS.with_suffix("")
    PER_FACE.write_text(json.dumps(per_face))
    panels = {
        "ablation rows (10 epochs)": [row for row in ced if is_ablation(row)],
        "the shipped models' longer runs and experiments": [row for row in ced if not is_ablation(row)],
    }
    panels = {title: rows for title, rows in panels.items() if rows}
    plot = plot_ced(ced, "interocular", out.with_name("hourglass_68_ced.png"), 0.15, panels) if ced else None
    data = {
        "provenance": stamp,
        "protocol": {
            "scale": "128 x 128 gray crops from the ground-truth points' box grown 20% per side; 32 x 32 heatmaps "
            "(stride 4); one hourglass of depth 3; 64 features (48 for the parameter-matched hpm48 rows); the "
            "input column gives a row's crop size where it differs (hpm_acn1bit_fast96: 96 px, 24 x 24 maps)",
            "nme_io": "HELEN testset (330 faces), mean point error over the outer-eye-corner distance, percent",
            "auc_08, fr_08, auc_10, fr_10": "area under the CED up to 0.08 / 0.10 (normalized to 1) and the "
            "fraction of faces above it",
            "secondary": "*_ytf: the YTF test split, which repeats training people and videos",
            "epoch": "the last epoch of every run; the test set never chose an epoch",
            "ablation": "true for the ablation rows (10 epochs, the paper's comparisons); false for the shipped "
            "models' longer runs and the experiments towards them",
            "nme_io_smoothed": "HELEN testset with the maps smoothed before decoding by a Gaussian of the targets' "
            "sigma (decode_smooth cells), chosen a priori as DARK does, not on test; the shipped models' decoding",
            "nme_io_flip": "nme_io_smoothed with a test-time flip: each face's maps averaged with those of its "
            "mirror image, mirrored back (Landmarker(flip_test=True); twice the network time)",
            "trained_at, trained_on": "the bitface git revisions and CPUs that trained a row's epochs, from its "
            "run log ('unrecorded' for epochs logged before runs recorded them)",
            "memory_bits": "as the papers count it: 32 bits per real weight, 1 per binary weight, plus scales",
            "teacher, distill, teacher_flip, attention": "the recipe's teacher (a model file) and train.distill, "
            "train.teacher_flip and train.attention (beta of the attention-transfer term; 0: off); null without a "
            "teacher",
        },
        "rows": rows,
        "pending": pending,
        "paper_comparisons": comparisons,
        "ced_plot": None if plot is None else str(plot.relative_to(ROOT)),
    }
    columns = ["row", "block", "binarization", "loss", "augment", "input", "params", "memory (KiB)", "NME_io",
               "NME_io smoothed", "NME_io flip", "AUC@0.08", "FR@0.08 (%)", "FR@0.10 (%)", "NME_io YTF", "epochs",
               "train min", "trained at", "shipped as", "scored from"]  # fmt: skip
    table = [
        {
            "row": r["row"],
            "block": r["block"],
            "binarization": r["binarization"],
            "loss": r["loss"],
            "augment": "yes" if r["augment"] else "no",
            "input": f"{input_size(r)} px",
            "params": r["params"],
            "memory (KiB)": r["memory_bits"] / 8 / 1024,
            "NME_io": r["nme_io"],
            "NME_io smoothed": r.get("nme_io_smoothed"),
            "NME_io flip": r.get("nme_io_flip"),
            "AUC@0.08": r["auc_08"],
            "FR@0.08 (%)": 100 * r["fr_08"],
            "FR@0.10 (%)": 100 * r["fr_10"],
            "NME_io YTF": r["nme_io_ytf"],
            "epochs": r["epochs"],
            "train min": r["train_minutes"],
            "trained at": ", ".join(r.get("trained_at", ["unrecorded"])),
            "shipped as": SHIPPED.get(r["row"], ""),
            "scored from": r["scored_from"],
        }
        for r in rows
    ]
    formats = {"memory (KiB)": ".1f", "NME_io": ".3f", "NME_io smoothed": ".3f", "NME_io flip": ".3f",
               "AUC@0.08": ".4f", "FR@0.08 (%)": ".2f", "FR@0.10 (%)": ".2f", "NME_io YTF": ".3f",
               "train min": ".1f"}  # fmt: skip
    body = (
        "HELEN testset (300-W, 330 faces), inter-ocular NME in percent, the last epoch of every run. "
        "Training: 300-W HELEN trainset (870) + YTF training (3,462), gray crops (128 px unless the input "
        "column says), one thread per run, two runs at a time. "
        f"The ablation rows are the first {sum(map(is_ablation, ROWS))} (10 epochs each); the rows after them "
        "are the shipped models' longer runs and the experiments towards them (each recipe says what it "
        "starts from and distills from). 'trained at': the bitface revisions that trained the row "
        "('unrecorded': before runs recorded them, by a trainer that has changed since). 'scored from': "
        "run = a finished run on the machine that wrote this "
        "report; checkpoint = the committed checkpoint, rescored here (training figures from its run); "
        "committed (REV) = the result written at REV, kept because run folders are not committed. 'NME_io "
        "smoothed': the same faces with the heatmaps smoothed before decoding by a Gaussian of the targets' "
        "sigma (1.5 cells; Zhang et al.'s DARK modulation), as the shipped models decode; rows that could not "
        "be rescored here have none. 'NME_io flip': smoothed, and each face's maps averaged with those of its "
        "mirror image (a test-time flip, `Landmarker(flip_test=True)`: twice the network time). The other "
        "columns and the CED decode the raw maps.\n\n"
        + (markdown_table(table, columns, formats) if table else "No row has finished training yet.\n")
        + trained_rows.pending_note(pending)
        + (f"\n![CED]({plot.name})\n" if plot else "")
        + comparisons_section(comparisons)
    )
    write_results(out, data, "Binary hourglass, 68 points: block, binarization, loss and augmentation", body)


if __name__ == "__main__":

    def rebundle() -> None:
        bundle([{**r, "scored_from": "checkpoint"} for r in json.loads(RESULTS.read_text())["rows"]])

    trained_rows.main(__doc__, ROWS, RECIPES, RUNS, report, rebundle)
