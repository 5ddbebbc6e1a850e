"""The packed-file loader refuses anything it cannot run, with a message naming the problem."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from bitface.export.format import PackedModel, _to_blobs, load_packed
from bitface.io import DataError
from bitface.runtime import PackedLandmarker, reference

META = {
    "scheme": "5pt",
    "crop": {"size": 8, "source": "box", "margin": 0.0, "shift_y": 0.0, "shift_x": 0.0},
    "fallback_crop": None,
    "input": {"channels": 1, "mean": 127.5, "std": 127.5},
    "input_shape": [1, 8, 8],
    "output": "normalized",
}


def tiny_model() -> PackedModel:
    """flatten -> binary linear (64 -> 10) on an 8 x 8 input: 5 points."""
    rng = np.random.default_rng(0)
    tensors = {
        "1.bits": rng.integers(0, 2**63, (10, 1), dtype=np.uint64),
        "1.scale": np.full(10, 0.01, np.float32),
        "1.shift": np.zeros(10, np.float32),
    }
    graph = [{"op": "flatten"}, {"op": "binlinear", "in_channels": 64, "binary_input": True}]
    return PackedModel(graph, tensors, dict(META))


def test_a_packed_file_round_trips_and_runs(tmp_path):
    path = tiny_model().save(tmp_path / "m.bitface")
    model = PackedLandmarker(load_packed(path))
    out = model.forward(np.random.default_rng(1).normal(size=(2, 1, 8, 8)).astype(np.float32))
    assert out.shape == (2, 5, 2)
    # dot products of ±1 vectors of length 64 are even integers in [-64, 64]
    assert np.all(np.abs(out * 100) <= 64) and np.allclose(np.round(out * 100) % 2, 0)


def test_inputs_of_the_wrong_shape_or_dtype_name_the_expected_shape(tmp_path):
    model = PackedLandmarker(tiny_model())
    with pytest.raises(ValueError, match=r"float32 of shape \(batch, 1, 8, 8\), got float64"):
        model.forward(np.zeros((1, 1, 8, 8)))
    with pytest.raises(ValueError, match=r"got float32 \(1, 3, 8, 8\)"):
        model.forward(np.zeros((1, 3, 8, 8), np.float32))


def write_raw(path, tensors, header):
    save_file(tensors, str(path), {"bitface": json.dumps(header)} if header is not None else None)
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t, h: h.update(version=99), "version 99; this bitface reads 1, 2, 3, 4"),
        (lambda t, h: h.update(format="other"), "not a packed bitface model"),
        (lambda t, h: h["graph"][1].update(op="conv9"), "op 1 is 'conv9'"),
        (lambda t, h: h["graph"][1].pop("in_channels"), "lacks attribute 'in_channels'"),
        (lambda t, h: t.pop("1.scale"), "lacks tensor '1.scale'"),
        (lambda t, h: t.update({"1.bits": np.zeros((10, 2), np.uint64)}), r"has shape \(10, 2\).*needs \(10, 1\)"),
        (lambda t, h: t.update({"1.scale": np.zeros(10, np.float64)}), "is float64, expected"),
        (lambda t, h: t.update({"9.extra": np.zeros(1, np.float32)}), "tensors no op uses"),
        (lambda t, h: h.update(graph="x"), "no valid graph"),
    ],
)
def test_inconsistent_version_1_files_are_refused_by_name(tmp_path, mutate, message):
    """Version 1 and 2 files stored one tensor per op tensor; they still load, with the same checks."""
    model = tiny_model()
    tensors = dict(model.tensors)
    header = {"format": "bitface-packed", "version": 1, "graph": [dict(op) for op in model.graph], **META}
    mutate(tensors, header)
    with pytest.raises(DataError, match=message):
        load_packed(write_raw(tmp_path / "m.bitface", tensors, header))


def test_a_version_1_file_still_loads(tmp_path):
    model = tiny_model()
    header = {"format": "bitface-packed", "version": 1, "graph": [{"op": "flatten"}, *[
        {k: v for k, v in model.graph[1].items() if k != "out_channels"}]], **META}  # fmt: skip
    loaded = load_packed(write_raw(tmp_path / "m.bitface", dict(model.tensors), header))
    assert loaded.graph[1]["out_channels"] == 10
    assert all(np.array_equal(loaded.tensors[k], v) for k, v in model.tensors.items())


def conv_model(in_channels: int) -> PackedModel:
    """A real 1x1 conv, then a binary 3x3 conv whose input channels do not fill a 64-bit word."""
    rng = np.random.default_rng(in_channels)
    words = -(-in_channels // 64)
    bits = rng.integers(0, 2**63, (5, 3, 3, words), dtype=np.uint64)
    high = in_channels - 64 * (words - 1)  # channels in the last word; the rest of its bits are 0
    bits[..., -1] &= np.uint64((1 << high) - 1) if high < 64 else np.uint64(2**64 - 1)
    tensors = {
        "0.weight": rng.normal(size=(in_channels, 1, 1, 1)).astype(np.float32),
        "0.scale": np.ones(in_channels, np.float32),
        "0.shift": np.zeros(in_channels, np.float32),
        "1.bits": bits,
        "1.scale": rng.random(5).astype(np.float32),
        "1.shift": rng.random(5).astype(np.float32),
    }
    graph = [{"op": "conv"}, {"op": "binconv", "in_channels": in_channels, "kernel": [3, 3], "binary_input": True}]
    return PackedModel(graph, tensors, dict(META, input_shape=[1, 8, 8]))


@pytest.mark.parametrize("in_channels", [1, 16, 64, 70, 128])
def test_binary_kernels_are_dense_bits_on_disk(tmp_path, in_channels):
    """The file holds exactly the paper's count (1 bit per binary weight, 32 per real value; the real
    conv's scale of ones and zero shift once each) plus the JSON header, and reads back to the same
    words and per-channel scales."""
    model = conv_model(in_channels)
    path = model.save(tmp_path / "m.bitface")
    loaded = load_packed(path)
    assert loaded.tensors.keys() == model.tensors.keys()
    assert all(np.array_equal(loaded.tensors[k], v) for k, v in model.tensors.items())
    assert "uniform" not in loaded.graph[0]  # on disk only
    header_bytes = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    paper_bits = sum(r["memory_bits"] for r in model.layer_table())
    floats = in_channels + 2 + 10  # conv weights, its uniform scale and shift; the binary conv's 5 + 5
    assert paper_bits == 5 * 9 * in_channels + 32 * floats
    assert path.stat().st_size - header_bytes == -(-5 * 9 * in_channels // 8) + 4 * floats
    assert sum(r["stored_bytes"] for r in loaded.layer_table()) == path.stat().st_size - header_bytes


def test_a_shift_of_zeros_with_a_negative_zero_round_trips_bit_for_bit(tmp_path):
    model = conv_model(16)
    model.tensors["0.shift"][3] = -0.0  # equal to 0.0, but not the same bits: not stored once
    loaded = load_packed(model.save(tmp_path / "m.bitface"))
    assert loaded.tensors["0.shift"].view(np.uint32).tolist() == model.tensors["0.shift"].view(np.uint32).tolist()
    assert sum(r["memory_bits"] for r in model.layer_table()) == 5 * 9 * 16 + 32 * (16 + 1 + 16 + 10)


@pytest.mark.parametrize("version", [3, 4])
def test_version_3_and_4_files_still_load(tmp_path, version):
    # version 3: every scale and shift per channel; 4: no int8 weights or sign-bit scales
    model = conv_model(16)
    header = {"format": "bitface-packed", "version": version, "graph": model.graph, **model.meta}
    loaded = load_packed(write_raw(tmp_path / "old.bitface", _to_blobs(model.graph, model.tensors), header))
    assert all(np.array_equal(loaded.tensors[k], v) for k, v in model.tensors.items())


def int8_and_signs_model() -> PackedModel:
    """An int8 real conv (16 -> 5, 3 x 3), then an affine of +-1 scales (a BatchNorm only a sign reads,
    as bitface.export.convert.sign_only_affines leaves it), then a binary conv."""
    rng = np.random.default_rng(3)
    tensors = {
        "0.weight": rng.integers(-127, 128, (5, 16, 3, 3)).astype(np.float32),
        "0.scale": rng.random(5).astype(np.float32) / 127,
        "0.shift": rng.normal(size=5).astype(np.float32),
        "1.scale": np.array([1, -1, -1, 1, 1], np.float32),
        "1.shift": rng.normal(size=5).astype(np.float32),
        "2.bits": rng.integers(0, 2**5, (3, 3, 3, 1), dtype=np.uint64),
        "2.scale": np.full(3, 0.5, np.float32),
        "2.shift": np.zeros(3, np.float32),
    }
    graph = [
        {"op": "conv", "weight_dtype": "int8", "padding": 1},
        {"op": "affine"},
        {"op": "binconv", "in_channels": 5, "kernel": [3, 3], "binary_input": True, "padding": 1},
    ]
    return PackedModel(graph, tensors, dict(META, input_shape=[16, 8, 8]))


def test_int8_weights_and_sign_bit_scales_round_trip_in_8_and_1_bits(tmp_path):
    model = int8_and_signs_model()
    path = model.save(tmp_path / "m.bitface")
    loaded = load_packed(path)
    for key, tensor in model.tensors.items():
        assert np.array_equal(loaded.tensors[key], tensor) and loaded.tensors[key].dtype == tensor.dtype
    assert loaded.graph[0]["weight_dtype"] == "int8" and "signs" not in loaded.graph[1]  # `signs`: on disk only
    header_bytes = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    # int8 weights; the conv's 5 + 5 floats; the affine's 5 sign bits (1 byte) and 5 shifts; the binary
    # conv's 135 bits (17 bytes) and its uniform scale and shift
    assert path.stat().st_size - header_bytes == 5 * 16 * 9 + 4 * 10 + 1 + 4 * 5 + 17 + 4 * 2
    assert [r["memory_bits"] for r in model.layer_table()] == [8 * 720 + 32 * 10, 5 + 32 * 5, 135 + 32 * 2]
    x = np.random.default_rng(4).normal(size=(2, 16, 8, 8)).astype(np.float32)
    out = PackedLandmarker(loaded).network(x)  # native where built: a real conv whose one reader is a sign
    np.testing.assert_array_equal(out, PackedLandmarker(model).network(x))
    np.testing.assert_allclose(out, reference.run(model, x), atol=1e-5)


@pytest.mark.parametrize("value", [0.5, 128.0, -128.0])
def test_int8_weights_that_are_not_integers_in_range_are_refused(tmp_path, value):
    model = int8_and_signs_model()
    model.tensors["0.weight"][2, 3, 1, 1] = value
    with pytest.raises(DataError, match=r"tensor '0.weight' of op 0 \(conv, weight_dtype int8\) holds values that"):
        model.save(tmp_path / "m.bitface")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t, h: h["graph"][1].update(out_channels=6), "need 108 bytes of bits, 30 float32 and 0 int8 values"),
        (lambda t, h: h["graph"][1].update(kernel=[3]), "kernel must be"),
        (lambda t, h: h["graph"][1].update(uniform=["bits"]), r"uniform must list some of its \('scale', 'shift'\)"),
        (lambda t, h: h["graph"][1].update(uniform=["scale"]), "need 90 bytes of bits, 24 float32 and 0 int8 values"),
        (lambda t, h: h["graph"][0].update(in_channels="16"), "in_channels must be a positive integer"),
        (lambda t, h: t.update(bits=t["bits"][:-1]), "the file holds 89, 28 and 0"),
        (lambda t, h: t.update(extra=t["bits"]), r"unknown tensors \['extra'\]"),
        (lambda t, h: t.update(bits=t["bits"].astype(np.int16)), "blob 'bits' must be 1-d uint8"),
        (lambda t, h: h["graph"][1].update(signs=["shift"]), r"signs must list some of its \('scale',\)"),
        (lambda t, h: h["graph"][1].update(signs=["scale"]), "need 91 bytes of bits, 23 float32 and 0 int8"),
        (lambda t, h: h["graph"][0].update(weight_dtype="int4"), "weight_dtype 'int4' .only conv and linear"),
        (lambda t, h: h["graph"][0].update(weight_dtype="int8"), "need 90 bytes of bits, 12 float32 and 16 int8"),
        (lambda t, h: t.update(int8=t["float32"]), "blob 'int8' must be 1-d int8"),
    ],
)
def test_dense_files_whose_graph_and_blobs_disagree_are_refused(tmp_path, mutate, message):
    path = conv_model(16).save(tmp_path / "m.bitface")
    from safetensors import safe_open

    with safe_open(str(path), "numpy") as handle:
        header = json.loads(handle.metadata()["bitface"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    mutate(tensors, header)
    with pytest.raises(DataError, match=message):
        load_packed(write_raw(tmp_path / "bad.bitface", tensors, header))


def test_missing_metadata_and_truncation_are_refused(tmp_path):
    with pytest.raises(DataError, match="without bitface metadata"):
        load_packed(write_raw(tmp_path / "plain.bitface", {"w": np.zeros(2, np.float32)}, None))
    data = tiny_model().save(tmp_path / "m.bitface").read_bytes()
    (tmp_path / "cut.bitface").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.bitface: not a readable packed model file"):
        load_packed(tmp_path / "cut.bitface")


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzzed_files_load_or_fail_cleanly(tmp_path_factory, data):
    """Random byte corruption never crashes or hangs the loader: it loads or raises DataError."""
    original = bytearray(tiny_model().save(tmp_path_factory.mktemp("f") / "m.bitface").read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("g") / "fuzz.bitface"
    path.write_bytes(bytes(original))
    try:
        model = PackedLandmarker(load_packed(path))
        model.forward(np.zeros((1, 1, 8, 8), np.float32))
    except (DataError, ValueError):
        pass
