import pytest
import yaml

from bitface.train.errors import RecipeError
from bitface.train.recipe import load_recipe, recipe_from_dict

BASE = {
    "name": "r",
    "model": {"name": "regression", "options": {"structure": "20-40-60-80", "method": "acn"}},
    "data": {"train": "train.txt"},
    "crop": {"size": 39},
}


def write(tmp_path, data, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_minimal_recipe_gets_typed_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE))
    assert recipe.train.lr == 1e-3 and recipe.train.optimizer == "adam" and recipe.crop.size == 39
    assert recipe.data.train == str(tmp_path / "train.txt")  # relative to the recipe file
    assert recipe_from_dict(recipe.to_dict()) == recipe  # round trip


def test_a_base_recipe_is_merged_and_overrides_apply(tmp_path):
    write(tmp_path, {**BASE, "train": {"epochs": 7, "lr": 0.01}}, "base.yaml")
    child = write(tmp_path, {"base": "base.yaml", "model": {"options": {"method": "xnor"}}, "train": {"lr": 0.02}})
    recipe = load_recipe(child, {"train.batch_size": 32})
    assert recipe.model.options == {"structure": "20-40-60-80", "method": "xnor"}
    assert (recipe.train.epochs, recipe.train.lr, recipe.train.batch_size) == (7, 0.02, 32)


def test_yaml_exponents_without_a_dot_are_read_as_numbers(tmp_path):
    recipe = load_recipe(write(tmp_path, {**BASE, "train": {"lr": "1e-4"}}))
    assert recipe.train.lr == 1e-4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train": {"lrr": 0.1}}, "train.lrr: unknown key"),
        ({"colour": 1}, "colour: unknown key"),
        ({"train": {"lr": -0.001}}, "train: lr: must be > 0, got -0.001"),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected an integer, got 'ten'"),
        ({"train": {"epochs": 2.5}}, "train.epochs: expected an integer"),
        ({"train": {"loss": "l3"}}, "train: loss: must be one of"),
        ({"augment": {"scale": [1.1]}}, "augment.scale: expected 2 values"),
        ({"augment": {"flip": 2}}, "augment: augmentation values out of range: flip=2"),
        ({"crop": {"size": 39, "source": "nose"}}, "crop: crop source must be 'box' or 'points'"),
        ({"data": {"train": "t.txt", "normalizer": "ears"}}, "data: normalizer must be one of"),
        ({"crop": None}, "crop: expected a mapping"),
        ({"train": {"loss": "bce"}}, "train.loss: bce .sigmoid cross-entropy. needs target.output: heatmap"),
        ({"train": {"optimizer": "lbfgs"}}, "train: optimizer: must be one of adam, sgd, rmsprop"),
        ({"target": {"output": "heatmap", "decode_smooth": -1}}, "target: decode_smooth must be in"),
    ],
)
def test_bad_recipes_fail_naming_the_key(tmp_path, change, message):
    with pytest.raises(RecipeError, match=message.replace("[", r"\[")) as info:
        load_recipe(write(tmp_path, {**BASE, **change}))
    assert str(tmp_path / "r.yaml") in str(info.value)


def test_a_missing_required_key_is_named(tmp_path):
    data = {k: v for k, v in BASE.items() if k != "crop"}
    with pytest.raises(RecipeError, match="crop: required key is missing"):
        load_recipe(write(tmp_path, data))


def test_a_structure_the_model_cannot_build_is_named(tmp_path):
    data = {**BASE, "model": {"name": "regression", "options": {"structure": "1-2-3", "method": "acn"}}}
    recipe = load_recipe(write(tmp_path, data))
    with pytest.raises(RecipeError, match="model.options: unknown structure '1-2-3'"):
        recipe.build_model()
    data["model"] = {"name": "regression", "options": {"depth": 3}}
    with pytest.raises(RecipeError, match="model.options: .*depth"):
        load_recipe(write(tmp_path, data)).build_model()
    data["model"] = {"name": "resnet"}
    with pytest.raises(RecipeError, match="model.name: unknown model 'resnet'"):
        load_recipe(write(tmp_path, data)).build_model()


def test_recipe_files_errors(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    write(tmp_path, {"base": "b.yaml"}, "a.yaml")
    write(tmp_path, {"base": "a.yaml"}, "b.yaml")
    with pytest.raises(RecipeError, match="loop"):
        load_recipe(tmp_path / "a.yaml")


def test_every_committed_recipe_loads_and_builds():
    from pathlib import Path

    pytest.importorskip("torch")
    configs = Path(__file__).resolve().parents[2] / "configs"
    recipes = [p for p in configs.rglob("*.yaml") if p.name != "base.yaml"]
    assert recipes
    for path in recipes:
        load_recipe(path).build_model()


def test_heatmap_decoding_smooths_with_the_targets_sigma_unless_told(tmp_path):
    heatmap = {"output": "heatmap", "sigma": 2.0}
    assert load_recipe(write(tmp_path, {**BASE, "target": heatmap})).target.smooth == 2.0
    assert load_recipe(write(tmp_path, {**BASE, "target": {**heatmap, "decode_smooth": 0}})).target.smooth == 0
    assert load_recipe(write(tmp_path, {**BASE, "target": {**heatmap, "decode_smooth": 1.0}})).target.smooth == 1.0
    assert load_recipe(write(tmp_path, BASE)).target.smooth == 0  # coordinates: nothing to smooth
