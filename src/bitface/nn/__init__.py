"""Quantizers and the layers built from them (binary, XNOR, ACN)."""

from .layers import QuantConv2d, QuantLinear
from .quantizers import (
    ACTIVATION_QUANTIZERS,
    KERNEL_QUANTIZERS,
    AmplitudeKernel,
    KernelQuantizer,
    SignKernel,
    XnorKernel,
    amplitude_mean,
    approx_sign,
    ste_sign,
)

__all__ = [
    "ACTIVATION_QUANTIZERS",
    "KERNEL_QUANTIZERS",
    "AmplitudeKernel",
    "KernelQuantizer",
    "QuantConv2d",
    "QuantLinear",
    "SignKernel",
    "XnorKernel",
    "amplitude_mean",
    "approx_sign",
    "ste_sign",
]
