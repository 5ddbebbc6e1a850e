import cv2
import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from bitface.data import AugmentSpec, CropSpec, OutputSpace, geometry, make_example, to_original
from bitface.data.heatmaps import gaussian_heatmaps
from bitface.io import Sample
from bitface.schemes import FIVE
from conftest import FACE5, blob_centres, blob_image


def test_crop_matrix_maps_the_square_edges_to_the_crop_edges():
    m = geometry.crop_matrix(centre=(50.0, 40.0), side=20.0, size=10)
    np.testing.assert_allclose(geometry.apply(m, [[40.0, 30.0], [60.0, 50.0]]), [[-0.5, -0.5], [9.5, 9.5]])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=6, max_size=6))
@example([6.15e-179, 0.0, 0.0, 0.0, 6.15e-179, 0.0])  # its determinant underflows to 0 (found by hypothesis)
@example([0.0, 2.225073858507e-311, 0.0, 2.225073858507e-311, 0.0, 0.0])  # subnormal: its inverse overflows
@example([2.225073858507e-311, 2.225073858507203e-309, 0.0, 2.225073858507e-311, 0.0, 0.0])  # numpy: singular
def test_the_closed_form_affine_inverse_agrees_with_numpy(values):
    matrix = np.vstack([np.reshape(values, (2, 3)), [0, 0, 1]])
    assume(np.linalg.cond(matrix[:2, :2]) < 1e6)  # well-conditioned: both inverses hold many digits
    try:
        inverse = np.linalg.inv(matrix)
    except np.linalg.LinAlgError:
        inverse = None
    if inverse is None or not np.isfinite(inverse).all():  # no inverse a double holds: refused, never a wrong one
        with pytest.raises(np.linalg.LinAlgError, match="not invertible"):
            geometry.invert(matrix)
        return
    np.testing.assert_allclose(geometry.invert(matrix), inverse, rtol=0, atol=1e-9 * np.abs(inverse).max())
    np.testing.assert_array_equal(geometry.invert(matrix)[2], [0, 0, 1])


def test_a_singular_or_projective_matrix_is_not_inverted_as_affine():
    with pytest.raises(np.linalg.LinAlgError, match="not invertible"):
        geometry.invert(np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [0, 0, 1]]))
    projective = np.array([[1.0, 0.2, 3.0], [0.1, 1.0, 5.0], [0.01, 0, 1]])
    np.testing.assert_allclose(geometry.invert(projective), np.linalg.inv(projective))


