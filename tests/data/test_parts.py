import numpy as np
import pytest

from bitface.data.parts import PART_CLASSES, part_labels
from bitface.evaluate.segmentation import confusion, segmentation_scores
from conftest import face68


def test_each_part_is_painted_where_its_points_enclose_it():
    points = face68()
    labels = part_labels(points, 128, 128)
    at = lambda p: PART_CLASSES[labels[int(round(p[1])), int(round(p[0]))]]  # noqa: E731
    assert at(points[36:42].mean(0)) == at(points[42:48].mean(0)) == "eyes"
    assert at(points[60:68].mean(0)) == "inner_mouth"
    assert at((points[51] + points[62]) / 2) == "upper_lip"
    assert at((points[57] + points[66]) / 2) == "lower_lip"
    assert at((points[30] + points[33]) / 2) == "nose"
    assert at((points[3] + points[31]) / 2) == "skin"  # a cheek
    assert at([2, 2]) == "background" and set(np.unique(labels)) == set(range(7))


def test_masks_at_heatmap_and_crop_resolution_agree():
    # the same face at stride 4 (cells) and at full resolution: cell centres sit at (c + 0.5) * 4 - 0.5
    points = face68()
    fine = part_labels(points, 128, 128)
    coarse = part_labels((points + 0.5) / 4 - 0.5, 32, 32)
    assert np.mean(fine[1::4, 1::4] == coarse) > 0.93  # only cells on part borders may differ


def test_bad_points_are_refused():
    with pytest.raises(ValueError, match="68 iBUG points"):
        part_labels(np.zeros((5, 2)), 8, 8)
    points = face68()
    points[3] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        part_labels(points, 8, 8)


def test_segmentation_scores_by_hand():
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    scores = segmentation_scores(confusion(truth, predicted, 4), ("a", "b", "c", "absent"))
    assert scores["pixel_accuracy"] == pytest.approx(100 * 6 / 8)
    assert scores["mean_accuracy"] == pytest.approx(100 * (3 / 4 + 1 + 1 / 2) / 3)  # class 3 never occurs
    assert scores["mean_iu"] == pytest.approx(100 * (3 / 4 + 2 / 4 + 1 / 2) / 3)
    assert scores["per_class"]["absent"] is None
    with pytest.raises(ValueError, match="labels must lie in 0..3"):
        confusion(truth, predicted + 2, 4)
