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

from ..models.hourglass import Hourglass, HourglassNet
from ..models.model_file import LandmarkModel
from ..models.regression import RegressionNet, SamePad2d
from ..nn.blocks import Concat, Hierarchical, Residual
from ..nn.layers import QuantConv2d, QuantLinear
from ..nn.quantizers import AmplitudeKernel, Int8Kernel, SignKernel, XnorKernel
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
    elif isinstance(q, Int8Kernel):  # integer weights; each channel's step goes into its scale
        steps, integers = q.quantize(layer.weight)
        channel_scale, weight = steps.double().flatten(), integers.double()
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
    if q is None or isinstance(q, Int8Kernel):
        if layer.input_quantizer is not None:
            raise ValueError(  # binarization binact: a training stage, not a model to ship
                "a real-weight layer with binary inputs has no packed form; start a binary-weight twin "
                "(xnor or acn1bit) from its weights with train.init and pack that"
            )
        tensors["weight"] = weight.float().numpy()
        return ("conv" if conv else "linear"), tensors, {"weight_dtype": "int8"} if q is not None else {}
    tensors["bits"] = pack_signs(weight.numpy())
    attrs = {"in_channels": int(weight.shape[1]), "binary_input": layer.input_quantizer is not None}
    if conv:
        attrs["kernel"] = [int(k) for k in weight.shape[2:]]
    return ("binconv" if conv else "binlinear"), tensors, attrs


def _check_conv(layer: QuantConv2d) -> None:
    if layer.stride != (1, 1) or layer.padding != (0, 0) or layer.dilation != (1, 1) or layer.groups != 1:
        raise ValueError(f"packed convs support stride 1, no built-in padding, no groups; got {layer}")


def regression_graph(net: RegressionNet) -> tuple[list[dict], dict[str, np.ndarray]]:
    builder = GraphBuilder()

    def add(kind, op_tensors=None, **attrs):  # a chain: every op reads the one before
        builder.add(kind, [len(builder.graph) - 1], op_tensors, **attrs)

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
    return builder.graph, builder.tensors


class GraphBuilder:
    """Emits packed ops for a module tree; `emit(module, source)` returns the index of the op that
    holds the module's output (source: the op it reads, -1 for the network input)."""

    def __init__(self):
        self.graph: list[dict] = []
        self.tensors: dict[str, np.ndarray] = {}

    def add(self, kind: str, inputs: list[int], op_tensors: dict | None = None, **attrs) -> int:
        index = len(self.graph)
        op = {"op": kind, **attrs}
        if inputs != [index - 1]:
            op["inputs"] = inputs
        self.graph.append(op)
        for name, value in (op_tensors or {}).items():
            self.tensors[f"{index}.{name}"] = value
        return index

    def emit(self, module: nn.Module, source: int) -> int:
        if isinstance(module, nn.Sequential):
            for child in module:
                source = self.emit(child, source)
            return source
        if isinstance(module, Residual):
            body = self.emit(module.body, source)
            skip = self.emit(module.skip, source)
            return self.add("add", [body, skip])
        if isinstance(module, Concat):
            return self.add("concat", [self.emit(branch, source) for branch in module.branches])
        if isinstance(module, Hierarchical):
            outputs = []
            for conv in module.convs:
                source = self.emit(conv, source)
                outputs.append(source)
            return self.add("concat", outputs)
        if isinstance(module, Hourglass):
            skip = self.emit(module.skip, source)
            low = self.emit(module.up, self.emit(module.inner, self.emit(module.down, source)))
            return self.add("add", [skip, self.add("upsample", [low], factor=2)])
        if isinstance(module, nn.Identity):
            return source
        if isinstance(module, nn.ReLU):
            return self.add("relu", [source])
        if isinstance(module, nn.BatchNorm2d):
            inv = module.weight.detach().double() / torch.sqrt(module.running_var.double() + module.eps)
            shift = module.bias.detach().double() - module.running_mean.double() * inv
            return self.add("affine", [source], {"scale": inv.float().numpy(), "shift": shift.float().numpy()})
        if isinstance(module, nn.MaxPool2d):
            size, stride, padding = (_single(v) for v in (module.kernel_size, module.stride, module.padding))
            if _single(module.dilation) != 1 or module.ceil_mode:
                raise ValueError(f"no packed form for {module}")
            return self.add("maxpool", [source], size=size, stride=stride, padding=padding)
        if isinstance(module, nn.Conv2d):
            return self._conv(module, source)
        raise ValueError(f"no packed form for {type(module).__name__}")

    def _conv(self, layer: nn.Conv2d, source: int) -> int:
        stride, padding = _single(layer.stride), _single(layer.padding)
        if layer.dilation != (1, 1) or layer.groups != 1 or layer.padding_mode != "zeros":
            raise ValueError(f"packed convs support no dilation, groups or non-zero padding modes; got {layer}")
        if isinstance(layer, QuantConv2d):
            kind, op_tensors, attrs = _fold(layer, None)
        else:
            out = layer.out_channels
            bias = layer.bias.detach() if layer.bias is not None else torch.zeros(out)
            kind, attrs = "conv", {}
            op_tensors = {"weight": layer.weight.detach().float().numpy(), "scale": np.ones(out, np.float32),
                          "shift": bias.float().numpy()}  # fmt: skip
        return self.add(kind, [source], op_tensors, stride=stride, padding=padding, **attrs)


