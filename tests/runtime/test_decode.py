"""The C heatmap decoder against the numpy one (bitface.data.heatmaps.decode_argmax)."""

import numpy as np
import pytest
from test_native import real

from bitface.data.heatmaps import decode_argmax, gaussian_heatmaps, gaussian_taps, sigmoid, smooth_maps
from bitface.export.format import PackedModel
from bitface.runtime import native

pytestmark = pytest.mark.skipif(native._native is None, reason=f"{native.NATIVE_MISSING}")


def maps_with_edge_cases(seed: int = 0, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, size, (3, 40, 2))  # some on or just outside the border
    maps = gaussian_heatmaps(points.reshape(-1, 2), size, size, 1.5).reshape(3, 40, size, size)
    maps += rng.normal(0, 0.01, maps.shape).astype(np.float32)
    maps[0, 0] = 0.25  # flat: invalid
    maps[0, 1, 5, 7] = np.nan  # not finite: invalid
    maps[0, 2] = 0
    maps[0, 2, 10, 2] = maps[0, 2, 10, 5] = maps[0, 2, 12, 3] = 1  # ties (two in one vector): the first wins
    maps[0, 3] = -maps[0, 3]  # a dip, not a peak
    return maps


@pytest.mark.parametrize("size", [32, 13])  # 13 x 13: a map that ends mid-vector
@pytest.mark.parametrize("as_logits", [False, True])
def test_the_c_decoder_matches_numpy(as_logits, size, kernel_path):
    maps = maps_with_edge_cases(size=size)
    if as_logits:  # what a network trained with sigmoid cross-entropy outputs
        maps = np.log(np.clip(maps, 1e-4, 1 - 1e-4) / (1 - np.clip(maps, 1e-4, 1 - 1e-4))).astype(np.float32)
        maps[0, 1, 5, 7] = np.nan
        maps[0, 0] = 0.25
    expected = decode_argmax(maps, activation=sigmoid if as_logits else None)
    got = native.decode_heatmaps(maps, sigmoid=as_logits)
    np.testing.assert_array_equal(got.valid, expected.valid)
    np.testing.assert_allclose(got.points, expected.points, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.confidence, expected.confidence, rtol=1e-14, atol=0)
    assert not got.valid[0, 0] and not got.valid[0, 1] and got.valid[0, 2]
    np.testing.assert_array_equal(got.points[0, 0], [(size - 1) / 2] * 2)  # an invalid map decodes to its centre
    if not as_logits:
        np.testing.assert_allclose(got.points[0, 2], [2, 10])
    # a peak in the last cell, past every full vector, and a map whose only special value is there
    maps[1, :] = 0
    maps[1, 0, -1, -1] = 1
    maps[1, 1, -1, -1] = np.inf
    got = native.decode_heatmaps(maps, sigmoid=False)
    np.testing.assert_array_equal(got.points[1, 0], [size - 1, size - 1])
    assert got.valid[1, 0] and not got.valid[1, 1]


def test_the_reference_runtime_decodes_with_numpy(monkeypatch):
    maps = maps_with_edge_cases(1)
    monkeypatch.setenv("BITFACE_RUNTIME", "reference")
    np.testing.assert_array_equal(native.decode_heatmaps(maps, False).points, decode_argmax(maps).points)


def test_maps_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="do not fit"):
        native._native.decode_heatmaps(
            np.zeros(10, np.float32), 3, 3, False, 1e-6, np.zeros(0, np.float32), np.zeros((1, 4))
        )
    with pytest.raises(ValueError, match="odd number"):
        native._native.decode_heatmaps(
            np.zeros(9, np.float32), 3, 3, False, 1e-6, np.ones(2, np.float32), np.zeros((1, 4))
        )


@pytest.mark.parametrize("smooth", [0.75, 1.5, 4.0])  # 4.0: a kernel wider than the 13-cell maps
@pytest.mark.parametrize("size", [32, 13])
def test_smoothing_before_decoding_matches_numpy(size, smooth, kernel_path):
    maps = maps_with_edge_cases(seed=3, size=size) * 8 - 4  # logit-like, with the flat, NaN and tied maps
    taps = gaussian_taps(smooth)
    assert len(taps) == 2 * int(np.ceil(2 * smooth)) + 1 and taps.sum() == pytest.approx(1, abs=1e-6)
    smoothed = smooth_maps(maps, taps)
    expected = decode_argmax(maps, activation=sigmoid, smooth=smooth)
    np.testing.assert_array_equal(expected.points, decode_argmax(smoothed, activation=sigmoid).points)
    got = native.decode_heatmaps(maps, sigmoid=True, smooth=smooth)
    np.testing.assert_array_equal(got.valid, expected.valid)  # the same smoothed maps: the same peaks
    # the sub-cell step takes logs in double; numpy's SIMD log (on AVX-512 hosts) and the C library's
    # may differ in the last place (and so may their exps), so the points agree to 1e-12, not bit for bit
    np.testing.assert_allclose(got.points, expected.points, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.confidence, expected.confidence, rtol=1e-14, atol=0)
    assert not got.valid[0, 0] and not got.valid[0, 1]  # flat stays flat, NaN stays not finite


