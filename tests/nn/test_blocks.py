import pytest

torch = pytest.importorskip("torch", reason="blocks need the train extra (torch)")

from bitface.nn.blocks import BINARIZATIONS, BLOCKS, create_block  # noqa: E402
from bitface.nn.layers import QuantConv2d  # noqa: E402


def conv_weights(block) -> int:
    return sum(m.weight.numel() for m in block.modules() if isinstance(m, QuantConv2d))


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("binarization", BINARIZATIONS)
def test_every_block_keeps_the_resolution_and_passes_gradients_to_every_parameter(name, binarization):
    torch.manual_seed(0)
    block = create_block(name, 16, 32, binarization)
    x = torch.randn(2, 16, 9, 9, requires_grad=True)
    y = block(x)
    assert y.shape == (2, 32, 9, 9)
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", BLOCKS)
def test_binary_blocks_convolve_only_signs_with_binary_kernels(name):
    block = create_block(name, 16, 16, "xnor")
    seen = []

    def record(module, inputs, output):
        seen.append((module.quantized_input(inputs[0]), module.quantized_weight()))

    for m in block.modules():
        if isinstance(m, QuantConv2d):
            m.register_forward_hook(record)
    block(torch.randn(2, 16, 8, 8))
    assert seen
    for x, w in seen:
        assert set(x.unique().tolist()) <= {-1.0, 1.0}
        per_channel = w.abs().flatten(1)
        assert torch.allclose(per_channel, per_channel[:, :1].expand_as(per_channel))  # one scale per kernel


def test_block_widths_follow_the_paper():
    c = 256
    # Fig. 4(a): 1x1 256->128, 3x3 128->128, 1x1 128->256
    assert conv_weights(create_block("bottleneck", c, c)) == c * 128 + 128 * 128 * 9 + 128 * c
    # Fig. 4(c), Section 4.3: 1x1 256->64, 3x3 64->64 || maxpool, (3x3 256->32 || 3x3 256->32, 3x3 32->32);
    # 1x1 128->256: 1.14x the bottleneck, the ratio of the paper's Table 2 (4.0M / 3.5M)
    multiscale = 256 * 64 + 64 * 64 * 9 + 2 * 256 * 32 * 9 + 32 * 32 * 9 + 128 * 256
    assert conv_weights(create_block("multiscale", c, c)) == multiscale
    assert multiscale / conv_weights(create_block("bottleneck", c, c)) == pytest.approx(4.0 / 3.5, abs=0.01)
    # Fig. 4(e): 3x3 256->128, 3x3 128->64, 3x3 64->64
    assert conv_weights(create_block("hpm", c, c)) == (c * 128 + 128 * 64 + 64 * 64) * 9
    # Fig. 1(b): the final block at 192 channels has about the bottleneck's parameters (within 10%)
    matched = conv_weights(create_block("hpm", 192, 192))
    assert matched == pytest.approx(conv_weights(create_block("bottleneck", c, c)), rel=0.10)
    # the wider block and the multi-scale block without 1x1 convs are the large ones (Table 2)
    sizes = {name: conv_weights(create_block(name, c, c)) for name in BLOCKS}
    assert sizes["wider"] > sizes["multiscale_no1x1"] > sizes["hpm"] > sizes["bottleneck"]


def test_bad_block_arguments_are_named():
    with pytest.raises(ValueError, match="unknown block 'resnet'"):
        create_block("resnet", 8, 8)
    with pytest.raises(ValueError, match="unknown binarization 'ternary'"):
        create_block("hpm", 8, 8, "ternary")
    with pytest.raises(ValueError, match="divisible by 4"):
        create_block("hpm", 8, 18)
