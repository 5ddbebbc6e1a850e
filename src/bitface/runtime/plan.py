"""Compiles a packed model's op graph into native stages over preallocated buffers.

The graph (see bitface.export.format) is rewritten into a few fused stages:
- every conv, linear and binary layer becomes one convolution stage with its scale, shift and ReLU
  applied on the way out (a linear layer after `flatten` is a convolution whose kernel covers the
  whole map, its weights reordered to the runtime's pixel-major layout);
- a layer whose only consumer is a binary-input layer writes packed sign bits directly: for binary
  layers the float test `dot * scale + shift >= 0` becomes an integer range [lo, hi] on the dot
  product, found by evaluating that float expression on every possible dot (so it is exact);
- max-pools between them become ORs on the packed bits (sign(max) is the OR of the signs);
- `pad` becomes a border written once into the consumer's input buffer (0.0, or +1 sign bits).
Graphs it cannot express raise `Unsupported`; the runtime then falls back to the numpy reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..export.format import PackedModel, pack_signs, unpack_signs

INPUT, CONV, BCONV, POOL, BPOOL, SIGN = range(6)
FIELDS = (
    "kind in_buf out_buf ho wo kh kw cin words in_off in_row in_pix in_plane cout cout_pad out_mode "
    "out_off out_row out_pix out_plane relu size"
).split()
BLOCK = 16  # output channels per weight block (the kernels' register blocking)
PX = 8  # output pixels per vector: rows are read up to PX pixels past their end
OUT_FLOAT, OUT_BITS = 0, 1


class Unsupported(ValueError):
    """The graph has a construct the native runtime does not fuse (the reference still runs it)."""


@dataclass
class Layer:
    """One stage before buffers are placed. Its input is the previous layer's output."""

    kind: int
    channels: int  # output channels
    height: int  # output size
    width: int
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # on its input: top, bottom, left, right
    kernel: tuple[int, int] = (1, 1)
    weight: np.ndarray | None = None  # (O, C, kh, kw) float, or bits (O, kh, kw, words)
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None
    relu: bool = False
    binary_input: bool = False
    size: int = 1  # pool
    bits_out: bool = False


SEQUENTIAL_OPS = ("pad", "conv", "binconv", "linear", "binlinear", "relu", "maxpool", "flatten")


