"""The native runtime gives the numpy reference's results on every kernel path: integer-exact in
binary layers (the same floats out of them), and to float rounding in real layers."""

import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import pytest

from bitface.data.pipeline import InputSpec
from bitface.export.format import PackedModel, pack_signs
from bitface.runtime import native, reference
from bitface.runtime.plan import (
    ADD,
    AFFINE,
    BCONV,
    BPOOL,
    CONV,
    FIELDS,
    INPUT,
    POOL,
    SIGN,
    Unsupported,
    compile_plan,
)
from conftest import KERNEL_PATHS as PATHS

pytestmark = pytest.mark.skipif(native._native is None, reason=f"{native.NATIVE_MISSING}")


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


def regression_like(seed=0, first=20, kernel=4) -> PackedModel:
    """The 5-point networks' pattern: a real first conv, binary convs, real last layer."""
    rng = np.random.default_rng(seed)
    graph, tensors = [], {}
    real(rng, graph, tensors, "conv", (first, 1, kernel, kernel))
    side = ((23 - kernel + 1) // 2 - 2) // 2 - 2
    graph.append({"op": "maxpool", "size": 2})
    binconv(rng, graph, tensors, first, 33, 3)
    graph.append({"op": "maxpool", "size": 2})
    binconv(rng, graph, tensors, 33, 17, 3, binary_input=False)  # ACN-style: real input
    graph.append({"op": "relu"})
    graph.append({"op": "flatten"})
    binlinear(rng, graph, tensors, 17 * side * side, 12, binary_input=False)
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


@pytest.mark.parametrize("cin", [21, 71])  # odd: the border corrections are odd, so their halves round
def test_padded_thresholds_hold_at_equality_on_the_border(kernel_path, cin):
    """Each channel's threshold is the dot product of one border or corner pixel, or one more or less
    (dots there have the parity of the corrected range, not the interior's), in either direction: an
    off-by-one in the border's corrected ranges flips a sign there."""
    rng = np.random.default_rng(cin)
    h, w, cout = 9, 19, 48
    x = rng.normal(size=(1, cin, h, w)).astype(np.float32)
    weights = rng.normal(size=(cout, cin, 3, 3))
    signs = np.pad(np.where(x[0] >= 0, 1, -1), ((0, 0), (1, 1), (1, 1)))  # zero padding contributes 0
    kernel = np.where(weights >= 0, 1, -1)
    dots = np.zeros((cout, h, w))
    for dy in range(3):
        for dx in range(3):
            dots += np.einsum("oc,chw->ohw", kernel[:, :, dy, dx], signs[:, dy : dy + h, dx : dx + w])
    border = [(y, x_) for y in range(h) for x_ in range(w) if y in (0, h - 1) or x_ in (0, w - 1)]
    picks = [border[i] for i in rng.choice(len(border), cout)]
    targets = np.array([dots[o, y, x_] for o, (y, x_) in enumerate(picks)], np.float32)
    targets += rng.integers(-1, 2, cout)
    scale = np.where(np.arange(cout) % 2, -1.0, 1.0).astype(np.float32)  # dot >= t, or dot <= t
    scale[0] = 0.0  # a constant channel
    graph = [
        {"op": "binconv", "in_channels": cin, "kernel": [3, 3], "binary_input": True, "padding": 1},
        {"op": "binconv", "in_channels": cout, "kernel": [1, 1], "binary_input": True},
    ]
    tensors = {"0.bits": pack_signs(weights), "0.scale": scale, "0.shift": -scale * targets}
    tensors["1.bits"] = pack_signs(rng.normal(size=(7, cout, 1, 1)))
    tensors["1.scale"], tensors["1.shift"] = rng.normal(size=7).astype(np.float32), np.zeros(7, np.float32)
    model = PackedModel(graph, tensors, {"input_shape": [cin, h, w]})
    params = dict(zip(FIELDS, compile_plan(model).stages[2][0], strict=True))
    assert params["out_mode"] == 1 and params["fix_w"] > 0  # sign bits out, with border corrections
    np.testing.assert_array_equal(native.Network(model)(x), reference.run(model, x))


def test_two_sided_thresholds_take_the_general_kernel():
    """No BatchNorm gives a range bounded on both sides (the fast kernel's epilogue assumes one side),
    but a plan that has one still gets it right: edited ranges, every kernel path against portable."""
    rng = np.random.default_rng(0)
    graph, tensors = [], {}
    binconv(rng, graph, tensors, 70, 40, 3)
    graph[0]["padding"] = 1
    binconv(rng, graph, tensors, 40, 7, 1)
    model = PackedModel(graph, tensors, {"input_shape": [70, 9, 11]})
    compiled = compile_plan(model)
    stage = next(k for k, (p, *_) in enumerate(compiled.stages) if p[0] == BCONV and p[FIELDS.index("out_mode")])
    params, weight, scale, shift, lo, hi, *rest = compiled.stages[stage]
    lo, hi = lo.copy(), hi.copy()
    lo[::2], hi[::2] = -6, 10  # two-sided: on only for dots near 0
    stages = list(compiled.stages)
    stages[stage] = (params, weight, scale, shift, lo, hi, *rest)
    x = inputs(model, batch=1)[0]
    outputs = {}
    before = native._native.isa()
    try:
        for path in PATHS:
            native._native.set_isa(path)
            plan = native._native.Plan(stages, compiled.buffers, compiled.output, x.size)
            outputs[path] = np.empty(compiled.output_shape, np.float32)
            plan.run(x[None], outputs[path][None])
    finally:
        native._native.set_isa(before)
    for path in PATHS:
        np.testing.assert_array_equal(outputs[path], outputs["portable"])
    assert not np.array_equal(outputs["portable"], reference.run(model, x[None])[0])  # the edit mattered


# the gray first layer has its own kernel up to 16 taps (any number of output words), the general one beyond
@pytest.mark.parametrize("first, kernel", [(10, 4), (40, 4), (130, 4), (33, 3), (20, 5)])
def test_real_layers_match_to_rounding(kernel_path, first, kernel):
    model = regression_like(first=first, kernel=kernel)
    x = inputs(model, batch=4)
    np.testing.assert_allclose(native.Network(model)(x), reference.run(model, x), rtol=1e-4, atol=1e-4)


def float_network() -> PackedModel:
    rng = np.random.default_rng(3)
    graph, tensors = [{"op": "pad", "pad": [1, 1, 1, 1]}], {}
    real(rng, graph, tensors, "conv", (24, 3, 3, 3))
    graph += [{"op": "relu"}, {"op": "maxpool", "size": 2}, {"op": "flatten"}]
    real(rng, graph, tensors, "linear", (6, 24 * 4 * 5))
    return PackedModel(graph, tensors, {"input_shape": [3, 8, 10]})


def test_a_float_network_runs_natively_and_matches(kernel_path):
    model = float_network()
    x = inputs(model)
    np.testing.assert_allclose(native.Network(model)(x), reference.run(model, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", [regression_like(first=40), float_network()], ids=["gray", "rgb"])
def test_uint8_crops_are_normalized_natively_with_the_same_result(kernel_path, model):
    """run_crops normalizes in the input stage exactly as InputSpec.normalize does in numpy."""
    channels, height, width = model.meta["input_shape"]
    spec = InputSpec(channels=channels, mean=127.5, std=58.3)
    shape = (4, height, width) if channels == 1 else (4, height, width, channels)
    crops = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    network = native.Network(model)
    np.testing.assert_array_equal(network.run_crops(crops, spec.mean, spec.std), network(spec.normalize(crops)))
    with pytest.raises(ValueError, match="run_crops"):
        network.run_crops(crops[:, :-1], spec.mean, spec.std)


def test_the_plan_fuses_signs_pools_and_padding():
    plan = compile_plan(regression_like())
    # input, conv (to bits), pool as OR, binary conv (to float) with the max-pool in its epilogue, conv,
    # binary linear, linear
    assert plan.kinds == [INPUT, CONV, BPOOL, BCONV, CONV, CONV, CONV]
    conv, pooled = (dict(zip(FIELDS, plan.stages[k][0], strict=True)) for k in (1, 3))
    assert plan.layout[conv["out_buf"]].bits and not plan.layout[pooled["out_buf"]].bits
    assert (pooled["pool"], pooled["ho"], pooled["wo"]) == (2, 8, 8)  # the conv's size; it writes 4 x 4


def test_values_whose_lifetimes_do_not_overlap_share_a_buffer():
    """The blocks reuse a few buffers instead of one per value (the hourglass's working set then fits
    the cache); a stage never writes a buffer it reads, except a sum written over one of its terms or
    another channel slice of a concat."""
    model = hourglass_graph(channels=24, size=(8, 8))
    plan = compile_plan(model)
    params = [dict(zip(FIELDS, p, strict=True)) for p, *_ in plan.stages]
    written = sum((p["out_buf"] >= 0) + (p["aff_buf"] >= 0) for p in params)
    assert len(plan.buffers) < written - 10
    for k, p in enumerate(params):
        reads = {p["in_buf"], p["in2_buf"]} - {-1}
        assert p["aff_buf"] not in reads, f"stage {k}"
        if p["out_buf"] == p["in_buf"] and p["kind"] != ADD:
            assert p["out_off"] != p["in_off"], f"stage {k}"  # the pool writing beside its input in a concat
        if p["out_buf"] == p["in2_buf"]:
            assert p["kind"] in (ADD, BCONV), f"stage {k}"
    x = inputs(model, batch=2)
    np.testing.assert_allclose(native.Network(model)(x), reference.run(model, x), rtol=1e-4, atol=1e-4)


def test_thresholds_reproduce_the_float_sign_for_every_dot():
    model = binary_chain(0, channels=(3, 64, 65))
    plan = compile_plan(model)
    _, _, scale, shift, lo, hi = plan.stages[2][:6]
    k = 3 * 9
    dots = np.arange(-k, k + 1, dtype=np.float32)
    on = (dots[None] * scale[:, None] + shift[:, None]) >= 0
    rebuilt = (dots[None] >= lo[:, None]) & (dots[None] <= hi[:, None])
    np.testing.assert_array_equal(on, rebuilt)


def test_unsupported_graphs_fall_back_to_the_reference_and_say_so():
    rng = np.random.default_rng(0)
    graph, tensors = [], {}
    binconv(rng, graph, tensors, 8, 4, 3)
    graph[0]["stride"] = 2
    model = PackedModel(graph, tensors, {"input_shape": [8, 9, 9]})
    with pytest.raises(Unsupported, match="strided binary convolution"):
        compile_plan(model)
    with pytest.warns(RuntimeWarning, match="numpy reference"):
        network = native.Network(model)
    assert network.path == "reference"
    x = inputs(model)
    np.testing.assert_array_equal(network(x), reference.run(model, x))


def test_a_relu_on_the_network_input_runs_natively(kernel_path):
    model = PackedModel([{"op": "relu"}], {}, {"input_shape": [3, 2, 5]})
    x = inputs(model)
    np.testing.assert_array_equal(native.Network(model)(x), np.maximum(x, 0))


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


def affine(rng, graph, tensors, channels, source=None):
    i = len(graph)
    graph.append({"op": "affine", **({"inputs": [source]} if source is not None else {})})
    tensors[f"{i}.scale"] = rng.uniform(-1.5, 1.5, channels).astype(np.float32)
    tensors[f"{i}.shift"] = rng.normal(0, 0.3, channels).astype(np.float32)
    return i


def residual_block(rng, graph, tensors, source, cin, widths, pool=None):
    """The hierarchical block's pattern: BN -> sign -> padded binary conv, chained; the outputs
    concatenated and added to the input (through a 1x1 binary conv when the widths differ)."""
    outs, prev, c = [], source, cin
    for width in widths:
        affine(rng, graph, tensors, c, prev)
        binconv(rng, graph, tensors, c, width, 3)
        graph[-1]["padding"] = 1
        outs.append(prev := len(graph) - 1)
        c = width
    graph.append({"op": "concat", "inputs": outs})
    concat, skip = len(graph) - 1, source
    if sum(widths) != cin:
        affine(rng, graph, tensors, cin, source)
        binconv(rng, graph, tensors, cin, sum(widths), 1)
        skip = len(graph) - 1
    graph.append({"op": "add", "inputs": [concat, skip]})
    return len(graph) - 1


def hourglass_graph(seed=0, channels=24, size=(10, 14)) -> PackedModel:
    """A small hourglass-shaped DAG with every op the native plan fuses: affine -> sign (alone, and in
    the epilogues of real convs, binary convs, adds and max-pools), padded binary convs (their border
    correction), concat in place (nested), residual adds, max-pools on floats (2x2, and 3x3 stride 1
    padded with -inf), nearest upsampling, a ReLU on a sum, a real 1x1 head."""
    rng = np.random.default_rng(seed)
    graph, tensors = [], {}
    real(rng, graph, tensors, "conv", (6, 5, 3, 3))  # a real stem read by two affines (both fuse)
    graph[-1]["padding"] = 1
    a = residual_block(rng, graph, tensors, 0, 6, (channels // 2, channels // 4, channels // 4))
    for _ in range(2):  # identity skips: adds that the next block's affine fuses into
        a = residual_block(rng, graph, tensors, a, channels, (channels // 2, channels // 4, channels // 4))
    graph.append({"op": "maxpool", "size": 2})
    down = residual_block(rng, graph, tensors, len(graph) - 1, channels, (channels // 2, channels // 2))
    graph.append({"op": "maxpool", "size": 3, "stride": 1, "padding": 1})
    wide = len(graph) - 1
    graph.append({"op": "concat", "inputs": [down, wide]})  # a concat of a sum and a pool
    merged = len(graph) - 1
    affine(rng, graph, tensors, 2 * channels, merged)
    binconv(rng, graph, tensors, 2 * channels, channels, 1)
    graph.append({"op": "upsample", "factor": 2})
    graph.append({"op": "add", "inputs": [a, len(graph) - 1]})
    graph.append({"op": "relu"})
    real(rng, graph, tensors, "conv", (7, channels, 1, 1))
    h, w = size
    return PackedModel(graph, tensors, {"input_shape": [5, h, w]})


@pytest.mark.parametrize("size", [(8, 8), (10, 14), (6, 18)])
def test_hourglass_graphs_run_natively_and_exactly(kernel_path, size):
    model = hourglass_graph(channels=[24, 72, 16][size[0] % 3], size=size)
    network = native.Network(model)
    assert network.path == kernel_path
    fused = {params[0] for params, *_ in network.compiled.stages if params[FIELDS.index("aff_buf")] >= 0}
    assert fused == {CONV, BCONV, ADD, POOL}  # every kind of epilogue that writes a following sign
    stem = dict(zip(FIELDS, network.compiled.stages[1][0], strict=True))
    assert stem["aff2_buf"] >= 0 and stem["no_store"] == 1  # read by two BatchNorms: two signs, no floats
    out, in1, in2 = (FIELDS.index(f) for f in ("out_buf", "in_buf", "in2_buf"))
    assert any(p[out] in (p[in1], p[in2]) for p, *_ in network.compiled.stages)  # sums written in place
    x = inputs(model, batch=2)
    expected = reference.run(model, x)
    got = network(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)  # the real 1x1 head rounds differently
    # every value before the head is exact: compare the head's input through a network ending there
    head = len(model.graph) - 1
    tensors = {k: v for k, v in model.tensors.items() if int(k.split(".")[0]) < head}
    trunk = PackedModel(model.graph[:head], tensors, model.meta)
    np.testing.assert_array_equal(native.Network(trunk)(x), reference.run(trunk, x))


@pytest.mark.parametrize("size", [(8, 8), (10, 14), (7, 9)])
def test_a_pool_after_a_projected_block_runs_in_the_convs_epilogue(kernel_path, size):
    """The hourglass's first block: its 1x1 projection's epilogue adds the concat, max-pools 2x2 and
    writes the next block's input signs; at odd sizes the pool stays a stage of its own."""
    rng = np.random.default_rng(3)
    graph, tensors = [], {}
    real(rng, graph, tensors, "conv", (6, 5, 3, 3))
    graph[-1]["padding"] = 1
    block = residual_block(rng, graph, tensors, 0, 6, (20, 10, 10))
    graph.append({"op": "maxpool", "size": 2, "inputs": [block]})
    residual_block(rng, graph, tensors, len(graph) - 1, 40, (20, 10, 10))
    real(rng, graph, tensors, "conv", (3, 40, 1, 1))
    model = PackedModel(graph, tensors, {"input_shape": [5, *size]})
    network = native.Network(model)
    params = [dict(zip(FIELDS, p, strict=True)) for p, *_ in network.compiled.stages]
    pooled = [p for p in params if p["pool"]]
    even = size[0] % 2 == 0 and size[1] % 2 == 0
    assert len(pooled) == even and (POOL in network.compiled.kinds) != even
    if even:
        assert pooled[0]["kind"] == BCONV and pooled[0]["in2_buf"] >= 0 and pooled[0]["aff_buf"] >= 0
    x = inputs(model, batch=2)
    head = len(model.graph) - 1
    trunk = PackedModel(
        model.graph[:head], {k: v for k, v in model.tensors.items() if int(k.split(".")[0]) < head}, model.meta
    )
    np.testing.assert_array_equal(native.Network(trunk)(x), reference.run(trunk, x))
    np.testing.assert_allclose(network(x), reference.run(model, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cin, relu", [(21, False), (70, True)])
def test_a_conv_read_only_by_a_batchnorm_writes_signs_through_both(kernel_path, cin, relu):
    """The bottleneck block's pattern: binary conv -> BN -> sign -> binary conv. The first conv
    thresholds through its own scale (and ReLU) and the BN, and writes sign bits alone. Scales are
    powers of two and shifts integers, so many dots land exactly on a threshold (a tie) and the
    thresholds must reproduce the float test's result there."""
    rng = np.random.default_rng(cin)
    graph, tensors, mid = [], {}, 40
    binconv(rng, graph, tensors, cin, mid, 3)
    graph[0]["padding"] = 1
    tensors["0.scale"] = rng.choice([0.0, 0.5, -0.5, 1.0, -2.0], mid).astype(np.float32)
    tensors["0.shift"] = rng.integers(-6, 7, mid).astype(np.float32)
    if relu:
        graph.append({"op": "relu"})
    affine(rng, graph, tensors, mid)
    i = len(graph) - 1
    tensors[f"{i}.scale"] = rng.choice([0.25, -0.25, 4.0, -1.0], mid).astype(np.float32)
    tensors[f"{i}.shift"] = rng.integers(-4, 5, mid).astype(np.float32)
    binconv(rng, graph, tensors, mid, 24, 1)
    model = PackedModel(graph, tensors, {"input_shape": [cin, 9, 19]})
    network = native.Network(model)
    first = dict(zip(FIELDS, network.compiled.stages[2][0], strict=True))
    assert first["kind"] == BCONV and first["out_mode"] == 1 and first["aff_buf"] < 0
    assert [p[0] for p, *_ in network.compiled.stages] == [INPUT, SIGN, BCONV, BCONV]
    x = inputs(model, batch=2)
    np.testing.assert_array_equal(network(x), reference.run(model, x))


@pytest.mark.parametrize("channels", [16, 48])  # one block of 16 channels; a pair and one (the tile shapes)
def test_a_strided_padded_real_conv_feeds_binary_layers(kernel_path, channels):
    rng = np.random.default_rng(5)
    graph, tensors = [], {}
    real(rng, graph, tensors, "conv", (channels, 1, 7, 7))
    graph[0].update(stride=2, padding=3)
    residual_block(rng, graph, tensors, 0, channels, (channels // 2, channels // 4, channels // 4))
    model = PackedModel(graph, tensors, {"input_shape": [1, 19, 22]})
    x = inputs(model)
    np.testing.assert_allclose(native.Network(model)(x), reference.run(model, x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("channels", [24, 40])  # all in one tile (its registers sign them), or blocks
def test_a_stem_read_by_two_batchnorms_writes_both_signs_and_no_floats(kernel_path, channels):
    """The 128 px hourglass's stem: read only by two BatchNorms (one through a ReLU: all signs +1),
    it writes their two signs and never its floats."""
    rng = np.random.default_rng(6)
    graph, tensors = [], {}
    real(rng, graph, tensors, "conv", (channels, 1, 7, 7))
    graph[0].update(stride=2, padding=3)
    affine(rng, graph, tensors, channels, 0)
    graph.append({"op": "relu"})
    binconv(rng, graph, tensors, channels, 16, 3)
    graph[-1]["padding"] = 1
    branch = len(graph) - 1
    affine(rng, graph, tensors, channels, 0)
    binconv(rng, graph, tensors, channels, 16, 1)
    graph.append({"op": "add", "inputs": [branch, len(graph) - 1]})
    model = PackedModel(graph, tensors, {"input_shape": [1, 23, 30]})
    stem = dict(zip(FIELDS, compile_plan(model).stages[1][0], strict=True))
    assert stem["no_store"] == 1 and stem["aff_buf"] >= 0 and stem["aff2_buf"] >= 0
    assert (stem["aff_relu"], stem["aff2_relu"]) == (1, 0)
    x = inputs(model)
    np.testing.assert_array_equal(native.Network(model)(x), reference.run(model, x))


@pytest.mark.parametrize("stem, head", [(20, 36), (40, 44)])
def test_real_layers_with_plain_float_outputs_tile_whole_rows(kernel_path, stem, head):
    """A stem and a head whose floats nothing fuses into: tiles run along whole rows (widths not a
    multiple of any tile), and a last block of at most 8 channels (36 = 32 + 4, as the 68-point head's
    68 = 64 + 4; a stem of 40 = 32 + 8) takes 8-pixel tiles of one register."""
    rng = np.random.default_rng(stem)
    graph, tensors = [], {}
    real(rng, graph, tensors, "conv", (stem, 1, 7, 7))
    graph[0].update(stride=2, padding=3)
    graph.append({"op": "maxpool", "size": 2})
    real(rng, graph, tensors, "conv", (head, stem, 1, 1))
    model = PackedModel(graph, tensors, {"input_shape": [1, 26, 30]})
    network = native.Network(model)
    assert network.compiled.kinds == [INPUT, CONV, POOL, CONV]
    x = inputs(model)
    np.testing.assert_allclose(network(x), reference.run(model, x), rtol=1e-4, atol=1e-4)


def test_a_buffer_needing_two_border_values_is_refused():
    """A value read by a zero-padded conv and a -inf-padded max-pool cannot share one border."""
    rng = np.random.default_rng(0)
    graph, tensors = [], {}
    real(rng, graph, tensors, "conv", (4, 2, 3, 3))
    graph[0]["padding"] = 1
    graph.append({"op": "maxpool", "size": 3, "stride": 1, "padding": 1, "inputs": [-1]})
    graph.append({"op": "add", "inputs": [0, 1]})
    with pytest.raises(Unsupported, match="zero and -inf borders"):
        compile_plan(PackedModel(graph, tensors, {"input_shape": [2, 5, 5]}))


def test_the_peak_micro_benchmark_follows_the_kernel_path(kernel_path):
    """benchmarks/runtime_speed.py divides by the peak of the path in use (VPOPCNTQ, or AVX2's table)."""
    if kernel_path == "portable":
        with pytest.raises(RuntimeError, match="AVX"):
            native._native.peak(10)
    else:
        assert native._native.peak(10) == 10 * {"avx2": 8 * 256, "avx512": 12 * 512}[kernel_path]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("channels", [70, 72])  # masked and whole registers of 8 channels
def test_a_batchnorm_on_the_input_signs_straight_into_a_binary_conv(kernel_path, relu, channels):
    """An affine stage (with its ReLU: sign(relu(a)) is +1) whose only reader is a binary conv writes
    sign bits, not floats; a value of exactly 0 signs +1."""
    rng = np.random.default_rng(5)
    graph, tensors = [], {}
    affine(rng, graph, tensors, channels)
    tensors["0.shift"][::3] = 0
    if relu:
        graph.append({"op": "relu"})
    binconv(rng, graph, tensors, channels, 20, 3)
    model = PackedModel(graph, tensors, {"input_shape": [channels, 6, 9]})
    kinds = [p[0] for p, *_ in compile_plan(model).stages]
    assert AFFINE in kinds and kinds[kinds.index(AFFINE) + 1] == BCONV
    x = inputs(model)
    x[:, :, ::2] = 0  # on the channels without a shift: a = 0 exactly
    np.testing.assert_array_equal(native.Network(model)(x), reference.run(model, x))


@pytest.mark.parametrize("channels, relu", [(16, False), (16, True), (21, True)])  # whole and masked registers
def test_sums_pools_and_affines_on_floats(kernel_path, channels, relu):
    """The element-wise float stages, each with its fused sign (through a ReLU, signs are all +1): a
    sum signed for a binary conv, a max-pool of it signed for another, an affine (and ReLU) to floats."""
    rng = np.random.default_rng(8)
    graph, tensors = [], {}
    real(rng, graph, tensors, "conv", (channels, 5, 3, 3))
    graph[-1]["padding"] = 1
    affine(rng, graph, tensors, channels, 0)
    if relu:
        graph.append({"op": "relu"})
    graph.append({"op": "add", "inputs": [0, len(graph) - 1]})
    total = len(graph) - 1
    affine(rng, graph, tensors, channels, total)
    if relu:
        graph.append({"op": "relu"})
    binconv(rng, graph, tensors, channels, channels, 3)
    graph[-1]["padding"] = 1
    branch = len(graph) - 1
    graph.append({"op": "maxpool", "size": 2, "inputs": [total]})
    affine(rng, graph, tensors, channels)
    binconv(rng, graph, tensors, channels, channels, 1)
    graph.append({"op": "upsample", "factor": 2})
    graph.append({"op": "add", "inputs": [branch, len(graph) - 1]})
    model = PackedModel(graph, tensors, {"input_shape": [5, 6, 10]})
    params = [dict(zip(FIELDS, p, strict=True)) for p, *_ in compile_plan(model).stages]
    fused = {(p["kind"], p["aff_relu"]) for p in params if p["aff_buf"] >= 0 and p["kind"] in (ADD, POOL)}
    assert fused == {(ADD, int(relu)), (POOL, 0)}
    assert any(p["kind"] == AFFINE and p["relu"] == relu and p["out_mode"] == 0 for p in params)
    x = inputs(model)
    np.testing.assert_array_equal(native.Network(model)(x), reference.run(model, x))


@pytest.mark.parametrize("cin", [12, 20, 70])  # 16-bit lanes, 32-bit lanes, 64-bit words
def test_kernels_of_more_taps_than_a_byte_counter_holds(kernel_path, cin):
    """AVX2 adds bit counts in bytes for up to 31 tap words, then widens them: a 7 x 7 kernel (49 taps)."""
    rng = np.random.default_rng(cin)
    graph, tensors = [{"op": "pad", "pad": [3, 3, 3, 3]}], {}
    binconv(rng, graph, tensors, cin, 24, 7)
    binconv(rng, graph, tensors, 24, 5, 1)
    model = PackedModel(graph, tensors, {"input_shape": [cin, 9, 10]})
    x = inputs(model, batch=2)
    np.testing.assert_array_equal(native.Network(model)(x), reference.run(model, x))


def test_a_binary_layer_of_more_tap_words_than_the_stack_holds(kernel_path):
    """Over 1,024 tap words (their offsets leave the AVX2 kernel's stack): a binary linear layer on
    67,584 features (1,056 words)."""
    rng = np.random.default_rng(9)
    graph, tensors = [{"op": "flatten"}], {}
    binlinear(rng, graph, tensors, 64 * 32 * 33, 5)
    model = PackedModel(graph, tensors, {"input_shape": [64, 32, 33]})
    x = inputs(model, batch=1)
    np.testing.assert_array_equal(native.Network(model)(x), reference.run(model, x))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_the_extension_compiles_without_x86_kernels(tmp_path):
    """On other CPUs (ARM) only the portable kernels are compiled: every intrinsic stays inside the x86
    guards. Checked here by compiling with the x86 macro undefined (glibc's headers then want their
    32-bit stubs, which an empty file stands in for)."""
    (tmp_path / "gnu").mkdir()
    (tmp_path / "gnu" / "stubs-32.h").write_text("")
    source = Path(native.__file__).with_name("_native.c")
    command = ["gcc", "-fsyntax-only", "-std=gnu11", "-U__x86_64__", f"-I{tmp_path}"]
    command += [f"-I{sysconfig.get_paths()['include']}", str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    ours = [line for line in result.stderr.splitlines() if "_native.c:" in line and "error" in line]
    assert not ours, "\n".join(ours[:20])
    if result.returncode:  # only the system's headers refused (another libc's layout): not our code
        pytest.skip(f"this system's headers do not compile without x86: {result.stderr[-300:]}")


def test_threads_running_one_network_each_get_their_own_result():
    """A run holds its plan (the buffers are one run's values) while the GIL is released: threads
    sharing a network take turns instead of overwriting each other's activations."""
    from concurrent.futures import ThreadPoolExecutor

    model = hourglass_graph(channels=24, size=(8, 8))
    network = native.Network(model)
    xs = [inputs(model, batch=1, seed=seed) for seed in range(4)]
    expected = [network(x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: network(xs[i % 4]), range(400)))
    for i, out in enumerate(got):
        np.testing.assert_array_equal(out, expected[i % 4])
