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


def test_int8_real_weights_quantize_the_real_convs_only_and_load_a_float_twins_weights():
    torch.manual_seed(0)
    float_net = small(binarization="acn1bit", stacks=2)
    int8_net = small(binarization="acn1bit", stacks=2, real_weights="int8")
    int8_net.load_state_dict(float_net.state_dict())  # the same tensors: train.init from a float model
    float_rows, int8_rows = summarize(float_net, (1, 32, 32)).rows, summarize(int8_net, (1, 32, 32)).rows
    changed = {i.name: (f, i) for f, i in zip(float_rows, int8_rows, strict=True) if f != i}
    # the stem's first conv, both heads and the merge's two 1x1 convs
    assert sorted(changed) == ["heads.0.2", "heads.1.2", "merges.0.features", "merges.0.heatmaps", "stem.0"]
    for name, (f, i) in changed.items():
        conv = int8_net.get_submodule(name)
        weights, out = conv.weight.numel(), conv.out_channels
        bias = out if conv.bias is not None else 0
        assert (f.weight_bits, i.weight_bits, i.kind) == (32, 8, "QuantConv2d[int8]")
        assert (f.memory_bits, i.memory_bits) == (32 * (weights + bias), 8 * weights + 32 * (bias + out))
        step = conv.weight.detach().abs().flatten(1).amax(1).view(-1, 1, 1, 1) / 127
        used = conv.quantized_weight().detach()
        assert torch.allclose(torch.round(used / step), used / step, atol=1e-4)  # whole steps
        assert ((used - conv.weight).abs() <= step / 2 + 1e-7).all()
    with pytest.raises(ValueError, match="unknown real_weights 'int4'; known: float32, int8"):
        small(real_weights="int4")


def test_a_batchnorm_only_a_sign_reads_counts_a_threshold_and_a_direction():
    rows = {r.name: r for r in summarize(small(binarization="xnor"), (1, 32, 32)).rows}
    real_rows = {r.name: r for r in summarize(small(binarization="real"), (1, 32, 32)).rows}
    sign_read = [n for n, r in rows.items() if r.kind == "BatchNorm2d" and n != "heads.0.0"]
    assert sign_read and all(rows[n].memory_bits == 33 * rows[n].params // 2 for n in sign_read)
    assert rows["heads.0.0"].memory_bits == 32 * rows["heads.0.0"].params  # read by a ReLU: scale and shift
    assert all(r.memory_bits == 32 * r.params for r in real_rows.values() if r.kind == "BatchNorm2d")
