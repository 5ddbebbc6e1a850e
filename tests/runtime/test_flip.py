"""Test-time flip in the native runtime (a plan run's `mirror`): each map the mean of the crop's map and
the mirror image's map of channel mirror[c], mirrored back, bit for bit as numpy computes it from two
plain runs (CroppedPredictor.with_mirror), in every native entry point."""

import cv2
import numpy as np
import pytest
from test_decode import heatmap_network
from test_native import binconv, real, regression_like
from test_sampling import cv2_crops, matrices

from bitface.data.heatmaps import decode_argmax
from bitface.export.format import PackedModel
from bitface.runtime import native
from bitface.runtime.plan import FIELDS

pytestmark = pytest.mark.skipif(native._native is None, reason=f"{native.NATIVE_MISSING}")

MEAN, STD = 127.5, 60.0


def binary_rgb_maps() -> PackedModel:
    """RGB crops (the input stage's pixels hold 3 values) through a binary conv to 6 maps of 9 x 10."""
    rng = np.random.default_rng(11)
    graph, tensors = [{"op": "pad", "pad": [1, 1, 1, 1]}], {}
    real(rng, graph, tensors, "conv", (16, 3, 3, 3))
    graph.append({"op": "pad", "pad": [1, 1, 1, 1]})
    binconv(rng, graph, tensors, 16, 24, 3)
    real(rng, graph, tensors, "conv", (6, 24, 1, 1))
    return PackedModel(graph, tensors, {"input_shape": [3, 9, 10]})


def flipped_in_numpy(network, crops, permutation):
    plain = network.run_crops(crops, MEAN, STD)
    mirrored = network.run_crops(np.ascontiguousarray(crops[:, :, ::-1]), MEAN, STD)
    return (plain + mirrored[:, permutation, :, ::-1]) / 2


@pytest.mark.parametrize("model", [heatmap_network(), binary_rgb_maps()], ids=["gray", "rgb-binary"])
def test_a_flipped_run_averages_the_mirrored_maps_bit_for_bit(model, kernel_path):
    network = native.Network(model)
    channels, height, width = model.meta["input_shape"]
    shape = (3, height, width) if channels == 1 else (3, height, width, channels)
    crops = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    plain = network.run_crops(crops, MEAN, STD)
    permutation = np.random.default_rng(2).permutation(network.compiled.output_shape[0])  # not an involution
    expected = flipped_in_numpy(network, crops, permutation)
    assert not np.array_equal(expected, plain)
    np.testing.assert_array_equal(network.run_crops(crops, MEAN, STD, mirror=permutation), expected)
    for smooth in (0.0, 1.5):
        got = network.run_crops_decoded(crops, MEAN, STD, False, smooth=smooth, mirror=permutation)
        np.testing.assert_allclose(got.points, decode_argmax(expected, smooth=smooth).points, rtol=0, atol=1e-12)
    # the flip leaves nothing behind: the next plain run is the first one
    np.testing.assert_array_equal(network.run_crops(crops, MEAN, STD), plain)


def test_a_flipped_run_on_crops_sampled_from_an_image(kernel_path):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    ms = matrices(rng, 20, image.shape)
    network = native.Network(heatmap_network())
    permutation = rng.permutation(21)
    expected = flipped_in_numpy(network, cv2_crops(image, ms), permutation)
    np.testing.assert_array_equal(network.run_faces(image, ms, MEAN, STD, mirror=permutation), expected)
    got = network.run_faces_decoded(image, ms, MEAN, STD, False, 1.0, mirror=permutation)
    in_crop = decode_argmax(expected).points
    back = [cv2.invertAffineTransform(m[:2]) for m in ms]
    in_image = np.stack([cv2.transform(p[None], m)[0] for p, m in zip(in_crop, back, strict=True)])
    np.testing.assert_allclose(got.points, in_image, rtol=0, atol=1e-6)


def test_a_mirror_that_does_not_fit_the_output_is_refused(kernel_path):
    network = native.Network(heatmap_network())
    crops = np.zeros((1, 12, 13), np.uint8)
    with pytest.raises(ValueError, match="one int32 per output channel"):
        network.run_crops(crops, MEAN, STD, mirror=np.arange(20))
    with pytest.raises(ValueError, match="entries must be output channels"):
        network.run_crops_decoded(crops, MEAN, STD, False, mirror=np.r_[np.arange(20), 21])
    with pytest.raises(ValueError, match="entries must be output channels"):
        network.run_faces(np.zeros((5, 5), np.uint8), np.eye(3)[None], MEAN, STD, mirror=np.full(21, -1))
    coordinates = native.Network(regression_like())  # points, not maps: their flip is the predictor's
    with pytest.raises(ValueError, match="output of maps"):
        coordinates.run_crops(np.zeros((1, 23, 23), np.uint8), MEAN, STD, mirror=np.arange(10))


def test_a_plan_that_writes_over_its_input_refuses_a_flip(kernel_path):
    """The second run mirrors the input where the input stage left it: a plan whose later stage wrote
    there (compile_plan gives every value its own buffer) would mirror something else."""
    c = native.Network(heatmap_network()).compiled
    stages = list(c.stages)
    params = list(stages[-1][0])
    params[FIELDS.index("out_buf")] = stages[0][0][FIELDS.index("out_buf")]
    stages[-1] = (tuple(params), *stages[-1][1:])
    plan = native._native.Plan(stages, c.buffers, c.output, 12 * 13)
    crops, out = np.zeros((1, 12, 13), np.uint8), np.empty((1, 21, 12, 13), np.float32)
    with pytest.raises(ValueError, match="keeps its input"):
        plan.run_crops(crops, MEAN, STD, np.arange(21, dtype=np.int32), out)
