import numpy as np
import pytest

from bitface.data import decode_argmax, decode_soft_argmax, gaussian_heatmaps


def test_gaussian_targets_decode_to_their_subpixel_centres():
    rng = np.random.default_rng(0)
    points = rng.uniform(2, 29, (68, 2))
    maps = gaussian_heatmaps(points, 32, 32, sigma=1.5)
    assert maps.shape == (68, 32, 32) and maps.dtype == np.float32
    decoded = decode_argmax(maps)
    assert decoded.valid.all()
    assert np.abs(decoded.points - points).max() < 1e-3
    assert np.abs(decode_argmax(maps, refine=False).points - points).max() <= 0.5 + 1e-9


def test_soft_argmax_of_gaussian_logits_is_the_centre():
    # soft-argmax reads its maps as logits: softmax(log G) = G / sum(G), whose mean is G's centre
    points = np.array([[10.0, 12.0], [20.3, 5.7]])
    maps = gaussian_heatmaps(points, 32, 32, sigma=1.0).astype(np.float64)
    decoded = decode_soft_argmax(np.log(maps + 1e-300))
    assert np.abs(decoded.points - points).max() < 1e-6


def test_batched_maps_keep_their_leading_shape():
    maps = gaussian_heatmaps(np.array([[4.0, 5.0]] * 3), 16, 16, 1.0).reshape(1, 3, 16, 16)
    decoded = decode_argmax(np.concatenate([maps, maps]))
    assert decoded.points.shape == (2, 3, 2) and decoded.confidence.shape == (2, 3)


@pytest.mark.parametrize("decode", [decode_argmax, decode_soft_argmax])
def test_zero_nan_and_flat_maps_are_flagged_not_zero(decode):
    maps = np.zeros((4, 8, 10))
    maps[1] = np.nan
    maps[2] = 0.7
    maps[3, 2, 3] = 1.0
    decoded = decode(maps)
    assert decoded.valid.tolist() == [False, False, False, True]
    np.testing.assert_array_equal(decoded.points[:3], [[4.5, 3.5]] * 3)  # the map centre, never (0, 0)
    assert (decoded.confidence[:3] == 0).all()
