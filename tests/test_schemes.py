import numpy as np
import pytest

from bitface.schemes import FIVE, IBUG68, SCHEMES, get_scheme, normalizing_distances, reduce_68_to_5


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=lambda s: s.name)
def test_flip_permutation_is_an_involution_that_swaps_the_eyes(scheme):
    perm = np.array(scheme.flip_permutation)
    assert sorted(perm) == list(range(scheme.num_points))
    assert (perm[perm] == np.arange(scheme.num_points)).all()
    assert sorted(perm[list(scheme.left_eye)]) == sorted(scheme.right_eye)
    assert len(scheme.point_names) == len(set(scheme.point_names)) == scheme.num_points
    if scheme.outer_eye_corners:
        i, j = scheme.outer_eye_corners
        assert perm[i] == j


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=lambda s: s.name)
def test_flip_names_mirror_left_and_right(scheme):
    for i, j in enumerate(scheme.flip_permutation):
        a, b = scheme.point_names[i], scheme.point_names[j]
        mirrored = a.replace("left", "X").replace("right", "left").replace("X", "right")
        # same part of the face on the other side (numbered parts may change number, e.g. jaw_03 <-> jaw_13)
        assert mirrored.rsplit("_", 1)[0] == b.rsplit("_", 1)[0], (scheme.name, a, b)


def test_flipping_points_twice_is_the_identity_and_moves_the_left_eye_right():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (68, 2))
    once = IBUG68.flip_points(pts, width=101)
    np.testing.assert_allclose(IBUG68.flip_points(once, width=101), pts)
    # the image-left eye of the flipped face is the mirror of the original image-right eye
    np.testing.assert_allclose(once[36:42, 0].mean(), 100 - pts[42:48, 0].mean())


def test_68_to_5_reduction():
    pts = np.arange(136, dtype=float).reshape(68, 2)
    five = reduce_68_to_5(pts)
    np.testing.assert_allclose(five[0], pts[36:42].mean(0))
    np.testing.assert_allclose(five[1], pts[42:48].mean(0))
    np.testing.assert_allclose(five[2:], pts[[30, 48, 54]])


def test_normalizers_by_hand():
    pts = np.full((68, 2), 40.0)
    pts[36] = [10, 50]
    pts[45] = [70, 50]
    pts[37:42] = [10, 50]
    pts[42:45] = pts[46:48] = [70, 50]
    pts[0] = [0, 20]
    pts[8] = [40, 100]  # tight box: x 0..70, y 20..100
    assert normalizing_distances(IBUG68, "interocular", pts)[0] == 60
    assert normalizing_distances(IBUG68, "interpupil", pts)[0] == 60
    assert normalizing_distances(IBUG68, "box_width", pts)[0] == 70
    assert normalizing_distances(IBUG68, "box_width", pts, boxes=[[5, 5, 95, 95]])[0] == 90
    assert normalizing_distances(IBUG68, "box_sqrt_wh", pts)[0] == pytest.approx(np.sqrt(70 * 80))
    assert normalizing_distances(IBUG68, "box_diag", pts)[0] == pytest.approx(np.hypot(70, 80))


def test_bad_normalizer_requests_are_named():
    with pytest.raises(ValueError, match="interocular"):
        normalizing_distances(FIVE, "interocular", np.ones((5, 2)))
    with pytest.raises(ValueError, match="unknown normalizer 'iod'"):
        normalizing_distances(FIVE, "iod", np.ones((5, 2)))
    with pytest.raises(ValueError, match="zero"):
        normalizing_distances(FIVE, "interpupil", np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"\(\.\.\., 5, 2\)"):
        normalizing_distances(FIVE, "interpupil", np.ones((68, 2)))


def test_lookup_by_name_alias_and_count():
    assert get_scheme("ibug68") is IBUG68 and get_scheme(68) is IBUG68 and get_scheme("5") is FIVE
    with pytest.raises(KeyError, match="unknown landmark scheme"):
        get_scheme("17pt")
