"""The MPII Human Pose reader, on a generated mpii_human_pose_v1_u12_1.mat (we have no MPII images)."""

import numpy as np
import pytest

from bitface.io import DataError, detect_format, read_annotations
from bitface.io.mpii import VAL_EVERY
from bitface.schemes import get_scheme
from conftest import PERSON_HEAD_BOX, write_mpii_set


def test_people_come_out_0_based_with_unannotated_joints_as_nan(tmp_path):
    path, truth = write_mpii_set(tmp_path)
    assert detect_format(path) == "mpii"
    result = read_annotations(path)
    assert result.errors == []
    assert len(result.samples) == len(truth) == 20  # the test image and the person without joints are left out
    for sample, points in zip(result.samples, truth, strict=True):
        np.testing.assert_allclose(sample.points, points, atol=1e-9, equal_nan=True)
        assert sample.image_path.parent == tmp_path / "images" and sample.image_path.is_file()
    first = result.samples[0]
    assert np.isnan(first.points[:3]).all() and not first.visible[:3].any()  # not annotated
    assert not first.visible[9] and first.visible[3:9].all()  # joint 9 is marked occluded
    np.testing.assert_allclose(first.attributes["head_box"], PERSON_HEAD_BOX)  # 1-based on disk
    # the person square: 200 * scale (0.7) px around objpos (81, 85), 1-based on disk
    np.testing.assert_allclose(first.box, [80 - 70, 84 - 70, 80 + 70, 84 + 70])
    assert first.source.endswith("annolist(1).annorect(1)")


def test_train_and_val_subsets_split_the_images(tmp_path):
    path, _ = write_mpii_set(tmp_path)
    train = read_annotations(f"{path}#train").samples
    val = read_annotations(f"{path}#val").samples
    assert len(val) == 20 // VAL_EVERY and len(train) + len(val) == 20
    assert not {s.image_path for s in train} & {s.image_path for s in val}
    with pytest.raises(DataError, match="unknown MPII subset 'test'"):
        read_annotations(f"{path}#test")


def test_a_subset_of_a_format_without_subsets_is_an_error(tmp_path, face_image):
    image, points = face_image
    (tmp_path / "list.txt").write_text(f"face.png 20 100 22 100 {' '.join(f'{v:.2f}' for v in points.ravel())}\n")
    with pytest.raises(DataError, match="has no subsets"):
        read_annotations(f"{tmp_path / 'list.txt'}#train")


def test_a_bad_joint_names_the_person(tmp_path):
    path, _ = write_mpii_set(tmp_path, images=3, bad_id_in=1)
    result = read_annotations(path)
    assert len(result.samples) == 1 and "annolist(2).annorect(1): joint id 17" in result.errors[0]
    with pytest.raises(DataError, match=r"annolist\(2\)\.annorect\(1\): joint id 17 is not in 0..15"):
        read_annotations(path, strict=True)


def test_a_mat_file_without_release_is_not_mpii(tmp_path):
    from scipy.io import savemat

    savemat(tmp_path / "other.mat", {"something": np.zeros(3)})
    assert detect_format(tmp_path / "other.mat") == "aflw2000"
    with pytest.raises(DataError, match="no RELEASE struct"):
        read_annotations(tmp_path / "other.mat", format="mpii")


def test_the_mpii_scheme_flips_left_and_right_limbs():
    scheme = get_scheme("mpii")
    names = scheme.point_names
    for i, j in enumerate(scheme.flip_permutation):
        assert names[j] == names[i].replace("right", "@").replace("left", "right").replace("@", "left")
