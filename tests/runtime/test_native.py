"""The native runtime gives the numpy reference's results on every kernel path: integer-exact in
binary layers (the same floats out of them), and to float rounding in real layers."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from bitface.export.format import PackedModel, pack_signs
from bitface.runtime import native, reference
from bitface.runtime.plan import Unsupported, compile_plan

pytestmark = pytest.mark.skipif(native._native is None, reason=f"{native.NATIVE_MISSING}")
PATHS = native._native.available() if native._native is not None else []


@pytest.fixture(params=PATHS)
def kernel_path(request):
    before = native._native.isa()
    native._native.set_isa(request.param)
    yield request.param
    native._native.set_isa(before)


def layer(rng, graph, tensors, op, out, fan_in, **attrs):
    i = len(graph)
    graph.append({"op": op, **attrs})
    scale = rng.normal(0, 1, out).astype(np.float32)
    scale[0] = 0.0  # a constant channel (all bits one way)
    scale[1] = -abs(scale[1])  # a negative scale flips the threshold's direction
    tensors[f"{i}.scale"] = scale
    tensors[f"{i}.shift"] = rng.normal(0, np.sqrt(fan_in), out).astype(np.float32) * np.abs(scale)
    return i


def binconv(rng, graph, tensors, cin, cout, k, binary_input=True):
    i = layer(
        rng, graph, tensors, "binconv", cout, cin * k * k, in_channels=cin, kernel=[k, k], binary_input=binary_input
    )
    tensors[f"{i}.bits"] = pack_signs(rng.normal(size=(cout, cin, k, k)))


def binlinear(rng, graph, tensors, features, out, binary_input=True):
    i = layer(rng, graph, tensors, "binlinear", out, features, in_channels=features, binary_input=binary_input)
    tensors[f"{i}.bits"] = pack_signs(rng.normal(size=(out, features)))


def real(rng, graph, tensors, op, weight_shape):
    i = layer(rng, graph, tensors, op, weight_shape[0], int(np.prod(weight_shape[1:])))
    tensors[f"{i}.weight"] = rng.normal(0, 0.3, weight_shape).astype(np.float32)


def binary_chain(seed=0, channels=(70, 100, 130), size=(13, 11)) -> PackedModel:
    """Binary layers only, from a signed input: wide channels (several words), padding, pooling,
    a ReLU before a sign, odd sizes, and a binary linear on the flattened map."""
    rng = np.random.default_rng(seed)
    graph, tensors = [], {}
    c0, c1, c2 = channels
    graph.append({"op": "pad", "pad": [1, 1, 1, 1]})
    binconv(rng, graph, tensors, c0, c1, 3)
    graph.append({"op": "maxpool", "size": 2})
    graph.append({"op": "pad", "pad": [1, 0, 0, 1]})
    binconv(rng, graph, tensors, c1, c2, 2)
    graph.append({"op": "relu"})  # sign(relu(x)) is +1: a layer of constant ones
    graph.append({"op": "pad", "pad": [1, 1, 1, 1]})
    binconv(rng, graph, tensors, c2, 40, 3)
    h, w = size[0] // 2, size[1] // 2
    graph.append({"op": "flatten"})
    binlinear(rng, graph, tensors, 40 * h * w, 9)
    return PackedModel(graph, tensors, {"input_shape": [c0, *size]})


def regression_like(seed=0, first=20) -> PackedModel:
    """The 5-point networks' pattern: a real first conv, binary convs, real last layer."""
    rng = np.random.default_rng(seed)
    graph, tensors = [], {}
    real(rng, graph, tensors, "conv", (first, 1, 4, 4))
    graph.append({"op": "maxpool", "size": 2})
    binconv(rng, graph, tensors, first, 33, 3)
    graph.append({"op": "maxpool", "size": 2})
    binconv(rng, graph, tensors, 33, 17, 3, binary_input=False)  # ACN-style: real input
    graph.append({"op": "relu"})
    graph.append({"op": "flatten"})
    binlinear(rng, graph, tensors, 17 * 2 * 2, 12, binary_input=False)
    graph.append({"op": "relu"})
    real(rng, graph, tensors, "linear", (10, 12))
    return PackedModel(graph, tensors, {"input_shape": [1, 23, 23]})


