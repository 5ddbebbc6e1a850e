import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")

from bitface.cli import main  # noqa: E402
from bitface.data.heatmaps import decode_argmax, sigmoid  # noqa: E402
from bitface.models.model_file import load_model  # noqa: E402
from bitface.train.errors import RecipeError, TrainingDiverged  # noqa: E402
from bitface.train.recipe import load_recipe  # noqa: E402
from bitface.train.trainer import Trainer, rate_factor  # noqa: E402


def test_training_writes_a_model_a_log_and_resumes_exactly(tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe)
    straight = Trainer(recipe, tmp_path / "straight", progress=False)
    straight.fit()
    log = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2]
    assert all(np.isfinite(row["loss"]) and row["val"]["faces"] == 16 for row in log)
    ran_on = {"git_revision", "cpu", "torch", "threads"}  # each epoch says what trained it
    assert all(ran_on <= row.keys() and row["threads"] == recipe.train.threads for row in log)
    assert log[0]["torch"] == torch.__version__ and log[0]["git_revision"]

    stopped = Trainer(recipe, tmp_path / "resumed", progress=False)
    stopped.fit(until_epoch=1)
    assert stopped.epoch == 1
    resumed = Trainer(recipe, tmp_path / "resumed", progress=False)
    resumed.fit(resume=True)
    for name, value in straight.network.state_dict().items():
        assert torch.equal(value, resumed.network.state_dict()[name]), name
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]


def test_val_every_validates_every_nth_epoch_and_the_last(tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe, {"train.epochs": 5, "train.val_every": 2})
    history = Trainer(recipe, tmp_path / "run", progress=False).fit()
    assert [row["val"] is not None for row in history] == [False, True, False, True, True]


def test_a_saved_model_predicts_what_the_network_predicts(tiny_recipe, tmp_path):
    trainer = Trainer(load_recipe(tiny_recipe), tmp_path / "run", progress=False)
    trainer.fit()
    model = load_model(tmp_path / "run" / "model.safetensors")
    assert model.info["epoch"] == 2 and model.scheme.name == "5pt"
    crops = np.random.default_rng(0).integers(0, 255, (3, 39, 39), dtype=np.uint8)
    trainer.network.eval()
    with torch.no_grad():
        expected = trainer.network(torch.from_numpy(model.input.normalize(crops))).numpy()
    np.testing.assert_allclose(model.predict_crops(crops), model.space.to_crop(expected), atol=1e-5)
    assert model.fallback_crop is not None and model.fallback_crop.source == "points"


def test_a_run_folder_is_not_overwritten_without_resume(tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe, {"train.epochs": 1})
    Trainer(recipe, tmp_path / "run", progress=False).fit()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(recipe, tmp_path / "run", progress=False).fit()
    changed = load_recipe(tiny_recipe, {"train.epochs": 1, "train.lr": 0.5})
    with pytest.raises(ValueError, match="different recipe"):
        Trainer(changed, tmp_path / "run", progress=False).fit(resume=True)


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_the_last_good_model(tiny_recipe, tmp_path):
    trainer = Trainer(load_recipe(tiny_recipe, {"train.epochs": 3}), tmp_path / "run", progress=False)
    trainer.fit(until_epoch=1)
    good = (tmp_path / "run" / "model.safetensors").read_bytes()
    poison = trainer.network.fc2.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, batch 1; the last good checkpoint \(1 epochs\)"):
        trainer.fit(resume=True)
    poison.remove()
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == good


def test_cosine_schedule_warms_up_then_decays_to_zero(tiny_recipe):
    spec = load_recipe(tiny_recipe, {"train.epochs": 10, "train.warmup_epochs": 1}).train
    factors = [rate_factor(spec, step, 10) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert max(factors) == pytest.approx(1.0) and factors[-1] < 0.01
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))


def test_cli_train_and_eval(tiny_recipe, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_recipe), "--out", str(run), "--quiet", "--set", "train.epochs=1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 1
    data = tmp_path / "data" / "list.txt"
    report = tmp_path / "eval.json"
    code = main(["eval", str(run / "model.safetensors"), str(data), "--normalize", "box_width", "--json", str(report)])
    assert code == 0
    result = json.loads(report.read_text())
    assert result["normalizer"] == "box_width" and result["faces"] == 16 and result["skipped"] == 0
    assert result["nme"] > 0 and set(result["auc"]) == {"0.06"} and set(result["fr"]) == {"0.06"}
    assert result["crop"] == "annotated face boxes"


