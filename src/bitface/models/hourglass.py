"""The hourglass landmark localizer (Newell et al.; binarized by Bulat & Tzimiropoulos, ICCV 2017),
built from any registered block (`bitface.nn.blocks`), at a scale that trains on a CPU.

    input  S x S (default 128, gray)
    stem   real 7x7 conv, stride 2, BN, ReLU          -> S/2, features/2 channels
           block(features/2 -> features), max-pool 2  -> S/4
           (early_pool: the max-pool before that block, which then runs at S/4: about 4x cheaper,
           the same parameters and state-dict keys)
           block(features -> features)
    stack  hourglass of `depth` levels (max-pool 2 down, nearest-neighbour 2x up, a block on the
           skip of every level), block, pre-activation 1x1 conv
    head   BN, ReLU, real 1x1 conv (with bias) -> one heatmap per landmark at S/4: logits for sigmoid
           cross-entropy, or with logits=False maps regressed directly (L2)

Stacks after the first take the previous features plus 1x1 projections of its features and its
heatmaps (intermediate supervision: in training, `forward` returns every stack's heatmaps).
The first conv and the head stay real, as in the paper; `binarization` applies to every block and
to the 1x1 conv after each hourglass. `real_weights: int8` trains those real convs (and the stacks'
merges) with 8-bit weights, one step per output channel (`bitface.nn.quantizers.Int8Kernel`), which
the packed file stores as 8-bit integers: a quarter of their memory, for more binary width in the
same budget.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch.nn.functional as F
from torch import nn

from ..nn.blocks import BLOCKS, PreActConv, create_block, quantizers_for
from ..nn.layers import QuantConv2d
from .registry import register_model

REAL_WEIGHTS = {"float32": None, "int8": "int8"}  # real_weights option: the real convs' kernel quantizer


class Hourglass(nn.Module):
    def __init__(self, depth: int, features: int, block: str, binarization: str):
        super().__init__()

        def make():
            return create_block(block, features, features, binarization)

        self.skip = make()
        self.down = nn.Sequential(nn.MaxPool2d(2), make())
        self.inner = Hourglass(depth - 1, features, block, binarization) if depth > 1 else make()
        self.up = make()

    def forward(self, x):
        low = self.up(self.inner(self.down(x)))
        return self.skip(x) + F.interpolate(low, scale_factor=2, mode="nearest")


class HourglassNet(nn.Module):
    heatmap_stride = 4

    def __init__(
        self,
        num_points: int = 68,
        block: str = "hpm",
        binarization: str = "xnor",
        features: int = 64,
        depth: int = 3,
        stacks: int = 1,
        input_size: int = 128,
        channels: int = 1,
        logits: bool = True,
        early_pool: bool = False,
        real_weights: str = "float32",
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; known: {', '.join(BLOCKS)}")
        quantizers_for(binarization)  # fails early on an unknown name
        if real_weights not in REAL_WEIGHTS:
            raise ValueError(f"unknown real_weights {real_weights!r}; known: {', '.join(REAL_WEIGHTS)}")

        def real_conv(c_in: int, c_out: int, kernel: int, **kwargs) -> nn.Conv2d:
            quantizer = REAL_WEIGHTS[real_weights]
            if quantizer is None:
                return nn.Conv2d(c_in, c_out, kernel, **kwargs)
            return QuantConv2d(c_in, c_out, kernel, kernel_quantizer=quantizer, **kwargs)

        if features % 8:
            raise ValueError(f"features must be a multiple of 8, got {features}")
        if stacks < 1 or depth < 1:
            raise ValueError(f"need stacks >= 1 and depth >= 1, got {stacks} and {depth}")
        if input_size % (4 * 2**depth):
            raise ValueError(f"input size {input_size} must be a multiple of {4 * 2**depth} (stride 4, depth {depth})")
        self.num_points, self.input_size, self.channels = num_points, input_size, channels
        self.block, self.binarization = block, binarization
        half = features // 2
        heatmap_cells = (input_size // self.heatmap_stride) ** 2
        stem = [
            ("0", real_conv(channels, half, 7, stride=2, padding=3, bias=False)),
            ("1", create_block(block, half, features, binarization)),
            ("2", nn.MaxPool2d(2)),
            ("3", create_block(block, features, features, binarization)),
        ]
        if early_pool:  # keeps the names, so the weights of either order load into the other
            stem[1], stem[2] = stem[2], stem[1]
        self.stem = nn.Sequential(OrderedDict(stem))
        # The stem's first conv reads the real image; BN + ReLU come first in the next block.
        self.stacks = nn.ModuleList()
        self.heads = nn.ModuleList()
        self.merges = nn.ModuleList()
        for s in range(stacks):
            self.stacks.append(
                nn.Sequential(
                    Hourglass(depth, features, block, binarization),
                    create_block(block, features, features, binarization),
                    PreActConv(features, features, 1, binarization),
                )
            )
            head = nn.Sequential(nn.BatchNorm2d(features), nn.ReLU(), real_conv(features, num_points, 1))
            # Start the maps at the targets' mean value (a Gaussian of sigma ~1.5 cells covers ~14 of
            # them), not at sigmoid(0) = 0.5: otherwise the first epochs only learn that cells are empty.
            prior = min(14.0 / heatmap_cells, 0.5)
            nn.init.constant_(head[-1].bias, math.log(prior / (1 - prior)) if logits else prior)
            self.heads.append(head)
            if s < stacks - 1:
                self.merges.append(
                    nn.ModuleDict(
                        {
                            "features": real_conv(features, features, 1, bias=False),
                            "heatmaps": real_conv(num_points, features, 1, bias=False),
                        }
                    )
                )

    def forward(self, x):
        """(B, C, S, S) normalized crops -> (B, N, S/4, S/4) heatmaps (a list, one per stack, in training)."""
        x = self.stem(x)
        outputs = []
        for s, (stack, head) in enumerate(zip(self.stacks, self.heads, strict=True)):
            features = stack(x)
            heatmaps = head(features)
            outputs.append(heatmaps)
            if s < len(self.merges):
                merge = self.merges[s]
                x = x + merge["features"](features) + merge["heatmaps"](heatmaps)
        return outputs if self.training and len(outputs) > 1 else outputs[-1]


@register_model("hourglass")
def hourglass(**options) -> HourglassNet:
    return HourglassNet(**options)
