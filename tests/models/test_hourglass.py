import pytest

torch = pytest.importorskip("torch", reason="models need the train extra (torch)")

from bitface.models import create_model  # noqa: E402
from bitface.models.summary import summarize  # noqa: E402


def small(**options):
    defaults = dict(num_points=5, features=16, depth=2, input_size=32)
    return create_model("hourglass", **{**defaults, **options})


@pytest.mark.parametrize("block", ["bottleneck", "hpm", "multiscale"])
@pytest.mark.parametrize("binarization", ["real", "xnor", "acn1bit"])
def test_heatmaps_at_stride_4_with_gradients_everywhere(block, binarization):
    torch.manual_seed(0)
    model = small(block=block, binarization=binarization)
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 5, 8, 8)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_stacks_return_every_heatmap_in_training_and_the_last_in_eval():
    model = small(stacks=2)
    outputs = model(torch.randn(2, 1, 32, 32))
    assert isinstance(outputs, list) and len(outputs) == 2
    model.eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5, 8, 8)


def test_heads_start_at_the_target_prior():
    logits = small(logits=True)
    maps = small(logits=False)
    prior = 14 / 8**2  # the mean of a sigma-1.5 Gaussian target over an 8 x 8 map
    assert torch.sigmoid(logits.heads[0][-1].bias).detach() == pytest.approx(torch.full((5,), prior))
    assert maps.heads[0][-1].bias.detach() == pytest.approx(torch.full((5,), prior))


def test_first_and_last_layers_stay_real_and_the_rest_is_binary():
    summary = summarize(small(binarization="xnor"), (1, 32, 32))
    rows = summary.rows
    convs = [r for r in rows if "Conv" in r.kind]
    assert convs[0].weight_bits == 32 and convs[-1].weight_bits == 32
    assert all(r.weight_bits == 1 and r.binary_macs for r in convs[1:-1])


def test_impossible_sizes_are_refused():
    with pytest.raises(ValueError, match="multiple of 16"):
        small(input_size=40)
    with pytest.raises(ValueError, match="unknown block"):
        small(block="dense")


def test_a_few_steps_fit_one_batch():
    torch.manual_seed(0)
    model = small(binarization="xnor")
    x, target = torch.randn(4, 1, 32, 32), torch.zeros(4, 5, 8, 8)
    target[:, :, 3, 4] = 1
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_early_pool_runs_the_first_block_at_a_quarter_of_the_input_with_the_same_weights():
    torch.manual_seed(0)
    usual, early = small(binarization="xnor"), small(binarization="xnor", early_pool=True)
    early.load_state_dict(usual.state_dict())  # the same names and shapes: either order loads the other
    sizes = {}
    early.stem.get_submodule("1").register_forward_hook(lambda m, i, o: sizes.update(block=tuple(o.shape[-2:])))
    usual.eval(), early.eval()
    x = torch.randn(2, 1, 32, 32)
    assert early(x).shape == usual(x).shape == (2, 5, 8, 8)
    assert sizes["block"] == (8, 8)  # the stem's first block (named "1" in both orders)
    assert not torch.allclose(early(x), usual(x))  # a different network on the same weights