def _single(value) -> int:
    """One int from a square (h, w) pair or an int; a non-square value has no packed form."""
    if isinstance(value, tuple):
        if len(set(value)) != 1:
            raise ValueError(f"packed ops need square kernels, strides and paddings, got {value}")
        value = value[0]
    return int(value)


def hourglass_graph(net: HourglassNet) -> tuple[list[dict], dict[str, np.ndarray]]:
    builder = GraphBuilder()
    x = builder.emit(net.stem, -1)
    heatmaps = x
    for s, (stack, head) in enumerate(zip(net.stacks, net.heads, strict=True)):
        features = builder.emit(stack, x)
        heatmaps = builder.emit(head, features)
        if s < len(net.merges):
            merge = net.merges[s]
            x = builder.add(
                "add", [x, builder.emit(merge["features"], features), builder.emit(merge["heatmaps"], heatmaps)]
            )
    if heatmaps != len(builder.graph) - 1:
        raise ValueError("the last op must hold the heatmaps")
    return builder.graph, builder.tensors


CONVERTERS = {RegressionNet: regression_graph, HourglassNet: hourglass_graph}


def sign_only_affines(model: PackedModel) -> None:
    """Rewrites, in place, every affine that only binary-input layers read (a BatchNorm before a sign):
    those read sign(scale * x + shift) alone, which is sign(x - t) for scale > 0 and sign(t - x) for
    scale < 0, t = -shift / scale. So the affine becomes scale = sign(scale) (+1 for 0) and shift =
    shift / |scale|: the same signs (the same comparison: x * 1 + shift / |scale| >= 0 is
    scale * x + shift >= 0 divided by |scale|), and the packed file stores it as one bit and one float
    per channel. A zero scale leaves a constant sign, kept by a shift at the float32 limit."""
    graph, tensors = model.graph, model.tensors
    readers: dict[int, list[dict]] = {}
    for j, op in enumerate(graph):
        for i in model.inputs_of(j):
            readers.setdefault(i, []).append(op)
    limit = float(np.finfo(np.float32).max)
    for i, op in enumerate(graph):
        ops_reading = readers.get(i, [])
        if op["op"] != "affine" or not ops_reading:
            continue
        if not all(r["op"] in ("binconv", "binlinear") and r["binary_input"] for r in ops_reading):
            continue
        scale = tensors[f"{i}.scale"].astype(np.float64)
        shift = tensors[f"{i}.shift"].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            unit_shift = np.where(scale != 0, shift / np.abs(scale), np.where(shift >= 0, limit, -limit))
        tensors[f"{i}.scale"] = np.where(scale < 0, -1.0, 1.0).astype(np.float32)
        tensors[f"{i}.shift"] = np.clip(unit_shift, -limit, limit).astype(np.float32)


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
    packed = PackedModel(graph, tensors, meta)
    sign_only_affines(packed)
    return packed
