"""FaceTracker: faces followed by their own landmarks between detections."""

import cv2
import numpy as np
import pytest

from bitface import Landmarker, bundled
from bitface.io.images import load_image
from bitface.track import FaceTracker


@pytest.fixture(scope="module")
def sample():
    # at this size the cascade finds the one face in every frame below (at some others, a false one too)
    return cv2.resize(load_image(bundled.sample_image(), "rgb"), (256, 256), interpolation=cv2.INTER_AREA)


def shifted(image, dx):
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, 0]]), image.shape[1::-1], borderValue=(128, 128, 128))


def counting(lm):
    """The Landmarker with its detector's calls counted in lm.calls."""
    detector, lm.calls = lm.detector, []

    def counted(gray):
        lm.calls.append(1)
        return detector(gray)

    lm.detector = counted
    return lm


@pytest.mark.parametrize("name", ["regression5-acn1bit", "landmarks68-hourglass-acn1bit"])
def test_the_detector_runs_every_nth_frame_and_faces_follow_a_moving_face(name, sample):
    lm = counting(Landmarker(name))
    tracker = FaceTracker(lm, detect_every=5)
    tracks = []
    for t in range(12):
        faces = tracker(shifted(sample, 3 * t))
        assert len(faces) == 1
        tracks.append(faces[0].points)
    assert len(lm.calls) == tracker.detections == 3  # frames 0, 5 and 10
    steps = np.diff(np.stack(tracks)[:, :, 0].mean(1))
    assert abs(np.median(steps) - 3) < 1.0  # the points move with the face
    # each frame's points are those of a detection on that frame, to within a small share of the face
    # (a 1-bit net on a 39 px face differs by pixels)
    [alone] = Landmarker(name)(shifted(sample, 3 * 11))
    width = alone.box[2] - alone.box[0]
    assert np.abs(tracks[-1] - alone.points).max() < 0.08 * width


def test_a_face_that_goes_away_is_dropped_and_the_detector_comes_back(sample):
    blank = np.full_like(sample, 128)
    heatmap = counting(Landmarker("landmarks68-hourglass-acn1bit"))
    tracker = FaceTracker(heatmap, detect_every=10)
    assert len(tracker(sample)) == 1 and len(tracker(sample)) == 1
    assert tracker(blank) == [] and len(heatmap.calls) == 2  # its points lost confidence: detect again
    assert len(tracker(sample)) == 1 and len(heatmap.calls) == 3
    # a regressor gives no confidence: it follows until a detection finds nothing where the face was
    regressor = counting(Landmarker("regression5-acn1bit"))
    tracker = FaceTracker(regressor, detect_every=3)
    assert [len(tracker(frame)) for frame in (sample, blank, blank, blank)] == [1, 1, 1, 0]
    assert len(regressor.calls) == 2


def test_settings_are_checked():
    lm = Landmarker()
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="detect_every"):
            FaceTracker(lm, bad)
    with pytest.raises(ValueError, match="detector"):
        FaceTracker(Landmarker(detector="none"))
