"""Conventions checked on the real data in ../shared/data (skipped where it is absent)."""

import csv

import numpy as np
import pytest

from bitface.io import read_annotations
from bitface.schemes import IBUG68, reduce_68_to_5
from conftest import shared_data

pytestmark = pytest.mark.data


def test_crop_pts_map_back_to_the_originals_with_crops_csv():
    """MANIFEST: X = (U - 0.5) / scale + x0 + 0.5 (1-based). Our 0-based u = U - 1, so the original
    0-based x = (u + 0.5) / scale + x0 - 0.5: the pixel-edge geometry of Pillow's resize."""
    folder = shared_data("300w_helen_68pt/testset")
    rows = {r["file"]: r for r in csv.DictReader(open(folder / "crops.csv"))}
    result = read_annotations(folder, strict=True)
    for sample in result.samples[:20]:
        row = rows[sample.image_path.name]
        scale, x0, y0 = float(row["scale"]), int(row["x0"]), int(row["y0"])
        original = (sample.points + 0.5) / scale + np.array([x0, y0]) - 0.5
        back = (original - np.array([x0, y0]) + 0.5) * scale - 0.5
        np.testing.assert_allclose(back, sample.points, atol=1e-9)
        # every point inside the crop: [0.5, out_side + 0.5] 1-based -> [-0.5, out_side - 0.5]
        assert sample.points.min() >= -0.5 and sample.points.max() <= int(row["out_side"]) - 0.5


def test_cuhk_and_mtfl_agree_on_the_five_point_order():
    cuhk = read_annotations(shared_data("cuhk_lfw_net_5pt/testImageList.txt"), check="none").samples
    mtfl = read_annotations(shared_data("mtfl_aflw_5pt/testing.txt"), check="none").samples
    for samples in (cuhk, mtfl):
        pts = np.stack([s.points for s in samples])
        assert np.median(pts[:, 1, 0] - pts[:, 0, 0]) > 0  # image-left eye is left of the other
        assert np.median(pts[:, 3, 1] - pts[:, 2, 1]) > 0  # mouth below the nose
        assert np.median(pts[:, 4, 0] - pts[:, 3, 0]) > 0


def test_68_point_sets_reduce_to_a_plausible_5_point_face():
    samples = read_annotations(shared_data("300w_helen_68pt/trainset"), check="none").samples
    five = reduce_68_to_5(np.stack([s.points for s in samples]))
    assert (five[:, 1, 0] > five[:, 0, 0]).mean() > 0.95 and (five[:, 3, 1] > five[:, 2, 1]).mean() > 0.95
    assert IBUG68.num_points == samples[0].num_points