def test_smoothing_finds_the_mode_of_a_noisy_map_not_its_spike():
    """Why decoding smooths: a one-cell spike beside a broad peak wins the raw argmax only."""
    maps = gaussian_heatmaps(np.array([[20.3, 11.6]]), 32, 32, 1.5)[None] * 0.8
    maps[0, 0, 25, 5] = 0.9  # the spike
    raw, smoothed = decode_argmax(maps), decode_argmax(maps, smooth=1.5)
    np.testing.assert_allclose(raw.points[0, 0], [5, 25])
    np.testing.assert_allclose(smoothed.points[0, 0], [20.3, 11.6], atol=0.05)
    assert smoothed.confidence[0, 0] == raw.confidence[0, 0] == np.float32(0.9)  # the raw map's peak
    np.testing.assert_array_equal(smooth_maps(maps[..., :1, :], np.ones(1, np.float32)), maps[..., :1, :])
    with pytest.raises(ValueError, match="sigma"):
        gaussian_taps(-1.0)


def heatmap_network() -> PackedModel:
    """A gray crop to 21 maps of 12 x 13 (21 channels in a buffer padded to 32: pixels 32 floats apart);
    the ReLU leaves flat regions, so maxima tie, and channel 0 (scale 0) is constant: invalid."""
    rng = np.random.default_rng(7)
    graph, tensors = [{"op": "pad", "pad": [1, 1, 1, 1]}], {}
    real(rng, graph, tensors, "conv", (8, 1, 3, 3))
    graph.append({"op": "relu"})
    real(rng, graph, tensors, "conv", (21, 8, 1, 1))
    return PackedModel(graph, tensors, {"input_shape": [1, 12, 13]})


@pytest.mark.parametrize("as_logits", [False, True])
def test_heatmaps_decoded_where_the_network_left_them_match_decoding_its_output(kernel_path, as_logits):
    network = native.Network(heatmap_network())
    crops = np.random.default_rng(2).integers(0, 256, (3, 12, 13), dtype=np.uint8)
    crops[1, 3:9, 2:10] = 200
    crops[2] = 0
    crops[2, 2:10, 3:11] = 255  # a bright flat block: tied maxima in valid maps
    maps = network.run_crops(crops, 127.5, 60.0)
    expected = decode_argmax(maps, activation=sigmoid if as_logits else None)
    got = network.run_crops_decoded(crops, 127.5, 60.0, as_logits)
    np.testing.assert_array_equal(got.valid, expected.valid)
    np.testing.assert_allclose(got.points, expected.points, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.confidence, expected.confidence, rtol=1e-14, atol=0)
    assert not got.valid[:, 0].any() and got.valid.any()
    ties = [(maps[b, c] == maps[b, c].max()).sum() > 1 and got.valid[b, c] for b in range(3) for c in range(21)]
    assert any(ties)  # the first of tied maxima is taken, as numpy's argmax
    with pytest.raises(ValueError, match="run_crops"):
        network.run_crops_decoded(crops[:, :-1], 127.5, 60.0, as_logits)
    # smoothed first, in the plan's scratch maps: as numpy smooths the output
    expected = decode_argmax(maps, activation=sigmoid if as_logits else None, smooth=1.5)
    got = network.run_crops_decoded(crops, 127.5, 60.0, as_logits, smooth=1.5)
    np.testing.assert_allclose(got.points, expected.points, rtol=0, atol=1e-12)  # logs: see the test above
    np.testing.assert_allclose(got.confidence, expected.confidence, rtol=1e-14, atol=0)
    assert not np.array_equal(got.points, network.run_crops_decoded(crops, 127.5, 60.0, as_logits).points)


def test_an_output_that_starts_inside_its_buffer_is_read_from_there(kernel_path):
    """The plan's output view may start inside its buffer (here a channel slice, as when a border or a
    concat comes first): both the CHW copy and the in-place decoding start where it does."""
    network = native.Network(heatmap_network())
    c = network.compiled
    buf, channels, h, w, offset, row, pix = c.output
    sliced = native._native.Plan(c.stages, c.buffers, (buf, channels - 1, h, w, offset + 1, row, pix), 12 * 13)
    crops = np.random.default_rng(4).integers(0, 256, (2, 12, 13), dtype=np.uint8)
    maps = network.run_crops(crops, 127.5, 60.0)
    out = np.empty((2, channels - 1, h, w), np.float32)
    sliced.run_crops(crops, 127.5, 60.0, b"", out)
    np.testing.assert_array_equal(out, maps[:, 1:])
    decoded = np.empty((2, channels - 1, 4))
    sliced.run_crops_decoded(crops, 127.5, 60.0, False, 1e-6, np.zeros(0, np.float32), b"", decoded)
    np.testing.assert_allclose(decoded[..., :2], decode_argmax(maps[:, 1:]).points, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [32, 13])
def test_the_channels_last_scan_finds_what_numpy_finds(size, kernel_path):
    """decode_hwc (the maps as the channels of one HWC image, as a plan leaves them) on the raw edge cases:
    flat, NaN, infinite and tied maps, 111 channels (a last vector of 7). A one-tap kernel of 1.0 routes
    the maps through it unchanged."""
    maps = np.ascontiguousarray(maps_with_edge_cases(size=size)[:, :37])
    maps[1, 1, -1, -1] = np.inf
    maps[2, 5] = 0
    maps[2, 5, 3, 4] = maps[2, 5, 3, 6] = 1  # a tie in one row
    expected = decode_argmax(maps)
    out = np.empty((maps.shape[0] * maps.shape[1], 4))
    native._native.decode_heatmaps(maps, size, size, False, 1e-6, np.ones(1, np.float32), out)
    np.testing.assert_array_equal(out[:, 3].reshape(expected.valid.shape) > 0, expected.valid)
    np.testing.assert_allclose(out[:, :2].reshape(expected.points.shape), expected.points, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(out[:, :2].reshape(expected.points.shape)[2, 5], [4, 3])
