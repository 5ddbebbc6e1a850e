import json

import numpy as np
import pytest

from bitface.evaluate import PairedDifference, auc, ced, evaluate, failure_rate, paired_difference, yaw_bins
from bitface.evaluate.report import line_style, plot_ced
from bitface.schemes import FIVE, IBUG68


def _hand_case():
    gt = np.zeros((2, 5, 2))
    gt[:, :, 0] = np.arange(5) * 10.0
    pred = gt.copy()
    pred[0, :, 0] += [1, 2, 3, 4, 0]  # mean 2 px on a 100 px box -> 0.02
    pred[1, :, 1] += 5  # mean 5 px on a 50 px box -> 0.10
    boxes = np.array([[0, 0, 100, 100], [0, 0, 50, 50]])
    return pred, gt, boxes


def test_report_reproduces_hand_computed_nme_auc_and_failure_rate():
    pred, gt, boxes = _hand_case()
    report = evaluate(pred, gt, FIVE, "box_width", boxes=boxes, name="hand")
    assert report.nme == pytest.approx(6.0, abs=1e-12)  # (2% + 10%) / 2
    assert report.fr == {"0.06": 0.5}  # one face of two above 6%
    assert report.auc["0.06"] == pytest.approx((0.06 - 0.02) / 2 / 0.06, abs=1e-12)  # 1/3
    np.testing.assert_allclose(report.per_point, [5.5, 6.0, 6.5, 7.0, 5.0])
    assert report.box_source == "annotation"
    assert evaluate(pred, gt, FIVE, "box_width").box_source == "points"


def test_exact_auc_matches_the_integral_of_the_ced_curve():
    errors = np.random.default_rng(0).uniform(0, 0.15, 500)
    x, y = ced(errors, 0.08, steps=200001)
    assert auc(errors, 0.08) == pytest.approx(np.trapezoid(y, x) / 0.08, abs=1e-5)
    assert failure_rate(errors, 0.08) == pytest.approx(1 - y[-1])


def test_yaw_bins_split_by_absolute_yaw():
    rows = yaw_bins(np.array([0.1, 0.2, 0.3, 0.4]), np.array([-10, 45, -89, 90]))
    assert [r["faces"] for r in rows] == [1, 1, 2]
    assert rows[2]["nme"] == pytest.approx(0.35)


def test_report_files(tmp_path):
    rng = np.random.default_rng(1)
    gt = rng.uniform(0, 100, (20, 68, 2))
    pred = gt + rng.normal(0, 1, gt.shape)
    report = evaluate(pred, gt, IBUG68, yaw=rng.uniform(-90, 90, 20), name="synthetic")
    paths = report.save(tmp_path / "report")
    data = json.loads(paths[0].read_text())
    assert data["normalizer"] == "interocular" and set(data["fr"]) == {"0.08", "0.1"}
    assert len(data["per_point_nme"]) == 68 and len(data["yaw_bins"]) == 3
    assert "| synthetic | 20 | interocular |" in paths[1].read_text()
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_predictions_are_refused():
    pred, gt, _ = _hand_case()
    with pytest.raises(ValueError, match="must both be"):
        evaluate(pred[:, :4], gt, FIVE, "interpupil")
    pred[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="face 1 is not finite"):
        evaluate(pred, gt, FIVE, "interpupil")


def test_pckh_counts_annotated_joints_within_half_the_head_segment():
    from bitface.schemes import MPII16

    gt = np.zeros((2, 16, 2))
    gt[:, :, 0] = np.arange(16) * 10.0
    heads = np.array([[0, 0, 30, 40], [0, 0, 60, 80]])  # diagonals 50 and 100 -> head segments 30 and 60 px
    pred = gt.copy()
    pred[0, :, 1] += 14.9  # 0.497 of 30 px: every joint found
    pred[1, :, 1] += 31.0  # 0.517 of 60 px: every joint missed ...
    pred[1, :4, 1] -= 2.0  # ... except four at 29 px (0.483)
    gt[1, 4:6] = np.nan  # two joints nobody annotated: neither hits nor misses
    report = evaluate(pred, gt, MPII16, "head", boxes=heads)
    assert report.extra["pckh"]["total"] == pytest.approx(100 * (16 + 4) / 30)
    per_joint = report.extra["pckh"]["per_joint"]
    assert per_joint["right_ankle"] == 100 and per_joint["left_knee"] == 100 and per_joint["pelvis"] == 50
    assert report.per_face == pytest.approx([14.9 / 30, (4 * 29 + 10 * 31) / 14 / 60])
    assert report.box_source == "head"
    assert "PCKh@0.5: 66.67%" in report.markdown()
    with pytest.raises(ValueError, match="needs the head boxes"):
        evaluate(pred, gt, MPII16, "head")


