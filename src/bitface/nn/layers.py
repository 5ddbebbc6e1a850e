"""Quantized conv and linear layers: a kernel quantizer and an input quantizer, chosen by name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import AmplitudeKernel, activation_quantizer, kernel_quantizer


class QuantMixin:
    """Shared by QuantConv2d and QuantLinear: quantize the input and the kernel, then the real op."""

    def _setup(self, kernel: str | None, inputs: str | None):
        self.kernel_quantizer_name = kernel
        self.input_quantizer_name = inputs
        self.kernel_quantizer = kernel_quantizer(kernel, self.weight.shape)
        self.input_quantizer = activation_quantizer(inputs)
        if isinstance(self.kernel_quantizer, AmplitudeKernel):
            self.kernel_quantizer.init_from(self.weight)

    def quantized_weight(self) -> torch.Tensor:
        return self.weight if self.kernel_quantizer is None else self.kernel_quantizer(self.weight)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    @property
    def weight_bits(self) -> int:
        return 32 if self.kernel_quantizer is None else self.kernel_quantizer.bits

    @property
    def input_bits(self) -> int:
        return 32 if self.input_quantizer is None else 1

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", kernel_quantizer={self.kernel_quantizer_name}, input_quantizer={self.input_quantizer_name}"
        )


class QuantConv2d(QuantMixin, nn.Conv2d):
    """nn.Conv2d with quantizers. Zero padding is applied *after* input binarization, so padded
    positions contribute 0, exactly as the packed runtime must reproduce."""

    def __init__(self, *args, kernel_quantizer: str | None = None, input_quantizer: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(kernel_quantizer, input_quantizer)

    def forward(self, x):
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)


class QuantLinear(QuantMixin, nn.Linear):
    def __init__(self, *args, kernel_quantizer: str | None = None, input_quantizer: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(kernel_quantizer, input_quantizer)

    def forward(self, x):
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)
