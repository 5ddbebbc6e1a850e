"""Refinement: a detected face cropped again from the box its own landmarks imply."""

import cv2
import numpy as np
import pytest

from bitface import Landmarker, bundled
from bitface.detect import BoxCalibration, box_from_points, load_landmark_calibration
from bitface.io.images import load_image
from conftest import shared_data


@pytest.fixture(scope="module")
def sample():
    return load_image(bundled.sample_image(), "rgb")


def test_box_from_points_uses_the_usable_points_and_refuses_a_failed_face():
    points = np.array([[10.0, 20.0], [30.0, 60.0], [20.0, 40.0], [500.0, 500.0]])
    scale = BoxCalibration(sw=2.0, sh=1.0)
    np.testing.assert_allclose(box_from_points(points[:3], None, scale), [0, 20, 40, 60])
    # a point with confidence 0 (a map without a usable peak) does not stretch the box
    scores = np.array([0.9, 0.8, 0.7, 0.0])
    np.testing.assert_allclose(box_from_points(points, scores, BoxCalibration()), [10, 20, 30, 60])
    assert box_from_points(points, np.array([0.9, 0.0, 0.0, 0.0]), BoxCalibration()) is None
    assert box_from_points(np.full((4, 2), np.nan), None, BoxCalibration()) is None


@pytest.mark.parametrize("name", ["regression5-acn1bit", "landmarks68-hourglass-acn1bit"])
def test_one_pass_predicts_again_from_the_first_points_box(name, sample):
    once, plain = Landmarker(name, refine=1), Landmarker(name, refine=0)
    assert Landmarker(name).refine == (1 if name.startswith("landmarks68") else 0)  # the conventions' defaults
    [first] = plain(sample)
    [face] = once(sample)
    box = box_from_points(first.points, first.point_scores, once.landmark_calibration)
    np.testing.assert_array_equal(face.box, box)
    np.testing.assert_array_equal(face.detector_box, first.detector_box)
    # given boxes are taken as they are (on the gray image that detection made, to crop the same pixels)
    gray = cv2.cvtColor(sample, cv2.COLOR_RGB2GRAY)
    [again] = plain(gray, boxes=[box])
    np.testing.assert_array_equal(face.points, again.points)
    np.testing.assert_array_equal(once(gray, boxes=[first.box], refine=1)[0].points, face.points)


def test_refine_must_be_a_count_and_needs_a_calibration(monkeypatch):
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="refine"):
            Landmarker(refine=bad)
    with pytest.raises(ValueError, match="refine"):
        Landmarker(detector="none")(np.zeros((40, 40), np.uint8), boxes=[[0, 0, 30, 30]], refine=-2)
    monkeypatch.setattr("bitface.api.load_landmark_calibration", lambda convention: (None, 0))
    assert Landmarker("landmarks68-hourglass-real").refine == 0  # no landmarks calibration: off by default
    with pytest.raises(ValueError, match="no landmarks calibration"):
        Landmarker(refine=1)


def test_refinement_takes_back_most_of_a_misplaced_box_on_real_faces():
    from bitface.evaluate.metrics import nme_per_face
    from bitface.io import read_annotations
    from bitface.schemes import get_scheme, tight_boxes

    samples = read_annotations(shared_data("300w_helen_68pt/testset"), check="exists").samples[:40]
    images = [load_image(s.image_path, "gray") for s in samples]
    truth = np.stack([s.points for s in samples])
    boxes = tight_boxes(truth)
    size = boxes[:, 2:] - boxes[:, :2]
    rng = np.random.default_rng(0)  # boxes off by up to 20% of the face in place and 25% in size
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + rng.uniform(-0.2, 0.2, size.shape) * size
    half = size / 2 * rng.uniform(0.75, 1.25, (len(samples), 1))
    rough = np.concatenate([centre - half, centre + half], axis=1)
    lm = Landmarker("landmarks68-hourglass-acn1bit", detector="none")
    assert load_landmark_calibration("ibug68-points") == (BoxCalibration(), 1)  # the tight box itself

    def nme(given, refine):
        faces = lm.batch(images, [[b] for b in given], refine=refine)
        points = np.stack([f[0].points for f in faces])
        return float(np.mean(nme_per_face(points, truth, get_scheme("68pt"), "interocular")))

    annotated, misplaced, refined = nme(boxes, 0), nme(rough, 0), nme(rough, 1)
    assert misplaced > 1.15 * annotated  # the perturbation hurts ...
    assert refined - annotated < 0.5 * (misplaced - annotated)  # ... and one pass takes most of it back