def test_a_scheme_without_eyes_has_no_interpupil_distance():
    from bitface.schemes import MPII16

    with pytest.raises(ValueError, match="has no eyes"):
        evaluate(np.zeros((1, 16, 2)), np.ones((1, 16, 2)), MPII16, "interpupil")


def test_paired_difference_brackets_a_known_shift_and_tells_which_way_it_points():
    rng = np.random.default_rng(1)
    b = rng.gamma(2.0, 0.02, 330)  # per-face errors of a model
    a = b + 0.004 + rng.normal(0, 0.01, 330)  # a worse one: its errors 0.004 higher on average
    diff = paired_difference(a, b)
    assert diff.low < 0.004 < diff.high and diff.low > 0  # the pairing removes the faces' spread
    assert diff.mean == pytest.approx((a - b).mean())
    assert diff.verdict(+1) == "agrees" and diff.verdict(-1) == "opposite"
    assert paired_difference(a, b) == diff  # seeded: the same interval every run
    unpaired = paired_difference(a, rng.permutation(b))  # the same errors, faces mismatched: blurred
    assert unpaired.high - unpaired.low > 2 * (diff.high - diff.low)
    noise = paired_difference(b + rng.normal(0, 0.01, 330), b)
    assert noise.verdict(+1) == noise.verdict(-1) == "no clear difference"


def test_paired_difference_of_a_constant_shift_is_exact_and_bad_input_is_refused():
    b = np.linspace(0.01, 0.1, 10)
    assert paired_difference(b + 0.5, b) == PairedDifference(0.5, 0.5, 0.5, 0.95, 10)
    with pytest.raises(ValueError, match=r"same faces, got \(10,\) and \(9,\)"):
        paired_difference(b, b[:9])
    with pytest.raises(ValueError, match="finite"):
        paired_difference(np.r_[b[:9], np.nan], b)
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(b, b + 1, confidence=95)
    with pytest.raises(ValueError, match="expected_sign"):
        paired_difference(b + 1, b).verdict(0)


def test_ced_panels_stack_their_axes_and_curves_keep_distinct_styles(tmp_path):
    import matplotlib.image

    rng = np.random.default_rng(0)
    curves = {f"row{i}": rng.uniform(0, 0.1, 30) for i in range(14)}
    one = plot_ced(curves, "interocular", tmp_path / "one.png", max_error=0.1)
    panels = {"ablation": [f"row{i}" for i in range(12)], "longer runs": ["row12", "row13"]}
    two = plot_ced(curves, "interocular", tmp_path / "two.png", max_error=0.1, panels=panels)
    one_height, two_height = (matplotlib.image.imread(p).shape[0] for p in (one, two))
    assert two_height > 1.5 * one_height  # a second axes below the first
    assert len({line_style(i) for i in range(40)}) == 40 and line_style(40) == line_style(0)


@pytest.mark.parametrize(
    "panels, named",
    [
        ({"a": ["x"]}, "on no panel: ['y']"),
        ({"a": ["x", "y"], "b": ["y"]}, "on more than one: ['y']"),
        ({"a": ["x", "y", "z"]}, "with no curve: ['z']"),
    ],
)
def test_ced_panels_that_miss_or_repeat_a_curve_are_refused(tmp_path, panels, named):
    curves = {"x": np.array([0.01, 0.02]), "y": np.array([0.03, 0.04])}
    with pytest.raises(ValueError, match="plot_ced panels") as raised:
        plot_ced(curves, "interocular", tmp_path / "ced.png", panels=panels)
    assert named in str(raised.value)