def test_cli_train_rejects_bad_recipes_and_empty_data_before_training(tiny_recipe, tmp_path, capsys):
    assert main(["train", str(tiny_recipe), "--out", str(tmp_path / "a"), "--set", "train.lr=-1"]) == 1
    assert "train: lr: must be > 0, got -1.0" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("nothing.png 1 2 3\r\nalso_bad\r\n")
    assert (
        main(
            [
                "train",
                str(tiny_recipe),
                "--out",
                str(tmp_path / "b"),
                "--set",
                f"data.train={empty}",
                "--set",
                "data.format=cuhk",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "no usable faces (2 skipped)" in err and "expected 15 fields" in err
    assert not (tmp_path / "b").exists()


def test_a_heatmap_hourglass_trains_from_two_sources_and_decodes_its_logits(tiny_recipe, tmp_path):
    import yaml

    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe["data"]["train"] = [recipe["data"]["train"], recipe["data"]["train"]]  # two sources, joined
    recipe["model"] = {
        "name": "hourglass",
        "options": {
            "num_points": 5,
            "block": "hpm",
            "binarization": "xnor",
            "features": 16,
            "depth": 1,
            "input_size": 32,
        },  # fmt: skip
    }
    recipe["crop"] = {"size": 32, "source": "box", "margin": 0.1}
    recipe["target"] = {"output": "heatmap", "stride": 4, "sigma": 1.0}
    recipe["train"].update(epochs=1, loss="bce", optimizer="rmsprop")
    path = tmp_path / "hourglass.yaml"
    path.write_text(yaml.safe_dump(recipe))
    trainer = Trainer(load_recipe(path), tmp_path / "run", progress=False)
    assert len(trainer.train_set) == 32
    trainer.fit()
    model = load_model(tmp_path / "run" / "model.safetensors")
    assert (model.output, model.heatmap_stride, model.heatmap_activation) == ("heatmap", 4, "sigmoid")
    assert model.heatmap_smooth == 1.0  # decoding smooths with the targets' sigma
    crops = np.random.default_rng(0).integers(0, 255, (2, 32, 32), dtype=np.uint8)
    with torch.no_grad():
        logits = trainer.network.eval()(torch.from_numpy(model.input.normalize(crops))).numpy()
    expected = model.space.to_crop(decode_argmax(logits, activation=sigmoid, smooth=1.0).points)
    np.testing.assert_allclose(model.predict_crops(crops), expected, atol=1e-4)  # two torch runs: float noise


def test_train_init_starts_a_binary_twin_from_a_real_model_and_refuses_another_architecture(tiny_recipe, tmp_path):
    import yaml

    real = load_recipe(tiny_recipe, {"model.options.method": "cnn", "train.epochs": 1})
    Trainer(real, tmp_path / "real", progress=False).fit()
    source = load_model(tmp_path / "real" / "model.safetensors").network.state_dict()

    recipe = yaml.safe_load(tiny_recipe.read_text())  # the tiny recipe is an ACN twin of the same structure
    recipe["train"]["init"] = "real/model.safetensors"  # relative to the recipe file
    (tmp_path / "twin.yaml").write_text(yaml.safe_dump(recipe))
    twin = Trainer(load_recipe(tmp_path / "twin.yaml"), tmp_path / "twin", progress=False)
    fresh = {k: v.clone() for k, v in twin.network.state_dict().items()}
    twin.fit(until_epoch=0)  # loads the init, trains nothing
    loaded = twin.network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.items())
    kept = sorted(set(loaded) - set(source))
    assert kept and all(k.endswith(".kernel_quantizer.amplitude") for k in kept)
    for key in kept:  # the amplitude matrices start at the loaded kernels' mean |X|, not the random ones'
        weight = source[key.removesuffix("kernel_quantizer.amplitude") + "weight"]
        torch.testing.assert_close(loaded[key], torch.full_like(loaded[key], float(weight.abs().mean())))
        assert not torch.allclose(loaded[key], fresh[key])

    recipe["model"]["options"]["structure"] = "20-40-60-80"
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=r"train.init: .*model.safetensors: .* is \("):
        Trainer(load_recipe(tmp_path / "other.yaml"), tmp_path / "other", progress=False).fit(until_epoch=0)


def test_distillation_mixes_the_task_loss_with_the_loss_against_the_teachers_output(tiny_recipe, tmp_path):
    import yaml

    from bitface.data.dataset import make_loader
    from bitface.train.trainer import task_loss

    teacher_recipe = load_recipe(tiny_recipe, {"model.options.method": "cnn", "train.epochs": 1})
    Trainer(teacher_recipe, tmp_path / "teacher", progress=False).fit()
    teacher = load_model(tmp_path / "teacher" / "model.safetensors").network.eval()

    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe["train"].update(teacher="teacher/model.safetensors", distill=0.25, epochs=1)  # relative to the recipe
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(recipe))
    student = Trainer(load_recipe(tmp_path / "student.yaml"), tmp_path / "student", progress=False)
    batch = next(iter(make_loader(student.train_set, 8, shuffle=False)))
    prediction = student.network(batch["image"])
    with torch.no_grad():
        soft = teacher(batch["image"])
    expected = 0.75 * task_loss(student.loss, prediction, batch["target"]) + 0.25 * task_loss(
        student.loss, prediction, soft
    )
    torch.testing.assert_close(student.objective(prediction, batch), expected)
    assert not any(p.requires_grad for p in student.teacher.network.parameters())
    student.fit()  # trains, and the teacher stays in eval mode throughout
    assert not student.teacher.network.training and np.isfinite(student.history[0]["loss"])

    recipe["crop"]["size"] = 40
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=r"train.teacher: .*model.safetensors: its crop is"):
        Trainer(load_recipe(tmp_path / "other.yaml"), tmp_path / "other", progress=False)


