"""What the table benchmarks that train one model per row share (hourglass_68.py, face_parts.py,
acn_table2.py): the training queue over configs/<family>/<row>.yaml, the pending-rows note, the
command line, scoring rows in parallel processes and the kinds that bundled models are listed under."""

from __future__ import annotations

import argparse
import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# a bundled model's "kind" (what `bitface models` lists) by its binarization method
KINDS = {
    "real": "real (FP32)",
    "xnor": "binary (1-bit weights and activations, XNOR-Net)",
    "acn": "binary weights (ACN), real activations",
    "acn1bit": "binary (1-bit weights and activations, ACN)",
}


def train_rows(rows: list[str], recipes: Path, runs: Path, parallel: int) -> None:
    """Train (or resume) every row not yet finished, `parallel` at a time with one thread each."""
    from bitface.train.queue import pending_command, run_queue

    jobs = [c for c in (pending_command(recipes / f"{r}.yaml", runs / r) for r in rows) if c]
    run_queue(jobs, parallel)


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def map_rows(function: Callable, jobs: list[tuple], parallel: int) -> list:
    """function(*job) for every job, in order: `parallel` worker processes with one torch thread each
    (a report scores its rows on the cores that training leaves free), or in this process for 1.
    `function` must be a module-level function of the benchmark (workers are spawned: they import it)."""
    if parallel <= 1 or len(jobs) <= 1:
        return [function(*job) for job in jobs]
    context = multiprocessing.get_context("spawn")  # not fork: torch's thread pools do not survive it
    with ProcessPoolExecutor(min(parallel, len(jobs)), mp_context=context, initializer=_one_thread) as pool:
        return list(pool.map(function, *zip(*jobs, strict=True)))


def read_log(folder: Path) -> list[dict]:
    """A run's log.jsonl: one dict per finished epoch."""
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def training_record(folder: Path) -> dict:
    """A run's epochs, training minutes and what trained it, from its log: the git revisions of
    bitface and the CPUs its epochs ran on ("unrecorded" for epochs logged before runs said so)."""
    log = read_log(folder)

    def seen(key: str) -> list[str]:
        return sorted({str(r.get(key, "unrecorded")) for r in log})

    return {
        "epochs": len(log),
        "train_minutes": sum(r["seconds"] for r in log) / 60,
        "trained_at": seen("git_revision"),
        "trained_on": seen("cpu"),
    }


def committed_rows(results: Path) -> tuple[dict[str, dict], str | None]:
    """The rows a committed results file holds, by name, and the git revision that wrote it."""
    if not results.is_file():
        return {}, None
    data = json.loads(results.read_text())
    return {row_name(r): r for r in data["rows"]}, data["provenance"]["git_revision"]


def row_name(row: dict) -> str:
    """A row's name: its recipe's stem ("row", or "<structure>_<method>" in the ACN table)."""
    return row["row"] if "row" in row else f"{row['structure']}_{row['method']}"


def recipe_size(recipe: Path) -> dict:
    """The network a recipe builds now, as `bitface.models.summary` counts it: params, memory_bits and
    binary and float MACs. A count, not a measurement: carried rows take it anew when the counting
    changes."""
    from bitface.models.summary import summarize
    from bitface.train.recipe import load_recipe

    loaded = load_recipe(recipe)
    size = (loaded.input.channels, loaded.crop.size, loaded.crop.size)
    totals = summarize(loaded.build_model(), size).totals()
    return {key: totals[key] for key in ("params", "memory_bits", "binary_macs", "float_macs")}


def carried(row: dict, revision: str | None, recipe: Path) -> dict:
    """A committed row kept because its run folder is not on this machine (run folders are not
    committed), saying which revision scored it, with its size counted anew from its recipe (which
    must still build a network of the parameters that were scored)."""
    size = recipe_size(recipe)
    if row["params"] != size["params"]:
        raise ValueError(
            f"{recipe}: builds {size['params']:,} parameters, the committed row {row_name(row)!r} scored "
            f"{row['params']:,}: retrain it"
        )
    earlier = row.get("scored_from", "")
    scored_from = earlier if earlier.startswith("committed") else f"committed ({revision})"
    return {**row, **{k: v for k, v in size.items() if k in row}, "scored_from": scored_from}


def pending_note(pending: list[dict]) -> str:
    if not pending:
        return ""
    listed = ", ".join(f"{p['row']} ({p['epochs_done']}/{p['epochs']})" for p in pending)
    return f"\nPending (not yet trained to their last epoch): {listed}\n"


def main(
    doc: str,
    rows: tuple[str, ...],
    recipes: Path,
    runs: Path,
    report: Callable[[int], None],
    bundle: Callable[[], None] | None = None,
) -> None:
    """`train` the rows, `report` them, or (where the benchmark ships models) `bundle`: re-export the
    shipped models from the committed results, e.g. after a change of the packed format."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("stage", choices=("train", "report") + (("bundle",) if bundle else ()))
    parser.add_argument("--rows", nargs="+", choices=list(rows), default=list(rows), help="train only these rows")
    parser.add_argument(
        "--parallel", type=int, default=2, help="rows trained, or scored by report, at once (one thread each)"
    )
    args = parser.parse_args()
    if args.stage == "train":
        train_rows(args.rows, recipes, runs, args.parallel)
    elif args.stage == "bundle":
        bundle()
    else:
        report(args.parallel)