def inputs(model, batch=3, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, *model.meta["input_shape"])).astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_binary_layers_are_exact_on_every_kernel_path(kernel_path, seed):
    model = binary_chain(seed, channels=[(70, 100, 130), (3, 64, 65), (128, 20, 200)][seed])
    x = inputs(model)
    expected = reference.run(model, x)
    got = native.Network(model)(x)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_widths_not_a_multiple_of_eight_pixels_or_sixteen_channels(kernel_path):
    for size in [(3, 3), (5, 17), (20, 9)]:
        model = binary_chain(4, channels=(5, 17, 31), size=size)
        x = inputs(model, batch=2)
        np.testing.assert_array_equal(native.Network(model)(x), reference.run(model, x))


@pytest.mark.parametrize("first", [10, 40])  # the gray first layer has two kernels, split at 32
def test_real_layers_match_to_rounding(kernel_path, first):
    model = regression_like(first=first)
    x = inputs(model, batch=4)
    np.testing.assert_allclose(native.Network(model)(x), reference.run(model, x), rtol=1e-4, atol=1e-4)


def test_a_float_network_runs_natively_and_matches(kernel_path):
    rng = np.random.default_rng(3)
    graph, tensors = [{"op": "pad", "pad": [1, 1, 1, 1]}], {}
    real(rng, graph, tensors, "conv", (24, 3, 3, 3))
    graph += [{"op": "relu"}, {"op": "maxpool", "size": 2}, {"op": "flatten"}]
    real(rng, graph, tensors, "linear", (6, 24 * 4 * 5))
    model = PackedModel(graph, tensors, {"input_shape": [3, 8, 10]})
    x = inputs(model)
    np.testing.assert_allclose(native.Network(model)(x), reference.run(model, x), rtol=1e-4, atol=1e-5)


def test_the_plan_fuses_signs_pools_and_padding():
    plan = compile_plan(regression_like())
    kinds = [stage[0][0] for stage in plan.stages]
    # input, conv (to bits), pool as OR, binary conv (to float), pool, conv, binary linear, linear
    assert kinds == [0, 1, 4, 2, 3, 1, 1, 1]
    assert plan.layout[1].bits and not plan.layout[3].bits


def test_thresholds_reproduce_the_float_sign_for_every_dot():
    model = binary_chain(0, channels=(3, 64, 65))
    plan = compile_plan(model)
    _, _, scale, shift, lo, hi = plan.stages[2]
    k = 3 * 9
    dots = np.arange(-k, k + 1, dtype=np.float32)
    on = (dots[None] * scale[:, None] + shift[:, None]) >= 0
    rebuilt = (dots[None] >= lo[:, None]) & (dots[None] <= hi[:, None])
    np.testing.assert_array_equal(on, rebuilt)


def test_unsupported_graphs_fall_back_to_the_reference_and_say_so():
    model = PackedModel([{"op": "relu"}], {}, {"input_shape": [1, 2, 2]})
    with pytest.raises(Unsupported, match="relu on the network input"):
        compile_plan(model)
    with pytest.warns(RuntimeWarning, match="numpy reference"):
        network = native.Network(model)
    assert network.path == "reference"
    x = inputs(model)
    np.testing.assert_array_equal(network(x), np.maximum(x, 0))


def test_the_reference_can_be_forced(monkeypatch):
    monkeypatch.setenv("BITFACE_RUNTIME", "reference")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        network = native.Network(binary_chain())
    assert network.path == "reference" and native.kernel_path() == "reference"


def test_an_unavailable_kernel_path_is_refused():
    with pytest.raises(ValueError, match="not available"):
        native._native.set_isa("neon")


def test_the_runtime_imports_and_runs_without_torch(tmp_path):
    path = tmp_path / "m.bitface"
    model = regression_like()
    model.meta.update(
        scheme="5pt",
        crop={"size": 23, "source": "box", "margin": 0.0, "shift_y": 0.0, "shift_x": 0.0},
        fallback_crop=None,
        input={"channels": 1, "mean": 127.5, "std": 127.5},
        output="normalized",
    )
    model.save(path)
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
        "import numpy as np, bitface.runtime as rt\n"
        "from bitface.runtime.native import kernel_path\n"
        f"model = rt.load_packed_model({str(path)!r})\n"
        "out = model.forward(np.zeros((1, 1, 23, 23), np.float32))\n"
        "print(kernel_path(), out.shape, 'torch' in sys.modules and sys.modules['torch'] is not None)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "False"
