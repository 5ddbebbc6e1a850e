"""Residual blocks of Bulat & Tzimiropoulos (ICCV 2017, Fig. 4), real or binary, by registry name.

Every convolution is *pre-activation* (the paper's order, after He et al.): BatchNorm, then the
activation, then the conv. For real layers the activation is ReLU; for binary ones it is the sign
inside the quantized conv (so the BatchNorm output is what gets binarized, and BN + sign fold into
one integer threshold at export). `binarization` names the quantizer pair of every conv in a block:

    real     float weights and inputs
    xnor     XNOR-Net: sign(W) * mean|W| per output channel, sign inputs (the paper's baseline)
    bwn      binary (XNOR-scaled) weights, real inputs
    acn      ACN amplitude kernels, real inputs
    acn1bit  ACN kernels, sign inputs
    binact   float weights, sign inputs: the first stage of two-stage training (Martinez et al.,
             Real-to-Binary), whose weights then start an xnor or acn1bit twin (train.init); it has
             no packed form

Blocks (`BLOCKS`, `create_block(name, c_in, c_out, binarization)`), widths for c_out = C:

    bottleneck        (4a) 1x1 C->C/2, 3x3 C/2->C/2, 1x1 C/2->C
    wider             (4b) 1x1 C->C, 3x3 C->C, 1x1 C->C
    multiscale        (4c) [1x1 C->C/4, 3x3 C/4->C/4] || [maxpool, (3x3 C->C/8) || (3x3 C->C/8, 3x3)],
                           concatenated (C/2), 1x1 back to C
    multiscale_no1x1  (4d) [3x3 C->C/2] || [maxpool, (3x3 C->C/4) || (3x3 C->C/4, 3x3)]
    hpm               (4e) hierarchical, parallel, multi-scale: 3x3 C->C/2, 3x3 C/2->C/4,
                           3x3 C/4->C/4, the three outputs concatenated (C)

The figure's filter sizes are lost in our copy of the paper's text; the sizes above are those of
Fig. 4 and of the authors' released code for the final block. The multi-scale block follows the text of
its Section 4.3 (the right branch pools, then splits into a 3x3 and two stacked 3x3 convs, with no 1x1
between), which also gives the paper's parameter ratio to the bottleneck (1.14, Table 2; `bitface
summary blocks`). The max-pool inside the multi-scale
blocks is 3x3 with stride 1 (the block keeps its resolution). Each block adds its input back
(identity, or a 1x1 conv of the same binarization where c_in != c_out).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..registry import registrar
from .layers import QuantConv2d

BINARIZATIONS = {  # name: (kernel quantizer, input quantizer)
    "real": (None, None),
    "bwn": ("xnor", None),
    "xnor": ("xnor", "ste_sign"),
    "acn": ("acn", None),
    "acn1bit": ("acn", "ste_sign"),
    "binact": (None, "ste_sign"),
}


def quantizers_for(binarization: str) -> tuple[str | None, str | None]:
    if binarization not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {binarization!r}; known: {', '.join(BINARIZATIONS)}")
    return BINARIZATIONS[binarization]


class PreActConv(nn.Sequential):
    """BatchNorm -> (ReLU if the conv reads real values) -> conv, same padding, no bias."""

    def __init__(self, c_in: int, c_out: int, kernel: int, binarization: str = "real"):
        kernel_q, input_q = quantizers_for(binarization)
        super().__init__(
            nn.BatchNorm2d(c_in),
            nn.Identity() if input_q else nn.ReLU(),
            QuantConv2d(
                c_in, c_out, kernel, padding=kernel // 2, bias=False, kernel_quantizer=kernel_q, input_quantizer=input_q
            ),
        )


class Residual(nn.Module):
    """body(x) + skip(x): the skip is the identity, or a 1x1 pre-activation conv when widths differ."""

    def __init__(self, body: nn.Module, c_in: int, c_out: int, binarization: str):
        super().__init__()
        self.body = body
        self.skip = nn.Identity() if c_in == c_out else PreActConv(c_in, c_out, 1, binarization)

    def forward(self, x):
        return self.body(x) + self.skip(x)


class Concat(nn.Module):
    """Runs parallel branches on one input and concatenates their outputs along channels."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], 1)


class Hierarchical(nn.Module):
    """A chain of convs whose every intermediate output is kept and concatenated (the HPM body)."""

    def __init__(self, *convs: nn.Module):
        super().__init__()
        self.convs = nn.ModuleList(convs)

    def forward(self, x):
        outputs = []
        for conv in self.convs:
            x = conv(x)
            outputs.append(x)
        return torch.cat(outputs, 1)


def _split(c: int, parts: int) -> int:
    if c % parts:
        raise ValueError(f"block width {c} must be divisible by {parts}")
    return c // parts


BLOCKS: dict[str, Callable[[int, int, str], nn.Module]] = {}


register_block = registrar(BLOCKS, "block")


def create_block(name: str, c_in: int, c_out: int, binarization: str = "real") -> nn.Module:
    if name not in BLOCKS:
        raise ValueError(f"unknown block {name!r}; known: {', '.join(BLOCKS)}")
    return BLOCKS[name](c_in, c_out, binarization)


def _pool3() -> nn.Module:
    return nn.MaxPool2d(3, stride=1, padding=1)


@register_block("bottleneck")
def bottleneck(c_in: int, c_out: int, b: str = "real") -> nn.Module:
    mid = _split(c_out, 2)
    body = nn.Sequential(PreActConv(c_in, mid, 1, b), PreActConv(mid, mid, 3, b), PreActConv(mid, c_out, 1, b))
    return Residual(body, c_in, c_out, b)


@register_block("wider")
def wider(c_in: int, c_out: int, b: str = "real") -> nn.Module:
    body = nn.Sequential(PreActConv(c_in, c_out, 1, b), PreActConv(c_out, c_out, 3, b), PreActConv(c_out, c_out, 1, b))
    return Residual(body, c_in, c_out, b)


@register_block("multiscale")
def multiscale(c_in: int, c_out: int, b: str = "real") -> nn.Module:
    quarter, eighth = _split(c_out, 4), _split(c_out, 8)
    left = nn.Sequential(PreActConv(c_in, quarter, 1, b), PreActConv(quarter, quarter, 3, b))
    right = nn.Sequential(
        _pool3(),
        Concat(
            PreActConv(c_in, eighth, 3, b),
            nn.Sequential(PreActConv(c_in, eighth, 3, b), PreActConv(eighth, eighth, 3, b)),
        ),
    )
    body = nn.Sequential(Concat(left, right), PreActConv(2 * quarter, c_out, 1, b))
    return Residual(body, c_in, c_out, b)


@register_block("multiscale_no1x1")
def multiscale_no1x1(c_in: int, c_out: int, b: str = "real") -> nn.Module:
    half, quarter = _split(c_out, 2), _split(c_out, 4)
    right = nn.Sequential(
        _pool3(),
        Concat(
            PreActConv(c_in, quarter, 3, b),
            nn.Sequential(PreActConv(c_in, quarter, 3, b), PreActConv(quarter, quarter, 3, b)),
        ),
    )
    return Residual(Concat(PreActConv(c_in, half, 3, b), right), c_in, c_out, b)


@register_block("hpm")
def hpm(c_in: int, c_out: int, b: str = "real") -> nn.Module:
    half, quarter = _split(c_out, 2), _split(c_out, 4)
    body = Hierarchical(
        PreActConv(c_in, half, 3, b), PreActConv(half, quarter, 3, b), PreActConv(quarter, quarter, 3, b)
    )
    return Residual(body, c_in, c_out, b)
