"""Each reader on a small generated fixture; each proves its coordinate convention against blobs drawn
at the 0-based positions the annotation encodes."""

import json

import numpy as np
import pytest
from scipy.io import savemat

from bitface.io import DataError, detect_format, load_image, read_annotations
from conftest import blob_centres, blob_image, write_image


def _pts_text(points_1based, header=True):
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points_1based)
    return f"version: 1\nn_points:  {len(points_1based)}\n{{\n{body}\n}}\n" if header else body + "\n"


def _assert_on_blobs(sample, expected):
    np.testing.assert_allclose(sample.points, expected, atol=1e-9)
    image = load_image(sample.image_path)
    np.testing.assert_allclose(blob_centres(image, sample.points), expected, atol=0.05)


@pytest.mark.parametrize("header", [True, False])
def test_pts_is_one_based_with_or_without_header(tmp_path, face_image, header):
    path, points = face_image
    (tmp_path / "face.pts").write_text(_pts_text(points + 1, header))
    result = read_annotations(tmp_path / "face.pts", strict=True)
    assert result.format == "pts"
    _assert_on_blobs(result.samples[0], points)


def test_pts_folder_and_mixed_ljson(tmp_path, face_image):
    path, points = face_image
    (tmp_path / "face.pts").write_text(_pts_text(points + 1))
    write_image(tmp_path / "b.png", blob_image(points, 120, 100))
    doc = {"version": 3, "groups": {"LJSON": {"landmarks": {"points": points[:, ::-1].tolist(), "connectivity": []}}}}
    (tmp_path / "b.ljson").write_text(json.dumps(doc))
    result = read_annotations(tmp_path, strict=True)
    assert result.format == "pts+ljson" and len(result.samples) == 2
    for sample in result.samples:
        _assert_on_blobs(sample, points)


def test_cuhk_list_box_order_backslash_and_crlf(tmp_path, face_image):
    _, points = face_image
    (tmp_path / "lfw_5590").mkdir()
    write_image(tmp_path / "lfw_5590" / "a.png", blob_image(points, 120, 100))
    coords = " ".join(f"{v:.6f}" for v in points.ravel())
    (tmp_path / "list.txt").write_bytes(f"lfw_5590\\a.png 20 100 15 95 {coords}\r\n".encode())
    result = read_annotations(tmp_path / "list.txt", strict=True)
    assert result.format == "cuhk"
    sample = result.samples[0]
    np.testing.assert_array_equal(sample.box, [20, 15, 100, 95])  # left right top bottom -> x0 y0 x1 y1
    _assert_on_blobs(sample, points)
    assert sample.source == "list.txt:1"


def test_mtfl_list_all_x_then_all_y_one_based(tmp_path, face_image):
    _, points = face_image
    (tmp_path / "AFLW").mkdir()
    write_image(tmp_path / "AFLW" / "a.png", blob_image(points, 120, 100))
    xs = " ".join(f"{v + 1:.6f}" for v in points[:, 0])
    ys = " ".join(f"{v + 1:.6f}" for v in points[:, 1])
    (tmp_path / "testing.txt").write_bytes(
        f"AFLW/a.png {xs} {ys} 1 2 2 3\r\n {' '.join(['AFLW/a.png', xs, ys])} 2 1 2 4\r\n".encode()
    )
    result = read_annotations(tmp_path / "testing.txt", strict=True)
    assert result.format == "mtfl" and len(result.samples) == 2
    _assert_on_blobs(result.samples[0], points)
    assert result.samples[1].attributes == {"gender": 2, "smile": 1, "glasses": 2, "pose": 4}