def test_a_heatmap_teacher_gives_probabilities_through_its_own_activation(tiny_recipe, tmp_path):
    from bitface.train.trainer import Teacher

    hourglass = {"num_points": 5, "block": "hpm", "binarization": "real", "features": 8, "depth": 1, "input_size": 32}
    heatmaps = {"target.output": "heatmap", "crop.size": 32, "train.loss": "bce", "train.epochs": 1}
    recipe = load_recipe(tiny_recipe, heatmaps | {"model.name": "hourglass", "model.options": hourglass})
    Trainer(recipe, tmp_path / "run", progress=False).fit()
    teacher = Teacher(tmp_path / "run" / "model.safetensors", recipe)
    images = torch.randn(2, 1, 32, 32)
    expected = torch.sigmoid(load_model(tmp_path / "run" / "model.safetensors").network.eval()(images))
    torch.testing.assert_close(teacher(images), expected)


def test_a_flipped_teacher_averages_each_image_with_its_mirror_and_so_mirrors_with_its_input(tiny_recipe, tmp_path):
    from bitface.train.trainer import Teacher

    hourglass = {"num_points": 5, "block": "hpm", "binarization": "real", "features": 8, "depth": 1, "input_size": 32}
    heatmaps = {"target.output": "heatmap", "crop.size": 32, "train.loss": "bce", "train.epochs": 1}
    recipe = load_recipe(tiny_recipe, heatmaps | {"model.name": "hourglass", "model.options": hourglass})
    Trainer(recipe, tmp_path / "run", progress=False).fit()
    path = tmp_path / "run" / "model.safetensors"
    flipped = load_recipe(tiny_recipe, heatmaps | {"model.name": "hourglass", "model.options": hourglass} | {
        "train.teacher": str(path), "train.teacher_flip": True})  # fmt: skip
    plain, teacher = Teacher(path, recipe), Teacher(path, flipped)
    images = torch.randn(2, 1, 32, 32)
    network = load_model(path).network.eval()
    with torch.no_grad():
        logits, mirrored = network(images), network(images.flip(-1))
    pairs = [1, 0, 2, 4, 3]  # the 5-point scheme: eyes and mouth corners swap sides
    expected = torch.sigmoid((logits + mirrored[:, pairs].flip(-1)) / 2)
    torch.testing.assert_close(teacher(images), expected)
    torch.testing.assert_close(teacher(images.flip(-1)), teacher(images)[:, pairs].flip(-1))
    assert not torch.allclose(plain(images.flip(-1)), plain(images)[:, pairs].flip(-1), atol=1e-4)

    with pytest.raises(ValueError, match="teacher_flip: needs a teacher"):
        load_recipe(tiny_recipe, {"train.teacher_flip": True})
    with pytest.raises(ValueError, match="train.teacher_flip: expected true or false, got 'yes'"):
        load_recipe(tiny_recipe, {"train.teacher": str(path), "train.teacher_flip": "yes"})


