"""Training-time network -> packed op graph (needs torch).

Folding, per output channel c of a conv or linear layer followed by BatchNorm:
    y = s_c * dot(q(x), sign(W_c)) (binary kernels; s_c = XNOR's alpha_c or ACN's Â) or dot(x, W_c) (real),
    BN(y) = gamma_c * (y - mean_c) / sqrt(var_c + eps) + beta_c = scale_c * dot + shift_c.
So the packed op keeps only the bits (or real weights) and one scale and shift per channel; a binary
runtime turns `scale * dot + shift >= 0` into an integer threshold on the popcount.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.model_file import LandmarkModel
from ..models.regression import RegressionNet, SamePad2d
from ..nn.layers import QuantConv2d, QuantLinear
from ..nn.quantizers import AmplitudeKernel, SignKernel, XnorKernel
from .format import PackedModel, pack_signs


def _fold(layer: QuantConv2d | QuantLinear, norm: nn.BatchNorm1d | nn.BatchNorm2d | None):
    """(op kind, tensors, attributes) of a quantized layer and the BatchNorm after it."""
    weight = layer.weight.detach().double()
    q = layer.kernel_quantizer
    out = weight.shape[0]
    if q is None:
        channel_scale = torch.ones(out, dtype=torch.float64)
    elif isinstance(q, XnorKernel):
        channel_scale = weight.abs().flatten(1).mean(1)
    elif isinstance(q, AmplitudeKernel):
        channel_scale = q.a_hat().detach().double().flatten()[0].expand(out)
    elif isinstance(q, SignKernel):
        channel_scale = torch.ones(out, dtype=torch.float64)
    else:
        raise ValueError(f"no packed form for kernel quantizer {type(q).__name__}")
    bias = layer.bias.detach().double() if layer.bias is not None else torch.zeros(out, dtype=torch.float64)
    scale, shift = channel_scale, bias
    if norm is not None:
        inv = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
        scale = scale * inv
        shift = (bias - norm.running_mean.double()) * inv + norm.bias.detach().double()
    tensors = {"scale": scale.float().numpy(), "shift": shift.float().numpy()}
    conv = isinstance(layer, QuantConv2d)
    if q is None:
        if layer.input_quantizer is not None:
            raise ValueError("a real-weight layer with binary inputs has no packed form")
        tensors["weight"] = weight.float().numpy()
        return ("conv" if conv else "linear"), tensors, {}
    tensors["bits"] = pack_signs(weight.numpy())
    attrs = {"in_channels": int(weight.shape[1]), "binary_input": layer.input_quantizer is not None}
    if conv:
        attrs["kernel"] = [int(k) for k in weight.shape[2:]]
    return ("binconv" if conv else "binlinear"), tensors, attrs


def _check_conv(layer: QuantConv2d) -> None:
    if layer.stride != (1, 1) or layer.padding != (0, 0) or layer.dilation != (1, 1) or layer.groups != 1:
        raise ValueError(f"packed convs support stride 1, no built-in padding, no groups; got {layer}")


def regression_graph(net: RegressionNet) -> tuple[list[dict], dict[str, np.ndarray]]:
    graph, tensors = [], {}

    def add(kind, op_tensors=None, **attrs):
        index = len(graph)
        graph.append({"op": kind, **attrs})
        for name, value in (op_tensors or {}).items():
            tensors[f"{index}.{name}"] = value

    for block in net.features:
        modules = list(block)
        for i, module in enumerate(modules):
            if isinstance(module, SamePad2d):
                add("pad", pad=list(module.pad))
            elif isinstance(module, QuantConv2d):
                _check_conv(module)
                norm = modules[i + 1] if isinstance(modules[i + 1], nn.BatchNorm2d) else None
                kind, op_tensors, attrs = _fold(module, norm)
                add(kind, op_tensors, **attrs)
            elif isinstance(module, nn.ReLU):
                add("relu")
            elif isinstance(module, nn.MaxPool2d):
                add("maxpool", size=int(module.kernel_size))
            elif not isinstance(module, (nn.BatchNorm2d, nn.Identity)):
                raise ValueError(f"no packed form for {type(module).__name__}")
    add("flatten")
    kind, op_tensors, attrs = _fold(net.fc1, net.bn1)
    add(kind, op_tensors, **attrs)
    if isinstance(net.act1, nn.ReLU):
        add("relu")
    kind, op_tensors, attrs = _fold(net.fc2, None)
    add(kind, op_tensors, **attrs)
    return graph, tensors


CONVERTERS = {RegressionNet: regression_graph}


def export_model(model: LandmarkModel, provenance: dict | None = None) -> PackedModel:
    """A trained LandmarkModel -> PackedModel with the same cropping, normalization and decoding."""
    net = model.network.eval()
    converter = CONVERTERS.get(type(net))
    if converter is None:
        raise ValueError(f"no exporter for {type(net).__name__} (model {model.model_name!r})")
    graph, tensors = converter(net)
    meta = model.metadata()
    meta.pop("format_version")  # the packed format has its own version
    meta["input_shape"] = [model.input.channels, model.crop.size, model.crop.size]
    meta["info"] = {**model.info, **(provenance or {})}
    return PackedModel(graph, tensors, meta)
