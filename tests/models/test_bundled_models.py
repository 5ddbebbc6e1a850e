"""The models we ship (models/*.safetensors) load, carry a card, and still score on real faces what
their benchmark (ACN Table 2 for 5 points, the hourglass ablation for 68) recorded for them: a guard
against any change in cropping, normalization or decoding that would silently shift predictions."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the checkpoints are torch models (train extra)")

from bitface.evaluate.protocol import evaluate_model  # noqa: E402
from bitface.io import read_annotations  # noqa: E402
from bitface.models.model_file import load_model  # noqa: E402
from conftest import shared_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
BUNDLED = sorted((ROOT / "models").glob("*.safetensors"))


def recorded(path: Path) -> tuple[str, str, float, float | None]:
    """(test set, normalizer, NME, NME with a test-time flip where recorded) the benchmark recorded for a
    shipped checkpoint."""
    relative = str(path.relative_to(ROOT))
    if path.stem.startswith("regression5-"):
        results = json.loads((RESULTS / "acn_table2.json").read_text())
        entry = next(b for b in results["bundled"] if b["name"] == path.stem)
        row = next(r for r in results["rows"] if (r["structure"], r["method"]) == (entry["structure"], entry["method"]))
        return "cuhk_lfw_net_5pt/testImageList.txt", "box_width", row["nme"]["cuhk_test"], None
    rows = json.loads((RESULTS / "hourglass_68.json").read_text())["rows"]
    row = next(r for r in rows if r["checkpoint"] == relative)
    smoothed = load_model(path).heatmap_smooth  # the decoding the file says, scored as such
    assert smoothed == row.get("decode_smooth", 0.0)
    nme = row["nme_io_smoothed"] if smoothed else row["nme_io"]
    return "300w_helen_68pt/testset", "interocular", nme, row["nme_io_flip"]


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_a_bundled_model_has_a_card_and_loads(path):
    card = path.with_suffix(".md").read_text()
    assert "research" in card and "Terms" in card
    model = load_model(path)
    if model.scheme.name == "5pt":  # trained on boxes: faces without one are cropped from their points
        assert model.fallback_crop is not None
    else:
        assert model.scheme.name == "68pt" and model.output == "heatmap" and model.crop.source == "points"


@pytest.mark.data
@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_a_bundled_model_scores_what_the_benchmark_recorded(path):
    test_set, normalizer, nme, nme_flip = recorded(path)
    samples = read_annotations(shared_data(test_set), check="exists").samples
    model = load_model(path)
    report = evaluate_model(model, samples[::4], normalizer)  # every 4th face: a quick check
    assert report.nme == pytest.approx(nme, rel=0.08)
    if nme_flip is not None:
        model.flip_test = True
        flipped = evaluate_model(model, samples[::4], normalizer)
        assert flipped.nme == pytest.approx(nme_flip, rel=0.08) and flipped.nme < report.nme


def test_a_shipped_hourglass_card_names_every_stage_that_trained_it():
    rows = {r["row"]: r for r in json.loads((RESULTS / "hourglass_68.json").read_text())["rows"]}
    for row in (r for r in rows.values() if r.get("checkpoint")):
        chain = [row]  # back along `init` through the other rows' runs
        while (init := Path(chain[0].get("init") or "none")).name == "model.safetensors" and init.parent.name in rows:
            chain.insert(0, rows[init.parent.name])
        card = (ROOT / row["checkpoint"]).with_suffix(".md").read_text()
        history = [line for line in card.splitlines() if line.startswith("- **Training history**")]
        if len(chain) == 1:
            assert not history, row["row"]
            continue
        named = [part.split("`")[1] for part in history[0].split(": ", 1)[1].split(" → ")]
        assert named == [r["row"] for r in chain], row["row"]
        assert f"{sum(r['epochs'] for r in chain)} epochs" in history[0]
