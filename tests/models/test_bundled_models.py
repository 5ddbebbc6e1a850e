"""The models we ship (models/*.safetensors) load, carry a card, and still score on real faces what
the Table 2 benchmark recorded for them: a guard against any change in cropping, normalization or
decoding that would silently shift predictions."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the checkpoints are torch models (train extra)")

from bitface.evaluate.protocol import evaluate_model  # noqa: E402
from bitface.io import read_annotations  # noqa: E402
from bitface.models.model_file import load_model  # noqa: E402
from conftest import shared_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "acn_table2.json"
BUNDLED = sorted((ROOT / "models").glob("*.safetensors"))


def recorded(name: str) -> dict:
    rows = {b["name"]: b for b in json.loads(RESULTS.read_text())["bundled"]}
    return rows[name]


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_a_bundled_model_has_a_card_and_loads(path):
    card = path.with_suffix(".md").read_text()
    assert "research" in card and "Terms" in card
    model = load_model(path)
    assert model.scheme.name == "5pt" and model.fallback_crop is not None


@pytest.mark.data
@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_a_bundled_model_scores_what_the_benchmark_recorded(path):
    source = shared_data("cuhk_lfw_net_5pt/testImageList.txt")
    samples = read_annotations(source, check="exists").samples
    entry = recorded(path.stem)
    rows = json.loads(RESULTS.read_text())["rows"]
    row = next(r for r in rows if (r["structure"], r["method"]) == (entry["structure"], path.stem.split("-")[-1]))
    report = evaluate_model(load_model(path), samples[::4], "box_width")  # every 4th face: a quick check
    assert report.nme == pytest.approx(row["nme"]["cuhk_test"], rel=0.08)
