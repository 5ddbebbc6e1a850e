"""The Landmarker API and `bitface predict` / `bitface models` on the bundled sample image."""

import json

import cv2
import numpy as np
import pytest

from bitface import Landmarker, bundled
from bitface.cli import main
from bitface.io.images import load_image


@pytest.fixture(scope="module")
def lm():
    return Landmarker()


@pytest.fixture(scope="module")
def sample():
    return load_image(bundled.sample_image(), "rgb")


def test_one_face_with_five_points_inside_its_box(lm, sample):
    faces = lm(sample)
    assert len(faces) == 1
    face = faces[0]
    assert face.points.shape == (5, 2) and face.score > 0
    x0, y0, x1, y1 = face.box
    assert ((face.points >= [x0, y0]) & (face.points <= [x1, y1])).all()
    left_eye, right_eye, nose = face.points[:3]
    assert left_eye[0] < nose[0] < right_eye[0] and nose[1] > left_eye[1]  # an upright face
    json.dumps(face.to_dict())


def test_paths_pil_bgr_and_gray_inputs_give_the_same_points(lm, sample):
    from PIL import Image

    expected = lm(sample)[0].points
    np.testing.assert_allclose(lm(str(bundled.sample_image()))[0].points, expected)
    np.testing.assert_allclose(lm(Image.fromarray(sample))[0].points, expected)
    np.testing.assert_allclose(lm(sample[:, :, ::-1].copy(), channel_order="bgr")[0].points, expected)
    rgba = np.dstack([sample, np.full(sample.shape[:2], 255, np.uint8)])
    np.testing.assert_allclose(lm(rgba)[0].points, expected)
    gray = cv2.cvtColor(sample, cv2.COLOR_RGB2GRAY)
    assert len(lm(gray)) == 1


def test_given_boxes_and_a_real_batch(lm, sample):
    box = lm(sample)[0].box
    faces = lm.batch([sample, sample[::-1].copy()], boxes=[[box], []])
    assert [len(f) for f in faces] == [1, 0]
    assert faces[0][0].score is None
    no_face = np.zeros((120, 160), np.uint8)
    assert lm(no_face) == []


def test_threads_sharing_a_landmarker_each_get_their_own_faces(sample):
    """Web servers call one Landmarker from many threads: the detector and the native plan (whose
    buffers hold one run) take turns, where they once handed a thread the other's face."""
    from concurrent.futures import ThreadPoolExecutor

    lm = Landmarker("landmarks68-hourglass-acn1bit-fast96")
    images = [sample, sample[:, ::-1].copy()]
    expected = [[face.to_dict() for face in lm(image)] for image in images]
    assert expected[0] != expected[1] and all(len(faces) == 1 for faces in expected)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: [face.to_dict() for face in lm(images[i % 2])], range(48)))
    assert got == [expected[i % 2] for i in range(48)]


def test_bad_inputs_are_named(lm):
    with pytest.raises(ValueError, match="uint8"):
        lm(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        lm(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        Landmarker("nope")
    with pytest.raises(ValueError, match="unknown detector 'nope'"):
        Landmarker(detector="nope")


def test_the_dlib_detector_says_how_to_install_it(monkeypatch):
    import sys

    from bitface.detect import get_detector

    monkeypatch.setitem(sys.modules, "dlib", None)  # as if not installed
    with pytest.raises(ValueError, match="dlib-hog: dlib is not installed"):
        get_detector("dlib-hog")


def test_the_dlib_detector_finds_the_sample_face_through_its_calibration(sample):
    pytest.importorskip("dlib", reason="dlib is an optional detector (pip install dlib-bin)")
    from bitface.detect import load_calibration

    model = "landmarks68-hourglass-acn1bit-fast96"
    assert load_calibration("dlib-hog", "ibug68-points") != load_calibration("none", "ibug68-points")
    [face] = Landmarker(model, detector="dlib-hog")(sample)
    [haar] = Landmarker(model)(sample)
    assert face.score > 0 and np.abs(face.points - haar.points).mean() < 2.0  # the same face, framed alike


def test_cli_predict_writes_json_and_drawings(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["predict", "--sample", "--json", str(out), "--draw", str(tmp_path / "draw"), "--quiet"]) == 0
    document = json.loads(out.read_text())
    assert document["model"] == bundled.default_model()
    [entry] = document["images"]
    assert len(entry["faces"]) == 1 and len(entry["faces"][0]["points"]) == 5
    assert (tmp_path / "draw" / "astronaut.landmarks.png").is_file()


def test_cli_predict_flip_test_gives_the_api_flip_test_points(tmp_path, sample):
    out = tmp_path / "out.json"
    assert main(["predict", "--sample", "--flip-test", "--json", str(out), "--quiet"]) == 0
    [face] = json.loads(out.read_text())["images"][0]["faces"]
    np.testing.assert_allclose(face["points"], Landmarker(flip_test=True)(sample)[0].points, atol=1e-3)


def test_cli_predict_goes_past_bad_files_and_fails_at_the_end(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "empty.png").write_bytes(b"")
    cv2.imwrite(str(folder / "blank.png"), np.zeros((50, 50), np.uint8))
    out = tmp_path / "out.json"
    assert main(["predict", str(folder), str(tmp_path / "missing.jpg"), "--json", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "broken.jpg: not a decodable image" in err and "empty.png: image file is empty" in err
    assert "missing.jpg: no such file or folder" in err
    [entry] = json.loads(out.read_text())["images"]
    assert entry["faces"] == [] and entry["note"] == "no face found"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(empty), "--json", str(tmp_path / "none.json"), "--quiet"]) == 1
    assert "folder has no images or videos" in capsys.readouterr().err


def test_cli_models_lists_the_bundled_models(capsys):
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = {m["name"] for m in listing["models"]}
    assert {"regression5-cnn", "regression5-acn", "regression5-acn1bit"} <= names
    assert all(m["file_bytes"] > 0 and min(m["nme"].values()) > 0 for m in listing["models"])
    assert {m["scheme"] for m in listing["models"]} == {"5pt", "68pt"}


def test_cli_predict_on_a_video_writes_one_entry_per_frame_smoothed_by_default(sample, tmp_path):
    small = cv2.resize(sample, (256, 256), interpolation=cv2.INTER_AREA)
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (256, 256))
    rng = np.random.default_rng(0)
    for _ in range(6):
        noisy = np.clip(small.astype(np.int16) + rng.integers(-6, 7, small.shape), 0, 255).astype(np.uint8)
        writer.write(cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR))
    writer.release()
    runs = {}
    for flag in ([], ["--no-smooth"]):
        out = tmp_path / f"out{len(flag)}.json"
        draw = tmp_path / f"draw{len(flag)}"
        assert main(["predict", str(video), "--json", str(out), "--draw", str(draw), "--quiet", *flag]) == 0
        entries = json.loads(out.read_text())["images"]
        assert [e["frame"] for e in entries] == list(range(6))
        assert (draw / "clip.landmarks.mp4").stat().st_size > 0
        runs[bool(flag)] = np.array([e["faces"][0]["points"] for e in entries])
    smoothed, raw = runs[False], runs[True]
    np.testing.assert_allclose(smoothed[0], raw[0])  # a new track starts unsmoothed
    frame_to_frame = lambda p: np.abs(np.diff(p, axis=0)).mean()  # noqa: E731
    assert frame_to_frame(smoothed) < frame_to_frame(raw)


