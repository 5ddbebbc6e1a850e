import json
import re

import pytest

pytest.importorskip("torch", reason="summaries of architectures need the train extra (torch)")

from bitface.cli import main  # noqa: E402
from bitface.models import create_model  # noqa: E402
from bitface.models.summary import PAPER_BLOCKS, blocks_table, compare_blocks, summarize  # noqa: E402


def test_the_table_keeps_its_columns_apart_for_deep_layer_names():
    summary = summarize(create_model("hourglass", block="hpm", binarization="xnor", features=16), (1, 64, 64))
    longest = max(summary.rows, key=lambda r: len(r.name))
    assert len(longest.name) > 22  # deeper than the narrowest column would hold
    lines = summary.table().splitlines()
    for row, line in zip(summary.rows, lines[2:], strict=False):
        name, kind, params, *_ = re.split(r"\s{2,}", line.strip())
        assert (name, kind, int(params.replace(",", ""))) == (row.name, row.kind, row.params)


def test_blocks_side_by_side_with_the_papers_parameter_comparisons():
    rows = {r["block"]: r for r in compare_blocks(256, "xnor")}
    assert [r[0] for r in PAPER_BLOCKS] == list(rows)
    bottleneck = rows["bottleneck"]
    # Fig. 4(a) at 256: 1x1 256->128, 3x3 128->128, 1x1 128->256 binary weights, plus BatchNorm's two values
    # per input channel and XNOR's one scale per output channel; each BatchNorm only a sign reads, so it
    # is stored as a threshold and a direction: 33 bits per channel
    weights = 256 * 128 + 128 * 128 * 9 + 128 * 256
    assert bottleneck["params"] == weights + 2 * (256 + 128 + 128) + (128 + 128 + 256)
    assert bottleneck["memory_bits"] == weights + 33 * (256 + 128 + 128) + 32 * (128 + 128 + 256)
    # Table 4's matched pair: the final block at 3/4 width (192 channels) has about the bottleneck's parameters
    matched = rows["hpm at 3/4 width"]
    assert matched["channels"] == 192 and matched["params_vs_bottleneck"] == pytest.approx(1.0, abs=0.1)
    assert matched["paper_params_vs_bottleneck"] == pytest.approx(4.0 / 3.5)
    assert rows["hpm"]["params_vs_bottleneck"] > 1.5  # and the full-width one is the larger, as in Table 2
    text = blocks_table(list(rows.values()), "xnor")
    assert all(name in text for name in rows) and "11.3M" in text and "Tables 2 and 4" in text


def test_cli_summary_of_blocks(capsys):
    assert main(["summary", "blocks", "--set", "width=64", "--set", "binarization=real", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["width"] == 64 and out["blocks"][-1]["channels"] == 48
    real = out["blocks"][0]
    assert real["memory_bits"] == 32 * real["params"]  # a real block: 32 bits a value
    assert main(["summary", "blocks", "--set", "depth=3"]) == 1
    assert "takes --set width=N and binarization=NAME, not ['depth']" in capsys.readouterr().err
    assert main(["summary", "blocks", "--set", "width=100"]) == 1
    assert "divisible by 8" in capsys.readouterr().err
    assert main(["summary", "blocks", "--set", "width=wide"]) == 1
    assert "whole number of channels" in capsys.readouterr().err
