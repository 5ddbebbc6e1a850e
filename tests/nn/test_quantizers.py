import pytest

torch = pytest.importorskip("torch", reason="the nn layers need the train extra (torch)")

import torch.nn.functional as F  # noqa: E402

from bitface.nn import QuantConv2d, QuantLinear, approx_sign, ste_sign  # noqa: E402
from bitface.train.acn import AsyncAmplitudeOptimizer, amplitude_loss  # noqa: E402


def test_ste_sign_forward_and_gradient():
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    y = ste_sign(x)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]  # sign(0) = +1: no zeros, so values pack to bits
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 1, 0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_ste_gradient_passes_exactly_where_abs_is_at_most_one(dtype):
    one = torch.tensor(1.0, dtype=dtype)
    edges = [1.0, -1.0, torch.nextafter(one, 2 * one).item(), -torch.nextafter(one, 2 * one).item()]
    edges += [torch.nextafter(one, 0 * one).item(), 0.0, -0.0, 3.0, float("inf"), float("-inf")]
    x = torch.cat([torch.tensor(edges, dtype=dtype), torch.randn(1000, dtype=dtype) * 1.5])
    x.requires_grad_(True)
    grad = torch.randn_like(x)
    ste_sign(x).backward(grad)
    assert torch.equal(x.grad, torch.where(x.detach().abs() <= 1, grad, torch.zeros_like(grad)))


def test_signs_are_those_the_runtime_packs_for_every_float():
    tiny = torch.finfo(torch.float32).tiny
    x = torch.tensor([-0.0, 0.0, -1e-45, 1e-45, -tiny, tiny, -3e38, 3e38, float("-inf"), float("inf")])
    assert ste_sign(x).tolist() == torch.where(x >= 0, 1.0, -1.0).tolist()  # the packing's test: x >= 0
    wide = torch.randn(4, 64, 9, 9, dtype=torch.float64)  # and in other dtypes
    assert torch.equal(ste_sign(wide), torch.where(wide >= 0, 1.0, -1.0).to(torch.float64))


def test_approx_sign_gradient():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.25, 1.0], requires_grad=True)
    approx_sign(x).sum().backward()
    assert x.grad.tolist() == [0, 1, 2, 1.5, 0]


def test_xnor_kernel_is_scaled_sign_with_xnor_net_gradient():
    torch.manual_seed(0)
    layer = QuantConv2d(3, 4, 3, kernel_quantizer="xnor", bias=False)
    w = layer.weight
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(layer.quantized_weight(), alpha * torch.sign(w))
    g = torch.randn_like(w)
    (layer.quantized_weight() * g).sum().backward()
    n = w[0].numel()
    expected = g * alpha * (w.abs() <= 1) + torch.sign(w) * (g * torch.sign(w)).sum((1, 2, 3), keepdim=True) / n
    torch.testing.assert_close(w.grad, expected)


def _tiny_acn(seed=0):
    torch.manual_seed(seed)
    layer = QuantConv2d(2, 3, 3, padding=1, bias=False, kernel_quantizer="acn")
    with torch.no_grad():
        layer.weight.uniform_(-1.5, 1.5)  # some weights outside the STE window
        layer.kernel_quantizer.amplitude.uniform_(0.2, 0.8)
    return layer


def test_acn_forward_uses_mean_amplitude_times_sign():
    layer = _tiny_acn()
    a_hat = layer.kernel_quantizer.amplitude.mean()
    x = torch.randn(2, 2, 5, 5)
    expected = F.conv2d(x, a_hat * torch.sign(layer.weight), padding=1)
    torch.testing.assert_close(layer(x), expected)


def test_acn_task_gradients_match_the_papers_equations():
    """dL_S/dX_i = dL_S/dX̂_i * Â * 1(|X_i| <= 1);  dL_S/dA = sum_i dL_S/dX̂_i ⊙ D_i (dÂ/dA := 1)."""
    layer = _tiny_acn()
    x = torch.randn(2, 2, 5, 5)
    target = torch.randn(2, 3, 5, 5)
    q = layer.kernel_quantizer
    loss = ((layer(x) - target) ** 2).sum()
    loss.backward()
    # reference: dL/dX̂ from a plain conv on a leaf X̂
    x_hat = (q.amplitude.mean() * torch.sign(layer.weight)).detach().requires_grad_()
    ((F.conv2d(x, x_hat, padding=1) - target) ** 2).sum().backward()
    g, d = x_hat.grad, torch.sign(layer.weight.detach())
    torch.testing.assert_close(layer.weight.grad, g * q.amplitude.mean() * (layer.weight.abs() <= 1))
    torch.testing.assert_close(q.amplitude.grad, (g * d).sum(0))
    # and summed over A's elements it is the true derivative with respect to the scalar Â
    eps = 1e-3

    def loss_at(a_hat):
        return ((F.conv2d(x, a_hat * d, padding=1) - target) ** 2).sum().double()

    a_hat = q.amplitude.mean().detach()
    fd = (loss_at(a_hat + eps) - loss_at(a_hat - eps)) / (2 * eps)
    assert q.amplitude.grad.sum().item() == pytest.approx(fd.item(), rel=2e-3)


