import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra (torch)")

from bitface.models.model_file import load_model  # noqa: E402
from bitface.train.attention import attention_loss, attention_map, record_blocks, residual_blocks  # noqa: E402
from bitface.train.errors import RecipeError  # noqa: E402
from bitface.train.recipe import load_recipe  # noqa: E402
from bitface.train.trainer import Trainer  # noqa: E402

HOURGLASS = {"num_points": 5, "block": "hpm", "binarization": "real", "features": 8, "depth": 1, "input_size": 32}
HEATMAPS = {"target.output": "heatmap", "crop.size": 32, "train.loss": "bce", "train.epochs": 1}


def test_an_attention_map_is_unit_length_and_ignores_width_and_scale():
    features = torch.randn(3, 4, 5, 6)
    a = attention_map(features)
    assert a.shape == (3, 30)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(attention_map(torch.cat([features, features], 1)), a)  # twice the channels
    torch.testing.assert_close(attention_map(7 * features), a)
    expected = features.pow(2).sum(1).flatten(1)
    torch.testing.assert_close(a, expected / expected.norm(dim=1, keepdim=True))


def test_the_attention_loss_is_zero_for_the_same_maps_and_names_a_mismatched_block():
    s = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)]
    wider = [torch.cat([x, -x], 1) for x in s]  # same squared activations per channel pair
    assert attention_loss(s, wider).item() == pytest.approx(0, abs=1e-12)
    other = [torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)]
    expected = sum((attention_map(a) - attention_map(b)).pow(2).mean() for a, b in zip(s, other, strict=True))
    torch.testing.assert_close(attention_loss(s, other), expected)
    assert expected > 0
    with pytest.raises(ValueError, match=r"residual block 1 gives \(2, 4, 4, 4\) in the student and \(2, 8, 2, 2\)"):
        attention_loss(s, [other[0], torch.randn(2, 8, 2, 2)])
    with pytest.raises(ValueError, match="the student ran 2 residual blocks, the teacher 1"):
        attention_loss(s, s[:1])


def test_recording_blocks_collects_each_residual_output_and_leaves_no_hooks(tiny_recipe):
    recipe = load_recipe(tiny_recipe, HEATMAPS | {"model.name": "hourglass", "model.options": HOURGLASS})
    network = recipe.build_model().eval()
    blocks = residual_blocks(network)
    seen: list = []
    with record_blocks(network, seen):
        network(torch.randn(2, 1, 32, 32))
    assert len(seen) == len(blocks) > 3
    assert all(x.shape[0] == 2 for x in seen)
    assert not any(m._forward_hooks for m in network.modules())
    with record_blocks(network, None):  # None: nothing recorded, nothing hooked
        assert not any(m._forward_hooks for m in network.modules())


@pytest.fixture
def real_teacher(tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe, HEATMAPS | {"model.name": "hourglass", "model.options": HOURGLASS})
    Trainer(recipe, tmp_path / "teacher", progress=False).fit()
    return tmp_path / "teacher" / "model.safetensors"


def test_attention_transfer_adds_half_beta_times_the_attention_loss_to_the_distillation_loss(
    tiny_recipe, real_teacher, tmp_path
):
    from bitface.data.dataset import make_loader

    binary = HOURGLASS | {"binarization": "xnor", "features": 16}  # a wider binary student
    overrides = {"model.name": "hourglass", "model.options": binary, "train.teacher": str(real_teacher)}
    plain = Trainer(load_recipe(tiny_recipe, HEATMAPS | overrides), tmp_path / "plain", progress=False)
    student = Trainer(
        load_recipe(tiny_recipe, HEATMAPS | overrides | {"train.attention": 40.0, "train.ema": 0.9}),
        tmp_path / "student",
        progress=False,
    )
    student.network.load_state_dict(plain.network.state_dict())
    batch = next(iter(make_loader(student.train_set, 4, shuffle=False)))
    student.network.train()
    blocks: list = []
    with record_blocks(student.network, blocks):
        prediction = student.network(batch["image"])
    teacher = load_model(real_teacher).network.eval()
    teacher_blocks: list = []
    with torch.no_grad(), record_blocks(teacher, teacher_blocks):
        teacher(batch["image"])
    expected = plain.objective(prediction, batch) + 20.0 * attention_loss(blocks, teacher_blocks)
    torch.testing.assert_close(student.objective(prediction, batch, blocks), expected)
    with pytest.raises(ValueError, match="needs the student's residual-block outputs"):
        student.objective(prediction, batch)

    student.fit()  # trains; no hook outlives a step, in the network or its moving average
    assert np.isfinite(student.history[0]["loss"])
    assert not any(m._forward_hooks for m in student.network.modules())
    assert not any(m._forward_hooks for m in student.averaged.modules())
    assert not any(m._forward_hooks for m in student.teacher.network.modules())


def test_attention_transfer_refuses_no_teacher_a_negative_weight_and_unmatched_blocks(
    tiny_recipe, real_teacher, tmp_path
):
    hourglass = {"model.name": "hourglass", "model.options": HOURGLASS}
    with pytest.raises(ValueError, match="attention: needs a teacher"):
        load_recipe(tiny_recipe, HEATMAPS | hourglass | {"train.attention": 1.0})
    with pytest.raises(ValueError, match="attention: must be >= 0"):
        load_recipe(tiny_recipe, HEATMAPS | hourglass | {"train.teacher": str(real_teacher), "train.attention": -1.0})
    deeper = {"model.name": "hourglass", "model.options": HOURGLASS | {"depth": 2}}
    recipe = load_recipe(tiny_recipe, HEATMAPS | deeper | {"train.teacher": str(real_teacher), "train.attention": 1.0})
    with pytest.raises(RecipeError, match=r"train.attention: .*model.safetensors: .*the student ran \d+ residual"):
        Trainer(recipe, tmp_path / "deeper", progress=False)
    smaller = {"model.name": "hourglass", "model.options": HOURGLASS | {"input_size": 24}, "crop.size": 24}
    recipe = load_recipe(tiny_recipe, HEATMAPS | smaller | {"train.teacher": str(real_teacher), "train.attention": 1.0})
    with pytest.raises(RecipeError, match="the teacher works at 32 px and this recipe at 24 px"):
        Trainer(recipe, tmp_path / "smaller", progress=False)
