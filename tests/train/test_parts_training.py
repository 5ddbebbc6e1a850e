"""Facial part segmentation with the hourglass (configs/parts): trains and scores on generated faces."""

import json
from pathlib import Path

import pytest

from conftest import write_pts_set

torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")

from bitface.train.errors import RecipeError  # noqa: E402
from bitface.train.recipe import load_recipe  # noqa: E402
from bitface.train.trainer import Trainer, score_parts  # noqa: E402

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "parts"


def test_the_parts_recipe_trains_and_reports_pixel_accuracy_and_mean_iu(tmp_path, monkeypatch):
    monkeypatch.setenv("BITFACE_CACHE", str(tmp_path / "cache"))
    data = str(write_pts_set(tmp_path / "faces"))
    overrides = {"data.train": data, "data.val": data, "train.epochs": 2, "train.batch_size": 4}
    overrides |= {"model.options.features": 16, "model.options.depth": 2, "train.lr": 3e-3}
    recipe = load_recipe(RECIPES / "hpm48_xnor.yaml", overrides)
    assert recipe.target.output == "parts" and recipe.model.options["num_points"] == 7
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    trainer.fit()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    val = log[-1]["val"]
    assert val["faces"] == 12 and 0 <= val["mean_iu"] <= val["mean_accuracy"] <= 100
    # the faces are painted by part: two short epochs already find most of the pixels
    assert val["pixel_accuracy"] > 60 and log[-1]["loss"] < log[0]["loss"]
    assert score_parts(trainer.network, trainer.val_set)["mean_iu"] == pytest.approx(val["mean_iu"])


def test_parts_need_cross_entropy_and_68_points(tmp_path):
    with pytest.raises(RecipeError, match="cross_entropy and target.output: parts go together"):
        load_recipe(RECIPES / "base.yaml", {"train.loss": "l2"})
    with pytest.raises(RecipeError, match="68 iBUG points"):
        load_recipe(RECIPES / "base.yaml", {"data.scheme": "5pt"})
