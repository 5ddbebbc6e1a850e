"""The ACN paper's 5-point regression backbone (after Sun et al.'s F1 network): 4 conv + 2 FC on a
39 x 39 gray crop, max-pool after every conv but the last, dropout after the first FC.

Kernel structures (Table 2): 10-20-40-80, 20-40-60-80, 40-60-80-100 and the 8-conv
20-20-40-40-60-60-80-80 (each pair: a conv as in the 4-conv net, then a same-padded conv with a
kernel of at most 3). Kernel sizes 4, 3, 3, 2 and a 120-unit hidden layer reproduce the paper's
parameter counts (0.06 / 0.09 / 0.15 / 0.16 M; `bitface summary` prints ours).

Methods: `cnn` (all real), `bwn` (XNOR-scaled binary weights, real activations), `xnor` (XNOR-Net:
binary weights and activations), `acn` (ACN binary kernels, real activations), `acn1bit` (ACN
kernels, binary activations). The first conv and the last FC stay real by default (`keep_real`).

Layer order per block: [sign on the input if binary activations] conv -> BatchNorm -> activation ->
max-pool. The activation is ReLU where the next layer reads real values, and none where it
binarizes them (ReLU before sign would make every input +1).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..nn.layers import QuantConv2d, QuantLinear
from .registry import register_model

STRUCTURES = {
    "10-20-40-80": (10, 20, 40, 80),
    "20-40-60-80": (20, 40, 60, 80),
    "40-60-80-100": (40, 60, 80, 100),
    "20-20-40-40-60-60-80-80": (20, 20, 40, 40, 60, 60, 80, 80),
}
KERNEL_SIZES = (4, 3, 3, 2)
METHODS = {  # method: (kernel quantizer, input quantizer) of the binarized layers
    "cnn": (None, None),
    "bwn": ("xnor", None),
    "xnor": ("xnor", "ste_sign"),
    "acn": ("acn", None),
    "acn1bit": ("acn", "ste_sign"),
}


class SamePad2d(nn.Module):
    """Zero padding that keeps the size for any kernel (an even kernel pads right/bottom more)."""

    def __init__(self, kernel: int):
        super().__init__()
        total = kernel - 1
        self.pad = (total // 2, total - total // 2, total // 2, total - total // 2)

    def forward(self, x):
        return F.pad(x, self.pad)


class RegressionNet(nn.Module):
    def __init__(
        self,
        structure: str = "20-40-60-80",
        method: str = "cnn",
        num_points: int = 5,
        input_size: int = 39,
        channels: int = 1,
        hidden: int = 120,
        dropout: float = 0.5,
        keep_real: tuple[str, ...] = ("conv1", "fc2"),
    ):
        super().__init__()
        if structure not in STRUCTURES:
            raise ValueError(f"unknown structure {structure!r}; known: {', '.join(STRUCTURES)}")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        widths = STRUCTURES[structure]
        paired = len(widths) == 8
        kernel_q, input_q = METHODS[method]
        self.structure, self.method, self.num_points = structure, method, num_points
        self.input_size, self.channels = input_size, channels

        # (name, in, out, kernel, same-padded, pooled)
        convs, c_in = [], channels
        for stage, kernel in enumerate(KERNEL_SIZES):
            names = [f"conv{stage + 1}"] + ([f"conv{stage + 1}b"] if paired else [])
            for j, name in enumerate(names):
                out = widths[2 * stage + j] if paired else widths[stage]
                k = kernel if j == 0 else min(kernel, 3)
                convs.append((name, c_in, out, k, j == 1, j == len(names) - 1 and stage < 3))
                c_in = out
        all_names = [c[0] for c in convs] + ["fc1", "fc2"]
        unknown = set(keep_real) - set(all_names)
        if unknown:
            raise ValueError(f"keep_real names unknown layers {sorted(unknown)}; layers: {', '.join(all_names)}")
        self.keep_real = tuple(keep_real)

        def quantizers(name):
            return (None, None) if name in keep_real else (kernel_q, input_q)

        def binary_input(name):
            return quantizers(name)[1] is not None

        layers, size = [], input_size
        for i, (name, c_in, out, kernel, same, pooled) in enumerate(convs):
            kq, iq = quantizers(name)
            next_name = convs[i + 1][0] if i + 1 < len(convs) else "fc1"
            block = [SamePad2d(kernel)] if same else []
            block += [
                QuantConv2d(c_in, out, kernel, bias=False, kernel_quantizer=kq, input_quantizer=iq),
                nn.BatchNorm2d(out),
                nn.Identity() if binary_input(next_name) else nn.ReLU(inplace=True),
            ]
            size = size if same else size - kernel + 1
            if pooled:
                block.append(nn.MaxPool2d(2))
                size //= 2
            layers.append((name, nn.Sequential(*block)))
        if size < 1:
            raise ValueError(f"input size {input_size} is too small for structure {structure}")
        self.features = nn.Sequential()
        for name, block in layers:
            self.features.add_module(name, block)
        flat = widths[-1] * size * size
        kq, iq = quantizers("fc1")
        self.fc1 = QuantLinear(flat, hidden, bias=False, kernel_quantizer=kq, input_quantizer=iq)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.act1 = nn.Identity() if binary_input("fc2") else nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        kq, iq = quantizers("fc2")
        self.fc2 = QuantLinear(hidden, 2 * num_points, kernel_quantizer=kq, input_quantizer=iq)

    def forward(self, x):
        """(B, C, S, S) normalized crops -> (B, N, 2) points in normalized crop coordinates [-1, 1]."""
        x = self.features(x).flatten(1)
        x = self.dropout(self.act1(self.bn1(self.fc1(x))))
        return self.fc2(x).view(-1, self.num_points, 2)


@register_model("regression")
def regression(**options) -> RegressionNet:
    return RegressionNet(**options)