def _layers(model: PackedModel) -> tuple[list[Layer], bool]:
    c, h, w = (int(v) for v in model.meta["input_shape"])
    layers = [Layer(INPUT, c, h, w)]
    pad = [0, 0, 0, 0]
    flat = False
    for i, op in enumerate(model.graph):
        kind = op["op"]
        if kind not in SEQUENTIAL_OPS or "inputs" in op:
            raise Unsupported(f"op {i}: {kind}{' with inputs' if 'inputs' in op else ''} (only chains are compiled)")
        natural_stride = op["size"] if kind == "maxpool" else 1
        if op.get("stride", natural_stride) != natural_stride or op.get("padding", 0):
            raise Unsupported(f"op {i}: {kind} with a stride or built-in padding")
        if kind == "pad":
            left, right, top, bottom = op["pad"]
            pad = [pad[0] + top, pad[1] + bottom, pad[2] + left, pad[3] + right]
            continue
        if kind == "flatten":
            flat = True
            continue
        prev = layers[-1]
        if kind == "relu":
            # relu(max(x)) = max(relu(x)) and relu(pad(x)) = pad(relu(x)): move it onto the producer.
            producer = next((layer for layer in reversed(layers) if layer.kind != POOL), None)
            if producer.kind not in (CONV, BCONV):
                raise Unsupported(f"op {i}: relu on the network input")
            producer.relu = True
            continue
        if kind == "maxpool" and flat:
            raise Unsupported(f"op {i}: maxpool after flatten")
        c, h, w = prev.channels, prev.height + pad[0] + pad[1], prev.width + pad[2] + pad[3]
        if kind == "maxpool":
            k = int(op["size"])
            layers.append(Layer(POOL, c, h // k, w // k, tuple(pad), size=k))
        else:
            scale, shift = model.tensor(i, "scale"), model.tensor(i, "shift")
            binary = kind.startswith("bin")
            binary_input = binary and bool(op["binary_input"])
            source = model.tensor(i, "bits" if binary else "weight")
            if kind in ("linear", "binlinear"):
                if any(pad):
                    raise Unsupported(f"op {i}: padding before a linear layer")
                # A linear layer on a flattened (C, H, W) map is a convolution with an (H, W) kernel.
                dense = unpack_signs(source, int(op["in_channels"])) if binary else source
                if dense.shape[1] != c * prev.height * prev.width:
                    raise Unsupported(f"op {i}: {dense.shape[1]} inputs, the map has {c}x{h}x{w}")
                weight = dense.reshape(len(dense), c, prev.height, prev.width)
                kh, kw = prev.height, prev.width
            else:
                kh, kw = op["kernel"] if binary else source.shape[2:]
                weight = unpack_signs(source, int(op["in_channels"])) if binary else source
            if binary_input:
                weight = pack_signs(weight)  # (O, kh, kw, words), packed along input channels
            layers.append(
                Layer(
                    BCONV if binary_input else CONV,
                    len(scale),
                    h - kh + 1,
                    w - kw + 1,
                    tuple(pad),
                    (int(kh), int(kw)),
                    weight.astype(np.uint64 if binary_input else np.float32),
                    scale,
                    shift,
                    binary_input=binary_input,
                )
            )
            flat = flat and kind in ("linear", "binlinear")
        pad = [0, 0, 0, 0]
    if any(pad):
        raise Unsupported("the graph ends in padding")
    if layers[-1].kind not in (CONV, BCONV, POOL):
        raise Unsupported("the graph has no layers")
    return layers, flat


def _choose_bits(layers: list[Layer]) -> list[Layer]:
    """Mark the layers whose output feeds a binary-input layer as writing sign bits."""
    out = []
    for layer in layers:
        if layer.kind == BCONV:
            j = len(out) - 1
            while out[j].kind == POOL:
                out[j].kind = BPOOL
                j -= 1
            if out[j].kind == INPUT:  # the network input itself is binarized: add a packing stage
                src = out[j]
                out.insert(j + 1, Layer(SIGN, src.channels, src.height, src.width))
            else:
                out[j].bits_out = True
        out.append(layer)
    for layer in out:
        if layer.kind in (BPOOL, SIGN):
            layer.bits_out = True
    return out


def _thresholds(layer: Layer, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the dot products d in [-k, k] with float32(d * scale + shift) >= 0, as [lo, hi]."""
    dots = np.arange(-k, k + 1, dtype=np.float32)
    lo = np.ones(len(layer.scale), np.int32)
    hi = np.zeros(len(layer.scale), np.int32)
    for o, (s, b) in enumerate(zip(layer.scale, layer.shift, strict=True)):
        on = (dots * s + b >= 0) | layer.relu
        where = np.flatnonzero(on)
        if len(where):
            if where[-1] - where[0] + 1 != len(where):
                raise Unsupported(f"non-monotone threshold in channel {o}")
            lo[o], hi[o] = where[0] - k, where[-1] - k
    return lo, hi


@dataclass
class Buffer:
    bits: bool
    channels: int
    height: int
    width: int
    border: tuple[int, int, int, int]  # top, bottom, left, right

    @property
    def words(self) -> int:
        return -(-self.channels // 64)

    @property
    def padded(self) -> tuple[int, int]:
        t, b, left, r = self.border
        return self.height + t + b, self.width + left + r

    def strides(self) -> tuple[int, int, int]:
        """(row, pix, plane) in elements."""
        hp, wp = self.padded
        if self.bits:
            return wp, 1, hp * wp
        return wp * self.channels, self.channels, 0

    def origin(self) -> int:
        row, pix, _ = self.strides()
        return self.border[0] * row + self.border[2] * pix

    def initial(self) -> np.ndarray:
        """Borders filled (0.0, or sign bits of 0 = +1 on the real channels); slack for vector reads."""
        hp, wp = self.padded
        row, _, _ = self.strides()
        slack = PX * max(self.channels, 1) + 2 * row + 64
        if not self.bits:
            return np.zeros(hp * wp * self.channels + slack, np.float32)
        planes = np.zeros((self.words, hp, wp), np.uint64)
        t, _, left, _ = self.border
        for w in range(self.words):
            n = min(64, self.channels - 64 * w)
            planes[w] = np.uint64((1 << n) - 1) if n < 64 else np.uint64(2**64 - 1)
            planes[w, t : t + self.height, left : left + self.width] = 0
        return np.concatenate([planes.ravel(), np.zeros(slack, np.uint64)])


@dataclass
class CompiledPlan:
    stages: list[tuple]
    buffers: list[np.ndarray]
    output: tuple[int, ...]
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, ...]  # per image, as the reference returns it
    layout: list[Buffer]


def compile_plan(model: PackedModel) -> CompiledPlan:
    layers, flat = _layers(model)
    layers = _choose_bits(layers)
    # Buffer i holds layer i's output, with the border its consumer pads.
    layout = []
    for i, layer in enumerate(layers):
        border = layers[i + 1].pad if i + 1 < len(layers) else (0, 0, 0, 0)
        layout.append(Buffer(layer.bits_out, layer.channels, layer.height, layer.width, border))
    stages = []
    for i, layer in enumerate(layers):
        out = layout[i]
        src = layout[i - 1] if i else None
        p = dict.fromkeys(FIELDS, 0)
        p.update(kind=layer.kind, in_buf=i - 1, out_buf=i, ho=layer.height, wo=layer.width, cout=layer.channels)
        p.update(out_mode=OUT_BITS if out.bits else OUT_FLOAT, out_off=out.origin(), relu=int(layer.relu))
        p["out_row"], p["out_pix"], p["out_plane"] = out.strides()
        if src is not None:
            p["in_row"], p["in_pix"], p["in_plane"] = src.strides()
            p.update(cin=src.channels, words=src.words)
        tensors = [None] * 5
        if layer.kind == INPUT:
            p["cin"] = layer.channels
        elif layer.kind in (POOL, BPOOL):
            p["size"] = layer.size
        elif layer.kind in (CONV, BCONV):
            kh, kw = layer.kernel
            cout_pad = -(-layer.channels // BLOCK) * BLOCK
            p.update(kh=kh, kw=kw, cout_pad=cout_pad)
            if layer.kind == CONV:  # [kh][kw][cin][cout_pad]
                weight = np.zeros((kh, kw, src.channels, cout_pad), np.float32)
                weight[..., : layer.channels] = layer.weight.transpose(2, 3, 1, 0)
            else:  # [cout_pad / 16][kh][kw][words][16]
                bits = np.zeros((cout_pad, kh, kw, src.words), np.uint64)
                bits[: layer.channels] = layer.weight
                weight = bits.reshape(cout_pad // BLOCK, BLOCK, kh, kw, src.words).transpose(0, 2, 3, 4, 1)
            tensors = [
                np.ascontiguousarray(weight),
                np.ascontiguousarray(layer.scale, np.float32),
                np.ascontiguousarray(layer.shift, np.float32),
                None,
                None,
            ]
            if layer.kind == BCONV and out.bits:
                tensors[3:] = _thresholds(layer, src.channels * kh * kw)
        stages.append((tuple(int(p[f]) for f in FIELDS), *tensors))
    last = layout[-1]
    if last.bits:
        raise Unsupported("the network ends in sign bits")
    row, pix, _ = last.strides()
    output = (len(layout) - 1, last.channels, last.height, last.width, last.origin(), row, pix)
    shape = (last.channels * last.height * last.width,) if flat else (last.channels, last.height, last.width)
    c, h, w = (int(v) for v in model.meta["input_shape"])
    return CompiledPlan(stages, [b.initial() for b in layout], output, (c, h, w), shape, layout)
