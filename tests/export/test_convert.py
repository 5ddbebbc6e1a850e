"""Export then run with the numpy reference: the same points as the training-time network."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export reads torch networks (train extra)")

from bitface.data.crop import CropSpec  # noqa: E402
from bitface.data.pipeline import InputSpec  # noqa: E402
from bitface.export.convert import export_model  # noqa: E402
from bitface.export.format import pack_signs, unpack_signs  # noqa: E402
from bitface.models import create_model  # noqa: E402
from bitface.models.model_file import LandmarkModel  # noqa: E402
from bitface.models.regression import METHODS, STRUCTURES  # noqa: E402
from bitface.runtime import load_packed_model, reference  # noqa: E402
from bitface.schemes import get_scheme  # noqa: E402


def trained_like(structure: str, method: str, seed: int = 0) -> LandmarkModel:
    """A network with non-trivial BatchNorm statistics and amplitudes (as after training)."""
    torch.manual_seed(seed)
    net = create_model("regression", structure=structure, method=method)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-2, 2)
                module.running_var.uniform_(0.5, 4)
                module.weight.uniform_(-1.5, 1.5)  # negative scales flip threshold directions
                module.bias.uniform_(-0.5, 0.5)
            if hasattr(module, "kernel_quantizer") and hasattr(module.kernel_quantizer, "amplitude"):
                module.kernel_quantizer.amplitude.uniform_(0.05, 0.3)
    return LandmarkModel(
        network=net.eval(),
        model_name="regression",
        model_options={"structure": structure, "method": method},
        scheme=get_scheme("5pt"),
        crop=CropSpec(size=39),
        input=InputSpec(),
    )


def test_sign_bits_round_trip_for_any_channel_count():
    rng = np.random.default_rng(0)
    for channels in (1, 5, 63, 64, 65, 130):
        w = rng.normal(size=(3, channels, 2, 2)).astype(np.float32)
        bits = pack_signs(w)
        assert bits.shape == (3, 2, 2, -(-channels // 64)) and bits.dtype == np.uint64
        np.testing.assert_array_equal(unpack_signs(bits, channels), np.where(w >= 0, 1.0, -1.0))


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("method", [m for m in METHODS])
def test_packed_reference_matches_torch(structure, method, tmp_path):
    model = trained_like(structure, method)
    path = export_model(model).save(tmp_path / "m.bitface")
    packed = load_packed_model(path)
    x = np.random.default_rng(1).normal(size=(6, 1, 39, 39)).astype(np.float32)
    expected = model.forward(x)
    np.testing.assert_allclose(packed.forward(x), expected, atol=2e-4, rtol=1e-4)


def test_binary_dot_products_are_integer_exact():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 70, 6, 6)).astype(np.float32)
    w = rng.normal(size=(5, 70, 3, 3)).astype(np.float32)
    dots = reference.conv_binary_dot(x, pack_signs(w), 70)
    expected = reference.conv_real(np.where(x >= 0, 1.0, -1.0).astype(np.float32), np.where(w >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(dots, expected.astype(np.int32))


def test_cli_export_eval_and_summary_of_a_packed_file(tmp_path, capsys):
    import json

    from bitface.cli import main
    from conftest import write_cuhk_set

    checkpoint = trained_like("10-20-40-80", "acn1bit").save(tmp_path / "m.safetensors")
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "m.bitface")]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["file"].endswith("m.bitface") and exported["bytes"] > 0
    data = write_cuhk_set(tmp_path / "data", faces=4)
    scores = []
    for model in (checkpoint, tmp_path / "m.bitface"):
        assert main(["eval", str(model), str(data), "--quiet", "--json", str(tmp_path / "r.json")]) == 0
        capsys.readouterr()
        scores.append(json.loads((tmp_path / "r.json").read_text())["nme"])
    assert scores[0] == pytest.approx(scores[1], abs=1e-3)
    # a bundled model by its name, as predict and summary take it
    assert main(["eval", "regression5-acn1bit-fast", str(data), "--quiet", "--json", str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    bundled = json.loads((tmp_path / "b.json").read_text())
    assert bundled["faces"] == 4 and bundled["model"] == "regression5-acn1bit-fast"
    assert main(["eval", "no-such-model", str(data)]) == 1
    assert "no-such-model: neither a bundled model (`bitface models` lists them) nor" in capsys.readouterr().err
    assert main(["summary", str(tmp_path / "m.bitface"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["totals"]["file_bytes"] == exported["bytes"]
    assert [r["op"] for r in summary["layers"]][:2] == ["conv", "maxpool"]


@pytest.mark.parametrize("method", ["cnn", "xnor", "acn1bit"])
def test_onnx_export_matches_torch(method, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the ONNX check runs onnxruntime (test extra)")
    import json

    from bitface.cli import main

    checkpoint = trained_like("10-20-40-80", method).save(tmp_path / "m.safetensors")
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "m.onnx")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input_shape"] == [1, 39, 39]
    assert report["max_abs_diff"] < 1e-4  # onnxruntime against PyTorch on random input


def hourglass_like(
    block: str, binarization: str, stacks: int = 1, seed: int = 0, early_pool: bool = False, **more
) -> LandmarkModel:
    """A small hourglass with trained-looking BatchNorm statistics, as a heatmap model."""
    torch.manual_seed(seed)
    options = {"num_points": 5, "block": block, "binarization": binarization, "features": 16, "depth": 2,
               "stacks": stacks, "input_size": 32, "early_pool": early_pool, **more}  # fmt: skip
    net = create_model("hourglass", **options)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(-1.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return LandmarkModel(
        network=net.eval(),
        model_name="hourglass",
        model_options=options,
        scheme=get_scheme("5pt"),
        crop=CropSpec(size=32, source="points", margin=0.2),
        input=InputSpec(),
        output="heatmap",
        heatmap_activation="sigmoid",
        heatmap_smooth=1.5,  # the packed file's decoder smooths too
    )


@pytest.mark.parametrize("block", ["hpm", "bottleneck", "multiscale", "multiscale_no1x1", "wider"])
@pytest.mark.parametrize("binarization", ["real", "xnor", "acn1bit"])
def test_hourglass_exports_as_a_graph_the_reference_runs_like_torch(block, binarization, tmp_path):
    # hpm: two stacks; bottleneck: the max-pool before the stem's first block (early_pool)
    model = hourglass_like(block, binarization, stacks=2 if block == "hpm" else 1, early_pool=block == "bottleneck")
    path = export_model(model).save(tmp_path / "hg.bitface")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled natively where the extension is built: no fallback warning
        packed = load_packed_model(path)
    assert any("inputs" in op for op in packed.packed.graph)  # residual adds and concatenations
    x = np.random.default_rng(1).normal(size=(2, 1, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(reference.run(packed.packed, x), model.forward(x), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(packed.forward(x), model.forward(x), atol=2e-5, rtol=1e-5)
    crops = np.random.default_rng(2).integers(0, 255, (2, 32, 32), dtype=np.uint8)
    points, scores = packed.predict_crops_scored(crops)  # decoded in C, from the maps where they lie
    expected_points, expected_scores = model.predict_crops_scored(crops)  # torch, then the numpy decoder
    np.testing.assert_allclose(points, expected_points, atol=1e-3)
    assert scores.shape == (2, 5) and (scores > 0).all()
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    assert packed.heatmap_smooth == 1.5


def test_a_binary_activation_stage_is_refused_with_the_way_to_a_packable_twin():
    model = hourglass_like("hpm", "binact")  # float weights on sign inputs: no popcount form
    with pytest.raises(ValueError, match="no packed form; start a binary-weight twin .* with train.init"):
        export_model(model)


def test_binary_convs_with_built_in_padding_count_padded_positions_as_zero():
    from bitface.export.format import PackedModel

    rng = np.random.default_rng(0)
    weight = np.where(rng.normal(size=(4, 3, 3, 3)) >= 0, 1.0, -1.0).astype(np.float32)
    graph = [{"op": "binconv", "in_channels": 3, "kernel": [3, 3], "binary_input": True, "padding": 1}]
    tensors = {"0.bits": pack_signs(weight), "0.scale": np.ones(4, np.float32), "0.shift": np.zeros(4, np.float32)}
    x = rng.normal(size=(1, 3, 5, 5)).astype(np.float32)
    out = reference.run(PackedModel(graph, tensors), x)
    expected = torch.nn.functional.conv2d(torch.from_numpy(np.where(x >= 0, 1.0, -1.0)).float(),
                                          torch.from_numpy(weight), padding=1).numpy()  # fmt: skip
    np.testing.assert_array_equal(out, expected)
    assert out[0, :, 0, 0].max() <= 4  # a corner sees 4 of the 9 taps


def test_int8_real_convs_pack_as_8_bit_integers_and_run_like_torch(tmp_path):
    from bitface.export.format import load_packed

    model = hourglass_like("hpm", "acn1bit", stacks=2, real_weights="int8")
    packed = export_model(model)
    int8_ops = [i for i, op in enumerate(packed.graph) if op.get("weight_dtype") == "int8"]
    assert len(int8_ops) == 5  # the stem's first conv, two heads, the merge's two 1x1 convs
    assert all(packed.graph[i]["op"] == "conv" for i in int8_ops)
    assert not any(op["op"] == "conv" and "weight_dtype" not in op for op in packed.graph)  # every real conv
    path = packed.save(tmp_path / "hg.bitface")
    assert load_packed(path).graph[int8_ops[0]]["weight_dtype"] == "int8"
    runner = load_packed_model(path)
    x = np.random.default_rng(1).normal(size=(2, 1, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(reference.run(runner.packed, x), model.forward(x), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(runner.forward(x), model.forward(x), atol=2e-5, rtol=1e-5)
    in_memory = sum(packed.tensors[f"{i}.weight"].size for i in int8_ops)
    from safetensors.numpy import load_file

    assert load_file(str(path))["int8"].size == in_memory


def test_an_affine_only_signs_read_keeps_its_signs_as_a_unit_scale_and_a_shift():
    from bitface.export.convert import sign_only_affines
    from bitface.export.format import PackedModel

    rng = np.random.default_rng(0)
    scale = np.array([2.0, -0.5, 0.0, 0.0, 1e-3, -3.0], np.float32)
    shift = np.array([0.3, 0.2, 0.5, -0.5, -1e-4, 0.0], np.float32)
    binconv = {"op": "binconv", "in_channels": 6, "kernel": [1, 1], "binary_input": True}
    graph = [{"op": "affine"}, {**binconv, "inputs": [0]}, {**binconv, "inputs": [0]},  # two sign readers
             {"op": "affine", "inputs": [-1]}, {**binconv, "inputs": [3]}, {"op": "relu", "inputs": [3]},
             {"op": "affine", "inputs": [-1]}, {**binconv, "inputs": [6], "binary_input": False}]  # fmt: skip
    tensors = {f"{i}.{n}": t.copy() for i in (0, 3, 6) for n, t in (("scale", scale), ("shift", shift))}
    sign_only_affines(PackedModel(graph, tensors))
    np.testing.assert_array_equal(tensors["0.scale"], [1, -1, 1, 1, 1, -1])
    x = rng.normal(size=(1000, 6)).astype(np.float32)
    x[:6] = -shift / np.where(scale == 0, 1, scale)  # on the thresholds themselves
    np.testing.assert_array_equal(x * tensors["0.scale"] + tensors["0.shift"] >= 0, x * scale + shift >= 0)
    for i in (3, 6):  # also read by a ReLU; read by a layer of real inputs: the values matter, unchanged
        np.testing.assert_array_equal(tensors[f"{i}.scale"], scale)
        np.testing.assert_array_equal(tensors[f"{i}.shift"], shift)
