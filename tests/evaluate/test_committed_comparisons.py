"""The committed hourglass ablation's comparison section (the papers' claims as they come out here)
follows from the committed per-face errors: each difference, interval and verdict recomputes exactly,
and each NME is its row's in the table."""

import json
from pathlib import Path

import numpy as np
import pytest

from bitface.evaluate import paired_difference

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_the_committed_paper_comparisons_follow_from_the_per_face_errors():
    results = json.loads((RESULTS / "hourglass_68.json").read_text())
    per_face = json.loads((RESULTS / "hourglass_68_per_face.json").read_text())
    nme = {r["row"]: r["nme_io"] for r in results["rows"]}
    trained_at = {r["row"]: r.get("trained_at", ["unrecorded"]) for r in results["rows"]}
    scored = [c for c in results["paper_comparisons"] if "difference" in c]
    assert scored, "no comparison has both rows scored"
    for c in results["paper_comparisons"]:
        if "difference" not in c:
            assert c["here"] in ("pending", "no per-face errors")
            continue
        assert (c["nme_io_better"], c["nme_io_worse"]) == (nme[c["better"]], nme[c["worse"]])
        assert c["trained_at"] == [trained_at[c["better"]], trained_at[c["worse"]]]  # the code that trained them
        diff = paired_difference(100 * np.array(per_face[c["better"]]), 100 * np.array(per_face[c["worse"]]))
        assert (diff.mean, [diff.low, diff.high], diff.verdict(-1)) == (c["difference"], c["ci95"], c["here"])
        for row in (c["better"], c["worse"]):  # the per-face errors are the row's (rounded to 1e-6)
            assert abs(100 * np.mean(per_face[row]) - nme[row]) < 1e-3, row


def test_every_committed_rows_size_is_what_its_recipe_builds_now():
    """Sizes are counts, not measurements: a committed table holds the count of today's summary (a
    report recounts carried rows), so rows counted before a change of the counting cannot linger."""
    pytest.importorskip("torch", reason="counting a recipe's network builds it (train extra)")
    from bitface.models.summary import summarize
    from bitface.train.recipe import load_recipe

    root = RESULTS.parents[1]
    for family in ("hourglass_68", "face_parts", "acn_table2"):
        for row in json.loads((RESULTS / f"{family}.json").read_text())["rows"]:
            recipe = load_recipe(root / row["recipe"])
            shape = (recipe.input.channels, recipe.crop.size, recipe.crop.size)
            totals = summarize(recipe.build_model(), shape).totals()
            assert (row["params"], row["memory_bits"]) == (totals["params"], totals["memory_bits"]), row["recipe"]