def test_a_heatmap_teacher_at_another_crop_size_sees_resized_images_and_gives_the_students_map_size(
    tiny_recipe, tmp_path
):
    from bitface.train.trainer import Teacher

    hourglass = {"num_points": 5, "block": "hpm", "binarization": "real", "features": 8, "depth": 1, "input_size": 32}
    heatmaps = {"target.output": "heatmap", "crop.size": 32, "train.loss": "bce", "train.epochs": 1}
    recipe = load_recipe(tiny_recipe, heatmaps | {"model.name": "hourglass", "model.options": hourglass})
    Trainer(recipe, tmp_path / "run", progress=False).fit()
    student = load_recipe(
        tiny_recipe,
        heatmaps | {"model.name": "hourglass", "model.options": hourglass | {"input_size": 24}, "crop.size": 24},
    )
    teacher = Teacher(tmp_path / "run" / "model.safetensors", student)
    images = torch.randn(2, 1, 24, 24)
    network = load_model(tmp_path / "run" / "model.safetensors").network.eval()
    upsized = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear")
    expected = torch.nn.functional.interpolate(
        torch.sigmoid(network(upsized)), size=(6, 6), mode="bilinear", antialias=True
    )
    soft = teacher(images)
    assert soft.shape == (2, 5, 6, 6)
    torch.testing.assert_close(soft, expected.clamp(0, 1))

    other = load_recipe(
        tiny_recipe, heatmaps | {"model.name": "hourglass", "model.options": hourglass, "crop.margin": 0.3}
    )
    with pytest.raises(RecipeError, match=r"train.teacher: .*its crop is"):
        Teacher(tmp_path / "run" / "model.safetensors", other)


def test_ema_saves_and_validates_the_moving_average_of_the_weights_and_resumes_it(tiny_recipe, tmp_path):
    decay = 0.9
    recipe = load_recipe(tiny_recipe, {"train.ema": decay})
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    seen = []  # one weight after every optimizer step: the average's inputs
    step = trainer.optimizer.step

    def recorded_step(*args, **kwargs):
        result = step(*args, **kwargs)
        seen.append(trainer.network.fc2.weight.detach().clone())
        return result

    trainer.optimizer.step = recorded_step
    history = trainer.fit()
    expected = seen[0]
    for weight in seen[1:]:
        expected = decay * expected + (1 - decay) * weight
    averaged = trainer.averaged.module.state_dict()
    torch.testing.assert_close(averaged["fc2.weight"], expected)
    assert not torch.equal(averaged["fc2.weight"], trainer.network.fc2.weight)
    saved = load_model(tmp_path / "run" / "model.safetensors").network.state_dict()
    for name, value in averaged.items():  # the file holds the average, not the live weights
        assert torch.equal(value, saved[name]), name
    assert all(row["val"]["nme"] != row["val_live"]["nme"] for row in history)

    stopped = Trainer(recipe, tmp_path / "resumed", progress=False)
    stopped.fit(until_epoch=1)
    resumed = Trainer(recipe, tmp_path / "resumed", progress=False)
    resumed.fit(resume=True)
    for name, value in resumed.averaged.module.state_dict().items():
        assert torch.equal(value, averaged[name]), name


def test_ema_outside_0_1_is_refused(tiny_recipe):
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="ema: must be in"):
            load_recipe(tiny_recipe, {"train.ema": bad})
