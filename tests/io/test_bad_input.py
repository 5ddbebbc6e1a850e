"""Bad input: a clear error naming the file (and line), lenient skipping with reasons, never a
silent wrong coordinate."""

import numpy as np
import pytest

from bitface.io import DataError, load_image, read_annotations
from conftest import FACE5, blob_image, write_image

GOOD = " ".join(f"{v:.2f}" for v in FACE5.ravel())


@pytest.fixture
def cuhk(tmp_path):
    """Writes a CUHK list (lines given without image names) beside good and bad images."""
    write_image(tmp_path / "good.png", blob_image(FACE5, 120, 100))
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image at all" * 10)
    (tmp_path / "empty.jpg").write_bytes(b"")
    write_image(tmp_path / "full.jpg", blob_image(FACE5, 120, 100))
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])

    def make(*lines):
        path = tmp_path / "list.txt"
        path.write_bytes("".join(line + "\r\n" for line in lines).encode())
        return path

    return make


@pytest.mark.parametrize(
    "line, check, message",
    [
        (f"garbage.jpg 20 100 15 95 {GOOD}", "header", "garbage.jpg: not a readable image"),
        (f"garbage.jpg 20 100 15 95 {GOOD}", "decode", "garbage.jpg: not a decodable image"),
        (f"truncated.jpg 20 100 15 95 {GOOD}", "decode", "truncated.jpg: truncated JPEG"),
        (f"empty.jpg 20 100 15 95 {GOOD}", "exists", r"empty.jpg is empty \(0 bytes\)"),
        (f"missing.jpg 20 100 15 95 {GOOD}", "exists", "missing.jpg not found"),
        (f"good.png 20 100 15 95 {GOOD} 1.0", "none", "list.txt:2: expected 15 fields"),
        (f"good.png 20 100 15 95 {GOOD.replace('40.50', 'nan')}", "none", "list.txt:2: point 0 is not finite"),
        (f"good.png 20 100 15 95 {GOOD.replace('40.50', 'inf')}", "none", "list.txt:2: point 0 is not finite"),
        (f"good.png 20 100 15 95 {GOOD.replace('40.50', 'abc')}", "none", "list.txt:2: could not convert"),
        (f"good.png 100 20 15 95 {GOOD}", "none", "list.txt:2: empty face box"),
        (
            f"good.png 20 100 15 95 {GOOD.replace('38.25', '900')}",
            "header",
            "point 0 .* is far outside the 120x100 image",
        ),
    ],
)
def test_each_bad_sample_is_named_in_strict_mode_and_skipped_in_lenient_mode(cuhk, line, check, message):
    path = cuhk(f"good.png 20 100 15 95 {GOOD}", line)
    with pytest.raises(DataError, match=message):
        read_annotations(path, strict=True, check=check)
    result = read_annotations(path, strict=False, check=check)
    assert len(result.samples) == 1 and result.skipped == 1
    assert result.samples[0].image_path.name == "good.png"
    assert len(result.errors) == 1 and "list.txt:2" in result.errors[0]


def test_all_bad_or_empty_sources_stop_with_counts(cuhk, tmp_path):
    path = cuhk(f"missing.jpg 20 100 15 95 {GOOD}", f"missing2.jpg 20 100 15 95 {GOOD}")
    with pytest.raises(DataError, match=r"no usable faces \(2 skipped\); first error: .*missing.jpg not found"):
        read_annotations(path)
    (tmp_path / "blank.txt").write_text("")
    with pytest.raises(DataError, match="blank.txt: empty file"):
        read_annotations(tmp_path / "blank.txt")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="empty_dir: folder holds no"):
        read_annotations(tmp_path / "empty_dir")
    with pytest.raises(DataError, match="nowhere: no such file or folder"):
        read_annotations(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "text, message",
    [
        ("version: 1\nn_points: 68\n{\n1 2\n3 4\n}\n", "expected 68 points, found 2"),
        ("version: 1\nn_points: 2\n{\n1 2\n3 4\n", "truncated"),
        ("1 2\n3 4 5\n", ":2: expected 'x y'"),
        ("1 2\nnan 4\n", "point 1 is not finite"),
        ("version: 1\nn_points: 1\n{\n1 2\n}\n7 8\n", ":6: text after the closing brace"),
    ],
)
def test_bad_pts_files(tmp_path, text, message):
    write_image(tmp_path / "a.png", np.zeros((10, 10), np.uint8))
    (tmp_path / "a.pts").write_text(text)
    with pytest.raises(DataError, match=message):
        read_annotations(tmp_path / "a.pts", strict=True)


def test_pts_without_an_image_and_bad_ljson(tmp_path):
    (tmp_path / "lonely.pts").write_text("1 2\n3 4\n")
    with pytest.raises(DataError, match="lonely.pts: no image file beside it"):
        read_annotations(tmp_path / "lonely.pts", strict=True)
    write_image(tmp_path / "b.png", np.zeros((10, 10), np.uint8))
    (tmp_path / "b.ljson").write_text('{"version": 3, "groups": {}}')
    with pytest.raises(DataError, match="b.ljson"):
        read_annotations(tmp_path / "b.ljson", strict=True)
    (tmp_path / "b.ljson").write_text('{"version": 2, "landmarks": {"points": [[1, 2], null]}}')
    with pytest.raises(DataError, match="null"):
        read_annotations(tmp_path / "b.ljson", strict=True)


def test_bad_xml_csv_and_mat(tmp_path):
    (tmp_path / "a.xml").write_text("<dataset><images><image")
    with pytest.raises(DataError, match="a.xml: not well-formed XML"):
        read_annotations(tmp_path / "a.xml")
    (tmp_path / "b.csv").write_text(",0,1,2,3\nx.png,1,2,3\n")
    with pytest.raises(DataError, match="b.csv:2: 4 columns, the header has 5"):
        read_annotations(tmp_path / "b.csv", strict=True)
    (tmp_path / "c.mat").write_bytes(b"MATLAB 5.0 MAT-file garbage")
    with pytest.raises(DataError, match="c.mat: not a readable .mat file"):
        read_annotations(tmp_path / "c.mat", strict=True)


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nope.png: image file not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "z.png").write_bytes(b"")
    with pytest.raises(DataError, match="z.png: image file is empty"):
        load_image(tmp_path / "z.png")