def test_async_optimizer_follows_algorithm_1_with_the_true_sign():
    """One plain-gradient step: X1 = X0 - eta1 (g_X + theta (X0 - Â0 D0)); then, from the updated
    kernels, A1 = |A0 - eta2 (g_A - theta sum_i (X1_i - Â0 D1_i) ⊙ D1_i)|."""
    layer = _tiny_acn()
    q = layer.kernel_quantizer
    theta, eta1, eta2 = 0.5, 0.1, 0.05
    opt = AsyncAmplitudeOptimizer(layer, lr=eta1, amplitude_lr=eta2, theta=theta, optimizer="sgd")
    x = torch.randn(2, 2, 5, 5)
    opt.zero_grad()
    layer(x).square().sum().backward()
    g_x, g_a = layer.weight.grad.clone(), q.amplitude.grad.clone()
    x0, a0 = layer.weight.detach().clone(), q.amplitude.detach().clone()
    a_hat0 = a0.mean()
    # autograd of the stated amplitude loss (dÂ/dA := 1) gives the X term: theta (X - ÂD)
    gx_amp, _ = torch.autograd.grad(amplitude_loss(layer, theta), [layer.weight, q.amplitude])
    torch.testing.assert_close(gx_amp, theta * (x0 - a_hat0 * torch.sign(x0)))
    opt.step()
    x1 = x0 - eta1 * (g_x + gx_amp)
    torch.testing.assert_close(layer.weight.detach(), x1)
    d1 = torch.sign(x1)
    a1 = (a0 - eta2 * (g_a - theta * ((x1 - a_hat0 * d1) * d1).sum(0))).abs()
    torch.testing.assert_close(q.amplitude.detach(), a1)


@pytest.mark.parametrize("start, direction", [(0.2, 1), (None, 0), (1.5, -1)])
def test_amplitude_loss_moves_the_mean_amplitude_towards_mean_abs_kernel(start, direction):
    """The fixed point of L_Â in Â is mean |X|: below it Â grows, above it shrinks, at it stays."""
    layer = _tiny_acn(3)
    target = layer.weight.abs().mean().item()
    with torch.no_grad():
        layer.kernel_quantizer.amplitude.fill_(target if start is None else start)
    opt = AsyncAmplitudeOptimizer(layer, lr=1e-9, amplitude_lr=1e-3, theta=1.0, optimizer="sgd")
    before = layer.kernel_quantizer.amplitude.mean().item()
    opt.zero_grad()
    opt.step()
    change = layer.kernel_quantizer.amplitude.mean().item() - before
    if direction == 0:
        assert abs(change) < 1e-6
    else:
        assert change * direction > 0 and abs(before + change - target) < abs(before - target)


def test_unknown_quantizer_names_are_refused():
    with pytest.raises(KeyError, match="unknown kernel quantizer 'ternary'"):
        QuantLinear(4, 2, kernel_quantizer="ternary")
    with pytest.raises(KeyError, match="unknown input quantizer 'relu'"):
        QuantLinear(4, 2, input_quantizer="relu")


def test_decoupled_amplitude_update_steps_outside_adam():
    """decoupled: X0' = X0 - eta1 theta (X0 - Â0 D0), then Adam on the task gradient alone (first Adam
    step: -eta1 * g / (|g| + eps)); A likewise from the updated kernels."""
    layer = _tiny_acn()
    q = layer.kernel_quantizer
    theta, eta1, eta2 = 0.5, 0.1, 0.05
    opt = AsyncAmplitudeOptimizer(layer, lr=eta1, amplitude_lr=eta2, theta=theta, amplitude_update="decoupled")
    opt.zero_grad()
    layer(torch.randn(2, 2, 5, 5)).square().sum().backward()
    g_x, g_a = layer.weight.grad.clone(), q.amplitude.grad.clone()
    x0, a0 = layer.weight.detach().clone(), q.amplitude.detach().clone()
    a_hat0 = a0.mean()
    opt.step()
    adam_step = lambda g, rate: rate * g / (g.abs() + 1e-8)  # noqa: E731
    x1 = x0 - eta1 * theta * (x0 - a_hat0 * torch.sign(x0)) - adam_step(g_x, eta1)
    torch.testing.assert_close(layer.weight.detach(), x1)
    d1 = torch.sign(x1)
    a_pulled = a0 + eta2 * theta * ((x1 - a_hat0 * d1) * d1).sum(0)
    torch.testing.assert_close(q.amplitude.detach(), (a_pulled - adam_step(g_a, eta2)).abs())
    with pytest.raises(ValueError, match="amplitude_update must be"):
        AsyncAmplitudeOptimizer(layer, amplitude_update="inside")


def test_int8_kernel_rounds_each_channel_to_127_steps_of_its_peak_with_a_straight_through_gradient():
    from bitface.nn.quantizers import Int8Kernel

    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    with torch.no_grad():
        w[2] = 0  # a channel of zeros: step 1, integers 0, no division by zero
    q = Int8Kernel(w.shape)
    steps, integers = q.quantize(w)
    assert torch.equal(integers, torch.round(integers)) and integers.abs().max() == 127
    assert torch.equal(integers[2], torch.zeros(3, 3, 3)) and steps[2].item() == 1
    peaks = w.detach().abs().flatten(1).amax(1)
    assert torch.equal(integers.abs().flatten(1).amax(1)[[0, 1, 3]], torch.full((3,), 127.0))
    assert torch.allclose(steps.flatten()[[0, 1, 3]], peaks[[0, 1, 3]] / 127)
    out = q(w)
    assert torch.allclose(out, steps * integers) and (out - w).abs().max() <= steps.max() / 2 + 1e-7
    (out * torch.arange(w.numel()).reshape(w.shape)).sum().backward()
    assert torch.equal(w.grad, torch.arange(w.numel()).reshape(w.shape).float())  # the rounding ignored
    assert q.bits == 8 and q.extra_parameters() == 4
