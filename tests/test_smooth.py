import json
from pathlib import Path

import numpy as np
import pytest

from bitface.api import Face
from bitface.smooth import LandmarkSmoother, OneEuroFilter


def test_one_euro_keeps_a_constant_and_removes_most_noise():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=0.5, beta=0.0)
    assert np.allclose([f(np.array([3.0, -1.0]), 1 / 30) for _ in range(5)], [3.0, -1.0])
    f = OneEuroFilter(min_cutoff=0.5, beta=0.0)
    noise = rng.normal(0, 1, 300)
    out = np.array([f(v, 1 / 30) for v in noise])
    assert out[30:].std() < 0.3 * noise.std()


def test_a_higher_beta_follows_a_ramp_more_closely():
    ramp = np.arange(90) * 0.5

    def lag(beta):
        f = OneEuroFilter(min_cutoff=0.3, beta=beta)
        return float(np.mean(ramp[30:] - np.array([f(v, 1 / 30) for v in ramp])[30:]))

    assert 0 < lag(5.0) < lag(0.0)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_cutoff > 0"):
        OneEuroFilter(min_cutoff=0)
    with pytest.raises(ValueError, match="time step"):
        f = OneEuroFilter()
        f(np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="fps"):
        LandmarkSmoother(fps=0)


def face(x: float, points_offset: float = 0.0) -> Face:
    box = np.array([x, 10.0, x + 50, 60.0])
    return Face(box=box, points=np.array([[x + 20 + points_offset, 30.0], [x + 30, 30.0]]), score=1.0)


def test_faces_are_tracked_separately_and_new_ones_start_unsmoothed():
    smoother = LandmarkSmoother(fps=30)
    first = smoother([face(0), face(200)])
    assert [f.points[0, 0] for f in first] == [20.0, 220.0]
    # the order of faces in a frame does not mix their tracks
    second = smoother([face(200, 1.0), face(0, 1.0)])
    assert 220 < second[0].points[0, 0] < 221 and 20 < second[1].points[0, 0] < 21
    third = smoother([face(0, 1.0), face(600)])  # the second track is missed, a third face appears
    assert third[1].points[0, 0] == 620.0
    assert smoother([]) == []


def test_the_defaults_are_the_settings_the_smoothing_benchmark_picked():
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "video_smoothing.json"
    chosen = json.loads(results.read_text())["chosen"]
    defaults = LandmarkSmoother().settings
    assert (defaults["min_cutoff"], defaults["beta"]) == (chosen["min_cutoff"], chosen["beta"])