def test_dlib_xml_zero_based_and_box_edges(tmp_path):
    pts = np.array([[30, 40], [60, 41], [45, 55]], dtype=float)
    write_image(tmp_path / "img.png", blob_image(pts, 100, 80))
    parts = "".join(f"<part name='{i:02d}' x='{int(x)}' y='{int(y)}'/>" for i, (x, y) in enumerate(pts))
    xml = (
        "<?xml version='1.0'?><dataset><images><image file='img.png'>"
        f"<box top='30' left='25' width='40' height='35'>{parts}</box>"
        "<box top='1' left='1' width='5' height='5' ignore='1'/></image></images></dataset>"
    )
    (tmp_path / "faces.xml").write_text(xml)
    result = read_annotations(tmp_path / "faces.xml", strict=True)
    assert result.format == "dlib_xml" and len(result.samples) == 1
    _assert_on_blobs(result.samples[0], pts)
    np.testing.assert_allclose(result.samples[0].box, [24.5, 29.5, 64.5, 64.5])


def test_udacity_csv_zero_based(tmp_path, face_image):
    _, points = face_image
    (tmp_path / "training").mkdir()
    write_image(tmp_path / "training" / "Someone_01.png", blob_image(points, 120, 100))
    header = "," + ",".join(str(i) for i in range(10))
    row = "Someone_01.png," + ",".join(f"{v}" for v in points.ravel())
    (tmp_path / "training_frames_keypoints.csv").write_text(f"{header}\n{row}\n")
    result = read_annotations(tmp_path / "training_frames_keypoints.csv", strict=True)
    assert result.format == "udacity_csv"
    _assert_on_blobs(result.samples[0], points)


def test_wflw_txt(tmp_path):
    rng = np.random.default_rng(1)
    pts = rng.uniform(10, 110, (98, 2))
    (tmp_path / "WFLW_images" / "0--Parade").mkdir(parents=True)
    write_image(tmp_path / "WFLW_images" / "0--Parade" / "x.png", np.zeros((120, 120, 3), np.uint8))
    lists = tmp_path / "WFLW_annotations" / "list_98pt_test"
    lists.mkdir(parents=True)
    fields = (
        [f"{v:.6f}" for v in pts.ravel()]
        + ["5", "6", "115", "118"]
        + ["0", "1", "0", "0", "1", "0"]
        + ["0--Parade/x.png"]
    )
    (lists / "list_98pt_test.txt").write_text(" ".join(fields) + "\n")
    result = read_annotations(lists / "list_98pt_test.txt", strict=True)
    sample = result.samples[0]
    assert result.format == "wflw" and sample.num_points == 98
    np.testing.assert_allclose(sample.points, pts, atol=1e-6)
    np.testing.assert_array_equal(sample.box, [5, 6, 115, 118])
    assert sample.attributes["expression"] == 1 and sample.attributes["occlusion"] == 1
    assert sample.image_path == tmp_path / "WFLW_images" / "0--Parade" / "x.png"


def test_aflw2000_mat_points_and_pose(tmp_path):
    rng = np.random.default_rng(2)
    pt3d = np.vstack([rng.uniform(20, 100, (2, 68)), rng.normal(size=(1, 68))])
    pose = np.array([[0.1, -0.6, 0.05, 1, 2, 3, 0.001]])  # pitch, yaw, roll (radians), t, scale
    savemat(tmp_path / "image00002.mat", {"pt3d_68": pt3d, "Pose_Para": pose})
    write_image(tmp_path / "image00002.jpg", np.zeros((120, 120, 3), np.uint8))
    result = read_annotations(tmp_path, strict=True)
    assert result.format == "aflw2000"
    sample = result.samples[0]
    np.testing.assert_allclose(sample.points, pt3d[:2].T)
    np.testing.assert_allclose(sample.pose, np.degrees([-0.6, 0.1, 0.05]))  # yaw, pitch, roll


def test_format_can_be_forced_and_unknown_formats_are_named(tmp_path, face_image):
    _, points = face_image
    (tmp_path / "face.txt").write_text(_pts_text(points + 1))
    assert read_annotations(tmp_path / "face.txt", format="pts", strict=True).samples[0].num_points == 5
    with pytest.raises(DataError, match="cannot tell the annotation format"):
        detect_format(tmp_path / "face.txt")
    with pytest.raises(DataError, match="unknown annotation format 'coco'"):
        read_annotations(tmp_path / "face.txt", format="coco")