def test_heatmap_models_score_each_point_and_a_face_scores_above_noise(sample):
    from bitface.data.geometry import warp
    from bitface.data.pipeline import to_original

    lm68 = Landmarker("landmarks68-hourglass-real")
    [face] = lm68(sample)
    assert face.point_scores.shape == (68,) and ((face.point_scores > 0) & (face.point_scores <= 1)).all()
    # the scores belong to the points returned: the decoded peaks of the same crop
    matrix = lm68.model.crop.matrix(face.box)
    crop = warp(cv2.cvtColor(sample, cv2.COLOR_RGB2GRAY), matrix, lm68.model.crop.size)
    points, scores = lm68.model.predict_crops_scored(crop[None])
    np.testing.assert_array_equal(scores[0], face.point_scores)
    np.testing.assert_allclose(to_original(points[0], matrix), face.points)
    noise = np.random.default_rng(0).integers(0, 256, (300, 300), np.uint8)
    [guess] = lm68(noise, boxes=[[50, 50, 250, 250]])
    assert np.median(guess.point_scores) < np.median(face.point_scores) - 0.3
    assert json.loads(json.dumps(face.to_dict()))["point_scores"] == [round(float(v), 4) for v in face.point_scores]
    assert Landmarker()(sample)[0].point_scores is None  # the 5-point regressor gives none


@pytest.mark.parametrize("flip_test", [False, True])
@pytest.mark.parametrize("name", ["landmarks68-hourglass-xnor", "regression5-acn1bit"])
def test_crops_sampled_natively_give_the_points_of_cv2_crops(name, flip_test, sample):
    from bitface.data.predictor import CroppedPredictor

    model = Landmarker(name, detector="none", flip_test=flip_test).model
    gray = cv2.cvtColor(sample, cv2.COLOR_RGB2GRAY)
    boxes = [[180, 60, 300, 220], [-40, -30, 90, 80], [400, 420, 530, 560], [20, 20, 500, 500]]  # the last: >2x
    for group in (boxes[:3], boxes):  # native; and with a face that is area-downsampled first (warp's path)
        ms = [model.crop.matrix(np.array(b, float)) for b in group]
        points, scores = model.predict_in_image(gray, ms)
        expected_points, expected_scores = CroppedPredictor.predict_in_image(model, gray, ms)  # cv2 crops
        np.testing.assert_allclose(points, expected_points, rtol=0, atol=1e-9)
        if expected_scores is None:
            assert scores is None
        else:
            np.testing.assert_array_equal(scores, expected_scores)


@pytest.mark.parametrize("name", ["landmarks68-hourglass-acn1bit-fast96", "regression5-acn1bit"])
def test_a_flip_test_averages_each_face_with_its_mirror_image(name, sample):
    """The native flip (heatmaps: both runs in one call) gives what the predictor computes from two plain
    network runs (CroppedPredictor.with_mirror); it moves points by a little, not by a face."""
    from bitface.data.predictor import CroppedPredictor

    plain, flipped = Landmarker(name), Landmarker(name, flip_test=True)
    model = flipped.model
    crops = np.stack([cv2.resize(cv2.cvtColor(sample, cv2.COLOR_RGB2GRAY)[60:230, 150:320], (model.crop.size,) * 2)])
    points, _ = model.predict_crops_scored(crops)
    expected, _ = CroppedPredictor.predict_crops_scored(model, crops)  # model.forward twice, in numpy
    np.testing.assert_allclose(points, expected, rtol=0, atol=1e-9)
    face = plain(sample)[0]
    moved = np.linalg.norm(face.points - flipped(sample)[0].points, axis=1)
    assert 0 < moved.mean() < 0.03 * (face.box[2] - face.box[0])


def test_a_flip_test_must_be_a_bool():
    with pytest.raises(ValueError, match="flip_test must be True or False"):
        Landmarker(flip_test="yes")
