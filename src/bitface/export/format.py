"""The packed model file: safetensors tensors plus a JSON graph, readable without torch.

A file holds one network as a list of ops applied in order (`graph`), the tensors they name, and how
faces are cropped, normalized and decoded (the same keys as a training checkpoint's metadata).
Binary kernels are stored as bits: sign(W) >= 0 -> 1, packed along input channels, 64 per uint64
word, as (out, kh, kw, words) (little-endian bit order: channel c is bit c % 64 of word c // 64).

The graph is a DAG in topological order. An op reads the previous op's output (op 0: the network
input) unless it lists `"inputs"`: op indices, -1 for the network input. The last op is the output.
Tensors are named per op ("3.bits").

    pad          {"pad": [left, right, top, bottom]}      zero padding (before any sign: a padded 0
                                                           binarizes to +1, as in training)
    conv         {"weight", "stride": 1, "padding": 0} real conv (zero padding), then
                 out = out * scale[c] + shift[c]
    binconv      {"bits", "in_channels", "kernel": [kh, kw], "binary_input", "stride": 1, "padding": 0}:
                 ±1 kernels; with binary_input the input is sign(x) (0 -> +1) and the dot product is an
                 integer (popcount), else a real conv with ±1 weights; `padding` positions contribute 0
                 to the dot (padding after the sign, as QuantConv2d does); then * scale[c] + shift[c]
    linear / binlinear   the same for fully connected layers on a flattened input
    affine       {"scale", "shift"}: x * scale[c] + shift[c] (a BatchNorm before a conv)
    relu, flatten
    maxpool      {"size": 2, "stride": size, "padding": 0} (padding never wins the max)
    upsample     {"factor": 2} nearest neighbour
    add          {"inputs": [a, b, ...]} element-wise sum
    concat       {"inputs": [a, b, ...]} along channels
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ..io.sample import DataError

FORMAT = "bitface-packed"
VERSION = 2  # 2: DAG graphs (inputs), strides and zero-contribution padding; version 1 files still read
READABLE_VERSIONS = (1, 2)
OPS = {
    "pad": ((), ("pad",)),
    "conv": (("weight", "scale", "shift"), ()),
    "binconv": (("bits", "scale", "shift"), ("in_channels", "kernel", "binary_input")),
    "linear": (("weight", "scale", "shift"), ()),
    "binlinear": (("bits", "scale", "shift"), ("in_channels", "binary_input")),
    "relu": ((), ()),
    "maxpool": ((), ("size",)),
    "flatten": ((), ()),
    "affine": (("scale", "shift"), ()),
    "upsample": ((), ("factor",)),
    "add": ((), ("inputs",)),
    "concat": ((), ("inputs",)),
}
DTYPES = {"weight": np.float32, "scale": np.float32, "shift": np.float32, "bits": np.uint64}


@dataclass
class PackedModel:
    graph: list[dict]
    tensors: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)  # scheme, crop, fallback_crop, input, output, info

    def tensor(self, op_index: int, name: str) -> np.ndarray:
        return self.tensors[f"{op_index}.{name}"]

    def inputs_of(self, op_index: int) -> list[int]:
        """The ops whose outputs op `op_index` reads (-1: the network input)."""
        return list(self.graph[op_index].get("inputs", [op_index - 1]))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        self.validate(str(path))
        header = {"format": FORMAT, "version": VERSION, "graph": self.graph, **self.meta}
        tmp = path.with_name(path.name + ".tmp")
        save_file(
            {k: np.ascontiguousarray(v) for k, v in self.tensors.items()}, str(tmp), {"bitface": json.dumps(header)}
        )
        tmp.chmod(0o644)  # a model file is for sharing (the temporary file was created private)
        tmp.replace(path)
        return path

    def layer_table(self) -> list[dict]:
        """Per op: its main tensor's shape, bytes stored, and bits as the papers count them
        (1 per binary weight, 32 per real weight, scale and shift)."""
        rows = []
        for i, op in enumerate(self.graph):
            kind = op["op"]
            names = OPS[kind][0]
            stored = sum(self.tensors[f"{i}.{n}"].nbytes for n in names)
            bits = 0
            shape = None
            for n in names:
                t = self.tensors[f"{i}.{n}"]
                if n == "bits":
                    shape = [t.shape[0], int(op["in_channels"]), *op.get("kernel", [])]
                    bits += int(np.prod(shape))
                else:
                    shape = shape or list(t.shape)
                    bits += 32 * t.size
            rows.append({"index": i, "op": kind, "shape": shape, "stored_bytes": stored, "memory_bits": bits})
        return rows

    def validate(self, where: str) -> None:
        """Every op known, with its attributes and tensors of the right dtype and consistent shapes."""
        names = set()
        for i, op in enumerate(self.graph):
            kind = op.get("op")
            if kind not in OPS:
                raise DataError(f"{where}: op {i} is {kind!r}, not one of {', '.join(OPS)}")
            wanted, attrs = OPS[kind]
            for attr in attrs:
                if attr not in op:
                    raise DataError(f"{where}: op {i} ({kind}) lacks attribute {attr!r}")
            inputs = op.get("inputs", [i - 1])
            if (
                not isinstance(inputs, list)
                or not inputs
                or not all(isinstance(j, int) and -1 <= j < i for j in inputs)
            ):
                raise DataError(f"{where}: op {i} ({kind}): inputs must be earlier ops (or -1), got {inputs!r}")
            for name in wanted:
                key = f"{i}.{name}"
                if key not in self.tensors:
                    raise DataError(f"{where}: op {i} ({kind}) lacks tensor {key!r}")
                if self.tensors[key].dtype != DTYPES[name]:
                    raise DataError(f"{where}: tensor {key!r} is {self.tensors[key].dtype}, expected {DTYPES[name]}")
                names.add(key)
            if wanted and kind != "affine":
                out = len(self.tensors[f"{i}.scale"])
                main = self.tensors[f"{i}.{wanted[0]}"]
                if main.shape[0] != out or self.tensors[f"{i}.shift"].shape != (out,):
                    raise DataError(f"{where}: op {i} ({kind}): {out} scales but weights for {main.shape[0]} outputs")
                if kind in ("binconv", "binlinear"):
                    words = -(-int(op["in_channels"]) // 64)
                    if main.shape[-1] != words:
                        raise DataError(
                            f"{where}: op {i} ({kind}): {op['in_channels']} input channels need {words} words "
                            f"per position, the bits have {main.shape[-1]}"
                        )
        extra = set(self.tensors) - names
        if extra:
            raise DataError(f"{where}: tensors no op uses: {sorted(extra)[:5]}")


def pack_signs(x: np.ndarray) -> np.ndarray:
    """(B, C, ...) real -> (B, ..., words) uint64 bits of x >= 0 along C (bit c % 64 of word c // 64)."""
    bits = np.moveaxis(x, 1, -1) >= 0
    channels = bits.shape[-1]
    words = -(-channels // 64)
    padded = np.zeros(bits.shape[:-1] + (words * 64,), dtype=np.uint64)
    padded[..., :channels] = bits
    place = np.uint64(1) << np.arange(64, dtype=np.uint64)
    return (padded.reshape(bits.shape[:-1] + (words, 64)) * place).sum(-1, dtype=np.uint64)


def unpack_signs(bits: np.ndarray, channels: int) -> np.ndarray:
    """(O, ..., words) uint64 -> (O, C, ...) float32 of ±1; the inverse of pack_signs."""
    flags = (bits[..., None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    flat = flags.reshape(bits.shape[:-1] + (-1,))[..., :channels].astype(np.float32)
    return np.moveaxis(flat * 2 - 1, -1, 1)


def load_packed(path: str | Path) -> PackedModel:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such model file")
    try:
        with safe_open(str(path), "numpy") as handle:
            raw = (handle.metadata() or {}).get("bitface")
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable packed model file ({exc})") from None
    if raw is None:
        raise DataError(f"{path}: a safetensors file without bitface metadata (not a bitface model)")
    try:
        header = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: corrupt metadata ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DataError(f"{path}: not a packed bitface model (a training checkpoint? run `bitface export` on it)")
    if header.get("version") not in READABLE_VERSIONS:
        raise DataError(
            f"{path}: packed format version {header.get('version')}; this bitface reads "
            + ", ".join(map(str, READABLE_VERSIONS))
        )
    graph = header.pop("graph", None)
    if not isinstance(graph, list) or not all(isinstance(op, dict) for op in graph):
        raise DataError(f"{path}: metadata has no valid graph")
    header.pop("format"), header.pop("version")
    model = PackedModel(graph, tensors, header)
    model.validate(str(path))
    return model