@settings(max_examples=200, deadline=None)
@given(
    cx=st.floats(-50, 500),
    cy=st.floats(-50, 500),
    side=st.floats(5, 2000),
    size=st.sampled_from([39, 64, 128, 256]),
    kind=st.sampled_from(["pixels", "normalized", "heatmap"]),
    seed=st.integers(0, 2**16),
)
def test_crop_to_prediction_space_and_back_round_trips(cx, cy, side, size, kind, seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(-100, 600, (68, 2))
    matrix = geometry.crop_matrix((cx, cy), side, size) @ geometry.about_centre(size, 17.0, 1.1, (3, -2), True)
    space = OutputSpace(kind, size if kind != "heatmap" else size // 4, 4)
    predicted = space.from_crop(geometry.apply(matrix, points))
    back = to_original(space.to_crop(predicted), matrix)
    assert np.abs(back - points).max() < 1e-3


@pytest.mark.parametrize("kind", ["pixels", "normalized", "heatmap"])
def test_the_output_for_a_mirrored_crop_mirrors_back_onto_the_crop(kind):
    """OutputSpace.mirror (the test-time flip): what a network should output for the mirrored crop,
    mirrored back, is what it should output for the crop itself."""
    size, stride = 64, 4
    points = np.random.default_rng(0).uniform(0, size - 1, (5, 2))
    mirrored = FIVE.flip_points(points, size)  # the same face in the mirrored crop
    space = OutputSpace(kind, size, stride)
    if kind == "heatmap":
        cells = size // stride
        maps = [gaussian_heatmaps(space.from_crop(p), cells, cells, 1.5)[None] for p in (points, mirrored)]
        np.testing.assert_allclose(space.mirror(maps[1], FIVE.flip_permutation), maps[0], atol=1e-6)
    else:
        back = space.mirror(space.from_crop(mirrored)[None], FIVE.flip_permutation)[0]
        np.testing.assert_allclose(back, space.from_crop(points), atol=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_augmentation_keeps_points_on_the_drawn_dots(seed):
    image = blob_image(FACE5, 120, 100, sigma=2.5)
    sample = Sample(image_path=None, points=FACE5, box=np.array([30, 30, 90, 90.0]))
    spec = AugmentSpec(rotation=30, scale=(0.7, 1.3), translation=0.1, flip=0.5, brightness=0.1, contrast=0.2)
    example = make_example(image, sample, CropSpec(size=96, margin=0.2), FIVE, spec, np.random.default_rng(seed))
    found = blob_centres(example.crop, example.points, radius=4)
    assert np.abs(found - example.points).max() < 0.5


def test_flip_relabels_points_so_left_eye_stays_on_the_image_left():
    image = blob_image(FACE5, 120, 100)
    sample = Sample(image_path=None, points=FACE5, box=np.array([30, 30, 90, 90.0]))
    spec = AugmentSpec(flip=1.0)
    example = make_example(image, sample, CropSpec(size=64), FIVE, spec, np.random.default_rng(0))
    assert example.points[0, 0] < example.points[1, 0]  # image-left eye is still left of the other
    assert example.points[3, 0] < example.points[4, 0]
    # and the flipped crop mirrors the unflipped one
    plain = make_example(image, sample, CropSpec(size=64))
    np.testing.assert_allclose(example.points[:, 0], 63 - plain.points[FIVE.flip_permutation, 0], atol=1e-9)


def test_heavy_downscaling_is_antialiased_and_exact_in_geometry():
    points = np.array([[200.0, 300.0], [800.5, 310.25], [500, 700]])
    image = blob_image(points, 1000, 1000, sigma=12)
    sample = Sample(image_path=None, points=points, box=np.array([100, 100, 900, 900.0]))
    example = make_example(image, sample, CropSpec(size=64))
    found = blob_centres(example.crop, example.points, radius=3)
    assert np.abs(found - example.points).max() < 0.25


def test_bad_specs_are_refused_with_the_field_name():
    with pytest.raises(ValueError, match="rotation=-5"):
        AugmentSpec(rotation=-5)
    with pytest.raises(ValueError, match="crop size"):
        CropSpec(size=2)
    with pytest.raises(ValueError, match="needs the landmark scheme"):
        make_example(
            np.zeros((50, 50), np.uint8),
            Sample(None, FACE5 / 3, np.array([5, 5, 45, 45.0])),
            CropSpec(32),
            None,
            AugmentSpec(flip=1.0),
            np.random.default_rng(0),
        )


@pytest.mark.parametrize("box", [(250, 200, 350, 300), (-60, -40, 90, 110), (450, 330, 650, 530), (0, 0, 200, 200)])
def test_downscaling_only_the_covered_region_equals_downscaling_the_whole_image(box):
    # 600 x 480 divides by 2, 3 and 4: the whole-image area resize is then by exactly the factor,
    # the reference for the region the crop covers
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (480, 600, 3)).astype(np.uint8), (0, 0), 2)
    for size in (64,):  # factors 2, 3 and 4 for boxes 100, 150 and 200 px wide
        matrix = geometry.crop_matrix(*geometry.square_from_box(np.array(box, float), 0.2), size)
        factor = int(np.floor(1 / np.sqrt(abs(np.linalg.det(matrix[:2, :2])))))
        assert 600 % factor == 0 and 480 % factor == 0
        small = cv2.resize(image, (600 // factor, 480 // factor), interpolation=cv2.INTER_AREA)
        s = 1 / factor
        to_small = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]])
        expected = cv2.warpAffine(small, (matrix @ geometry.invert(to_small))[:2], (size, size), flags=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(geometry.warp(image, matrix, size), expected)


def test_a_crop_wholly_outside_the_image_is_black():
    matrix = geometry.crop_matrix(np.array([-500.0, -500.0]), 300.0, 32)
    assert not geometry.warp(np.full((100, 100), 255, np.uint8), matrix, 32).any()
