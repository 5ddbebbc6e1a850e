import json
from pathlib import Path

import numpy as np
import pytest

from bitface import bundled
from bitface.bench import run_bench
from bitface.cli import main

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_bench_measures_every_bundled_model_and_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "bench"
    assert (
        main(["bench", "--data", str(DATA), "--out", str(out), "--rounds", "2", "--max-faces", "5", "--no-peers"]) == 0
    )
    result = json.loads(out.with_suffix(".json").read_text())
    names = [r["model"] for r in result["rows"]]
    assert names == [m["name"] for m in bundled.list_models()]
    assert all(r["latency_us_median"] > 0 and r["file_bytes"] > 0 for r in result["rows"])
    assert all(r["api_latency_us_median"] > 0 for r in result["rows"])
    assert out.with_suffix(".md").read_text().count("|") > 10 and (tmp_path / "bench.png").stat().st_size > 0
    if DATA.is_dir():
        assert all(r["faces"] == 5 and 0 < r["nme"] < 20 for r in result["rows"])
    else:
        assert all("not found" in r["test_set"] and r["nme"] is None for r in result["rows"])
    assert "us/image+box" in capsys.readouterr().out


def test_bench_without_data_still_times_and_says_why_accuracy_is_missing(tmp_path):
    result = run_bench(["regression5-acn1bit"], tmp_path / "nowhere", None, peers=False, rounds=1)
    [row] = result["rows"]
    assert row["nme"] is None and "test set not found" in row["test_set"] and row["latency_us_median"] > 0


def test_dlib_is_measured_as_a_peer_when_installed(tmp_path):
    pytest.importorskip("dlib", reason="dlib is an optional peer (pip install dlib-bin face_recognition_models)")
    from bitface.bench import dlib_candidate, dlib_model_file

    if dlib_model_file() is None or not dlib_model_file().is_file():
        pytest.skip("dlib's 68-point model file is not installed (face_recognition_models)")
    peer = dlib_candidate(DATA, 3)
    assert peer.scheme == "68pt" and peer.face is None and peer.image_face().shape == (68, 2)
    if DATA.is_dir():
        assert peer.accuracy["faces"] + peer.accuracy["missed"] == 3


def test_the_like_for_like_timing_goes_through_the_api_from_image_and_box(tmp_path):
    from bitface.bench import TIMING_BOX, bundled_candidates

    [candidate] = bundled_candidates(["regression5-acn1bit"], tmp_path / "nowhere", None)
    [face] = candidate.image_face()
    assert face.points.shape == (5, 2)
    np.testing.assert_array_equal(face.box, TIMING_BOX)  # the box given, points mapped back to the image
    x0, y0, x1, y1 = TIMING_BOX
    assert ((face.points > [x0 - 40, y0 - 40]) & (face.points < [x1 + 40, y1 + 40])).all()


def test_bad_bench_arguments_are_refused(capsys):
    assert main(["bench", "--rounds", "0"]) != 0
    assert main(["bench", "--models", "no-such-model", "--rounds", "1"]) != 0
    assert "unknown bundled model" in capsys.readouterr().err


def test_recorded_latencies_are_listed_by_bitface_models(tmp_path, monkeypatch, capsys):
    """`bitface bench --record` stores each bundled model's latency in the index (peers are left out),
    and `bitface models` lists it with where it was measured."""
    from bitface.export import bundle

    package = Path(bundled.__file__).parent
    index = bundled.index()
    for entry in index["models"].values():
        entry.pop("latency_us", None)  # as before any run
    (tmp_path / "models.json").write_text(json.dumps(index))
    for entry in bundled.index()["models"].values():
        (tmp_path / entry["file"]).symlink_to(package / entry["file"])
    monkeypatch.setattr(bundle, "PACKAGE", tmp_path)
    monkeypatch.setattr(bundled, "_folder", lambda: tmp_path)
    rows = [
        {"model": "regression5-acn1bit", "latency_us_median": 25.04, "latency_us_min": 24.2},
        {"model": "dlib-ert68 (peer)", "latency_us_median": 800.0, "latency_us_min": 700.0},
    ]
    provenance = {"cpu": "Test CPU", "kernel_path": "avx2", "date": "2026-11-22T17:00:00+00:00", "git_revision": "abc"}
    assert bundle.record_latency(rows, provenance) == ["regression5-acn1bit"]
    listed = {m["name"]: m for m in bundled.list_models()}
    assert listed["regression5-acn1bit"]["latency_us"]["median"] == 25.0
    assert "latency_us" not in listed["regression5-cnn"]
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("regression5-acn1bit "))
    assert " 25.0 " in line and "measured on Test CPU (avx2 kernels), 2026-11-22" in out
