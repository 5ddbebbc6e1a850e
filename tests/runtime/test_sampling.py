"""Crops sampled from the image inside the native call (plan.run_faces): the crops cv2.warpAffine makes,
bit for bit, and points mapped back to the image."""

import cv2
import numpy as np
import pytest
from test_decode import heatmap_network

from bitface.data.geometry import OutputSpace, about_centre, crop_matrix, invert
from bitface.runtime import native

pytestmark = pytest.mark.skipif(native._native is None, reason=f"{native.NATIVE_MISSING}")

HEIGHT, WIDTH = 12, 13  # heatmap_network's input


def matrices(rng, count: int, image_shape) -> np.ndarray:
    """Image -> crop matrices: squares of many sizes anywhere (also over the border and far outside),
    half of them rotated, scaled and mirrored about the crop's centre (as augmentation does)."""
    h, w = image_shape
    out = []
    for i in range(count):
        centre = rng.uniform([-0.5 * w, -0.5 * h], [1.5 * w, 1.5 * h])
        m = crop_matrix(centre, rng.uniform(2, 3 + 2 * max(h, w)), WIDTH)
        if i % 2:
            m = about_centre(WIDTH, rng.uniform(-40, 40), rng.uniform(0.7, 1.3), rng.uniform(-2, 2, 2), i % 4 == 1) @ m
        out.append(m)
    out.append(crop_matrix((5e7, -3e7), 10.0, WIDTH))  # far outside any image: all black
    return np.stack(out)


def cv2_crops(image, ms) -> np.ndarray:
    return np.stack([cv2.warpAffine(image, m[:2], (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderValue=0) for m in ms])


@pytest.mark.parametrize("image_shape", [(37, 53), (9, 5), (1, 1)])
def test_sampled_crops_are_cv2_warp_affine_bit_for_bit(image_shape, kernel_path):
    rng = np.random.default_rng(sum(image_shape))
    image = rng.integers(0, 256, image_shape, dtype=np.uint8)
    ms = matrices(rng, 200, image_shape)
    network = native.Network(heatmap_network())
    # a real-valued network: any grey level that differs changes its output
    expected = network.run_crops(cv2_crops(image, ms), 127.5, 64.0)
    np.testing.assert_array_equal(network.run_faces(image, ms, 127.5, 64.0), expected)
    np.testing.assert_array_equal(network.run_faces(image, ms[:, :2], 127.5, 64.0), expected)  # 2 x 3 as well


def test_decoded_points_come_back_in_image_pixels(kernel_path):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    ms = matrices(rng, 20, image.shape)
    network = native.Network(heatmap_network())
    in_cells = network.run_crops_decoded(cv2_crops(image, ms), 127.5, 64.0, sigmoid=True)
    decoded = network.run_faces_decoded(image, ms, 127.5, 64.0, sigmoid=True, stride=2)
    space = OutputSpace("heatmap", WIDTH, 2)
    crop_points = space.to_crop(in_cells.points)
    expected = np.einsum("bij,bnj->bni", np.stack([invert(m)[:2, :2] for m in ms]), crop_points)
    expected += np.stack([invert(m)[:2, 2] for m in ms])[:, None]
    np.testing.assert_allclose(decoded.points, expected, rtol=1e-14, atol=1e-9)
    np.testing.assert_array_equal(decoded.confidence, in_cells.confidence)
    np.testing.assert_array_equal(decoded.valid, in_cells.valid)
    smoothed = network.run_faces_decoded(image, ms, 127.5, 64.0, sigmoid=True, stride=2, smooth=1.0)
    in_cells = network.run_crops_decoded(cv2_crops(image, ms), 127.5, 64.0, sigmoid=True, smooth=1.0)
    expected = np.einsum("bij,bnj->bni", np.stack([invert(m)[:2, :2] for m in ms]), space.to_crop(in_cells.points))
    expected += np.stack([invert(m)[:2, 2] for m in ms])[:, None]
    np.testing.assert_allclose(smoothed.points, expected, rtol=1e-14, atol=1e-9)
    np.testing.assert_array_equal(smoothed.confidence, decoded.confidence)  # the raw maps' peaks still
    assert not np.allclose(smoothed.points, decoded.points)


def test_bad_faces_inputs_are_refused_with_the_reason():
    network = native.Network(heatmap_network())
    image, ms = np.zeros((20, 20), np.uint8), np.eye(3)[None]
    with pytest.raises(ValueError, match="uint8 \\(H, W\\)"):
        network.run_faces(np.zeros((20, 20, 3), np.uint8), ms, 0.0, 1.0)
    with pytest.raises(ValueError, match="uint8 \\(H, W\\)"):
        network.run_faces(image.astype(np.float32), ms, 0.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        network.run_faces(image, np.full((1, 3, 3), np.nan), 0.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        network.run_faces(image, np.eye(3), 0.0, 1.0)
