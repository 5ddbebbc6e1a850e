import json

import pytest

torch = pytest.importorskip("torch", reason="models need the train extra (torch)")

from bitface.cli import main  # noqa: E402
from bitface.models import create_model  # noqa: E402
from bitface.models.regression import METHODS, STRUCTURES  # noqa: E402
from bitface.models.summary import summarize  # noqa: E402

# The ACN paper's Table 2 parameter counts (millions), which our structures must reproduce.
PAPER_PARAMS_M = {"10-20-40-80": 0.06, "20-40-60-80": 0.09, "40-60-80-100": 0.15, "20-20-40-40-60-60-80-80": 0.16}


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("method", METHODS)
def test_every_structure_and_method_builds_trains_one_step_and_predicts_points(structure, method):
    torch.manual_seed(0)
    model = create_model("regression", structure=structure, method=method)
    out = model(torch.randn(4, 1, 39, 39))
    assert out.shape == (4, 5, 2)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_parameter_counts_match_the_paper(structure):
    summary = summarize(create_model("regression", structure=structure, method="acn"), (1, 39, 39))
    weights = sum(r.params for r in summary.rows if "BatchNorm" not in r.kind)
    assert round(weights / 1e6, 2) == pytest.approx(PAPER_PARAMS_M[structure], abs=0.006)


def test_summary_counts_bits_as_the_papers_do():
    summary = summarize(create_model("regression", structure="20-40-60-80", method="acn1bit"), (1, 39, 39))
    rows = {r.name: r for r in summary.rows}
    conv2 = rows["features.conv2.0"]
    assert (conv2.weight_bits, conv2.input_bits, conv2.binary_macs) == (1, 1, True)
    assert conv2.memory_bits == 20 * 40 * 9 + 32  # bits + one Â
    assert conv2.macs == 40 * 16 * 16 * 20 * 9
    assert rows["features.conv1.0"].weight_bits == 32 and rows["fc2"].weight_bits == 32  # kept real
    real = summarize(create_model("regression", structure="20-40-60-80", method="cnn"), (1, 39, 39))
    assert real.memory_bits == 32 * real.params and summary.totals()["compression"] > 15


def test_keep_real_policy_is_visible_and_checked():
    model = create_model("regression", method="xnor", keep_real=("conv1", "conv2", "fc2"))
    rows = {r.name: r for r in summarize(model, (1, 39, 39)).rows}
    assert rows["features.conv2.0"].weight_bits == 32 and rows["features.conv3.0"].weight_bits == 1
    with pytest.raises(ValueError, match=r"keep_real names unknown layers \['conv9'\]"):
        create_model("regression", keep_real=("conv9",))
    with pytest.raises(ValueError, match="unknown structure '1-2-3'"):
        create_model("regression", structure="1-2-3")
    with pytest.raises(KeyError, match="unknown model 'resnet'"):
        create_model("resnet")


def test_summary_cli(capsys):
    assert main(["summary", "regression", "--set", "structure=10-20-40-80", "--set", "method=acn", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["options"] == {"structure": "10-20-40-80", "method": "acn"} and data["totals"]["compression"] > 1
    assert main(["summary", "regression", "--set", "depth=3"]) == 1
    assert "unexpected keyword argument 'depth'" in capsys.readouterr().err
