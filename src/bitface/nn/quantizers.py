"""Quantizers: each maps a real tensor to its quantized form in the forward pass, with its gradient
written once. Registered by name so layers, recipes and the CLI speak names (larq's pattern).

Activation quantizers are plain functions of the input. Kernel quantizers are modules built for a
weight shape, so that a quantizer with state (ACN's amplitude matrix) owns its parameter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def signs(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0 (zeros of either sign too, so every value packs to one bit), -1 elsewhere.
    sign(x) is -1, 0 or +1; adding 1/2 leaves no zero: 6x faster than torch.where(x >= 0, 1., -1.) on
    CPU, where the activations' signs were a quarter of a binary hourglass's training step."""
    return torch.sign(x).add_(0.5).sign_()


class _Sign(torch.autograd.Function):
    """sign(x) with sign(0) = +1 (so every value packs to one bit); subclasses choose the gradient."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return signs(x)


def ste_gradient(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad where |x| <= 1, else 0. One fused kernel (hardtanh's backward, which passes the open interval:
    its bounds are the next values past +-1 in x's dtype, so +-1 pass too) instead of abs, compare, cast
    and multiply, each a pass over the activations: the unfused form was a sizeable share of a binary
    hourglass's training step on CPU."""
    bound = 1.0 + torch.finfo(x.dtype).eps
    return torch.ops.aten.hardtanh_backward(grad, x, -bound, bound)


class _SignSTE(_Sign):
    """Straight-through estimator: gradient passed where |x| <= 1."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return ste_gradient(grad, x)


class _ApproxSign(_Sign):
    """Gradient of Bi-Real Net's piecewise quadratic approximation: 2 - 2|x| on |x| <= 1."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.clamp(2 - 2 * x.abs(), min=0)


class _MeanIdentityGrad(torch.autograd.Function):
    """Every element becomes the mean of all elements; the backward pass treats d(mean)/dA as 1
    element-wise, as the ACN paper does (Section 3.4.2: "dÂ/dA is set to 1")."""

    @staticmethod
    def forward(ctx, a):
        return a.mean().expand_as(a).clone()

    @staticmethod
    def backward(ctx, grad):
        return grad


def ste_sign(x: torch.Tensor) -> torch.Tensor:
    return _SignSTE.apply(x)


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    return _ApproxSign.apply(x)


def amplitude_mean(a: torch.Tensor) -> torch.Tensor:
    return _MeanIdentityGrad.apply(a)


ACTIVATION_QUANTIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "ste_sign": ste_sign,
    "approx_sign": approx_sign,
}


class KernelQuantizer(nn.Module):
    """Base of kernel quantizers. `bits` is the storage width of each weight after deployment;
    `extra_parameters` counts real values kept beside the bits (scales), as the papers count them."""

    bits = 32
    binary = False

    def __init__(self, weight_shape: torch.Size):
        super().__init__()
        self.weight_shape = tuple(weight_shape)

    def extra_parameters(self) -> int:
        return 0


class SignKernel(KernelQuantizer):
    """BinaryConnect: sign(W), no scale."""

    bits = 1
    binary = True

    def forward(self, w):
        return ste_sign(w)


class XnorKernel(KernelQuantizer):
    """XNOR-Net / BWN: sign(W) * alpha per output channel, alpha = mean |W| over that channel's kernel.
    alpha is not detached, so the gradient is XNOR-Net's: g * (alpha * 1(|W| <= 1) + sign(W) * mean(g * sign(W)))."""

    bits = 1
    binary = True

    def forward(self, w):
        alpha = w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
        return alpha * ste_sign(w)

    def extra_parameters(self) -> int:
        return self.weight_shape[0]


class AmplitudeKernel(KernelQuantizer):
    """ACN (Section 3 and Algorithm 1 of the ACN paper): X̂_i = Â ⊙ sign(X_i).

    A is one non-negative amplitude matrix of the shape of one kernel (C_in, kh, kw), shared by all
    kernels of the layer; Â has every element equal to the mean of A, so at inference a layer is its
    bits and one scalar. Autograd gives exactly the paper's task-loss gradients:
    dL_S/dX_i = dL_S/dX̂_i * Â * 1(|X_i| <= 1) and dL_S/dA = sum_i dL_S/dX̂_i ⊙ D_i.
    The amplitude loss and the asynchronous update of A live in `bitface.train.acn`.
    """

    bits = 1
    binary = True

    def __init__(self, weight_shape):
        super().__init__(weight_shape)
        self.amplitude = nn.Parameter(torch.ones(self.weight_shape[1:]))

    @torch.no_grad()
    def init_from(self, weight: torch.Tensor) -> None:
        """Start A at the mean |X| (the least-squares amplitude of sign(X))."""
        self.amplitude.fill_(float(weight.abs().mean()))

    def a_hat(self) -> torch.Tensor:
        return amplitude_mean(self.amplitude)

    def forward(self, w):
        return self.a_hat() * ste_sign(w)

    def extra_parameters(self) -> int:
        return 1  # Â: one scalar per layer at inference

    def amplitude_loss(self, w: torch.Tensor) -> torch.Tensor:
        """0.5 * sum_i ||X_i - Â ⊙ D_i||^2 (without theta), differentiable in X and A as the paper has it."""
        d = signs(w.detach())
        return 0.5 * ((w - self.a_hat() * d) ** 2).sum()


class Int8Kernel(KernelQuantizer):
    """8-bit weights for the real layers that stay real in a binary network (its first and last):
    per output channel c, step_c = max |W_c| / 127 and W_c -> step_c * round(W_c / step_c), integers in
    [-127, 127]. The packed file stores those integers and folds step_c into the channel's scale, so
    the trained network is what ships. Straight-through gradient (the rounding is ignored)."""

    bits = 8

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(step_c shaped to broadcast over w, the integers): a channel of zeros gets step 1 and
        integers 0."""
        w = w.detach()
        peak = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
        steps = torch.where(peak > 0, peak / 127, torch.ones_like(peak))
        return steps, torch.round(w / steps).clamp_(-127, 127)

    def forward(self, w):
        steps, integers = self.quantize(w)
        return w + (steps * integers - w).detach()

    def extra_parameters(self) -> int:
        return self.weight_shape[0]  # step_c: one real value per output channel


KERNEL_QUANTIZERS: dict[str, type[KernelQuantizer]] = {
    "sign": SignKernel,
    "xnor": XnorKernel,
    "acn": AmplitudeKernel,
    "int8": Int8Kernel,
}


def activation_quantizer(name: str | None):
    if name is None:
        return None
    if name not in ACTIVATION_QUANTIZERS:
        raise KeyError(f"unknown input quantizer {name!r}; known: {', '.join(ACTIVATION_QUANTIZERS)}")
    return ACTIVATION_QUANTIZERS[name]


def kernel_quantizer(name: str | None, weight_shape) -> KernelQuantizer | None:
    if name is None:
        return None
    if name not in KERNEL_QUANTIZERS:
        raise KeyError(f"unknown kernel quantizer {name!r}; known: {', '.join(KERNEL_QUANTIZERS)}")
    return KERNEL_QUANTIZERS[name](weight_shape)
