"""The packed model file: safetensors tensors plus a JSON graph, readable without torch.

A file holds one network as a list of ops applied in order (`graph`), the tensors they name, and how
faces are cropped, normalized and decoded (the same keys as a training checkpoint's metadata).

In memory (`PackedModel.tensors`) binary kernels are sign bits: sign(W) >= 0 -> 1, packed along input
channels, 64 per uint64 word, as (out, kh, kw, words) (little-endian bit order: channel c is bit
c % 64 of word c // 64), the layout the runtime's popcount kernels read. Tensors are named per op
("3.bits").

On disk (version 5) the tensors are dense blobs, so that the file is as small as the papers count it:
"bits", every binary op's kernel as dense bits (out * kh * kw * in_channels of them, in that order,
little-endian within each byte, each op starting on a byte), "float32", every real tensor
flattened, and "int8", the weights of real ops with `"weight_dtype": "int8"`. All follow the graph's
op order and each op's tensor order below; the shape attributes (out_channels, in_channels, kernel,
channels) say how long each piece is. A scale or shift that is one value on every channel (ACN's
single Â, and the zero shift, of a binary conv with no BatchNorm after it) is stored once, and the op
lists it in `"uniform"`; a scale of only +1 and -1 (an affine that only a sign reads, see
`bitface.export.convert.sign_only_affines`) is stored as one bit per channel (1: +1) in "bits", and
the op lists it in `"signs"` (both on disk only: in memory every scale and shift is per channel, in
float32). Version 4 had no "int8" and no `signs`; version 3 stored every scale and shift per
channel; versions 1 and 2 one safetensors tensor per op tensor, in the in-memory layout; all still read.

The graph is a DAG in topological order. An op reads the previous op's output (op 0: the network
input) unless it lists `"inputs"`: op indices, -1 for the network input. The last op is the output.

    pad          {"pad": [left, right, top, bottom]}      zero padding (before any sign: a padded 0
                                                           binarizes to +1, as in training)
    conv         {"weight", "stride": 1, "padding": 0} real conv (zero padding), then
                 out = out * scale[c] + shift[c]; with "weight_dtype": "int8" the weights are integers
                 in [-127, 127] (the scale holds each channel's step), stored in 8 bits
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
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ..io.sample import DataError

FORMAT = "bitface-packed"
VERSION = 5  # 2: DAG graphs, strides and zero-contribution padding; 3: dense blobs; 4: uniform channels;
# 5: int8 real weights and sign-bit scales
READABLE_VERSIONS = (1, 2, 3, 4, 5)
UNIFORM_CAPABLE = ("scale", "shift")  # the per-channel tensors that may be stored as one value
SIGNS_CAPABLE = ("scale",)  # those that may be stored as one sign bit per channel
WEIGHT_DTYPES = ("int8",)  # real weights stored narrower than float32 (`weight_dtype`)
BLOBS = ("bits", "float32", "int8")
OPS = {  # kind: (tensors in storage order, required attributes)
    "pad": ((), ("pad",)),
    "conv": (("weight", "scale", "shift"), ("out_channels", "in_channels", "kernel")),
    "binconv": (("bits", "scale", "shift"), ("out_channels", "in_channels", "kernel", "binary_input")),
    "linear": (("weight", "scale", "shift"), ("out_channels", "in_channels")),
    "binlinear": (("bits", "scale", "shift"), ("out_channels", "in_channels", "binary_input")),
    "relu": ((), ()),
    "maxpool": ((), ("size",)),
    "flatten": ((), ()),
    "affine": (("scale", "shift"), ("channels",)),
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

    def __post_init__(self):
        _shape_attributes_from_tensors(self.graph, self.tensors)

    def tensor(self, op_index: int, name: str) -> np.ndarray:
        return self.tensors[f"{op_index}.{name}"]

    def inputs_of(self, op_index: int) -> list[int]:
        """The ops whose outputs op `op_index` reads (-1: the network input)."""
        return list(self.graph[op_index].get("inputs", [op_index - 1]))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        self.validate(str(path))
        graph = _disk_graph(self.graph, self.tensors)
        header = {"format": FORMAT, "version": VERSION, "graph": graph, **self.meta}
        tmp = path.with_name(path.name + ".tmp")
        save_file(_to_blobs(graph, self.tensors), str(tmp), {"bitface": json.dumps(header, separators=(",", ":"))})
        tmp.chmod(0o644)  # a model file is for sharing (the temporary file was created private)
        tmp.replace(path)
        return path

    def layer_table(self) -> list[dict]:
        """Per op: its main tensor's shape, bytes stored on disk, and the bits stored (1 per binary
        weight and per sign-bit scale, 8 per int8 weight, 32 per other real weight and per stored scale
        and shift value: the papers' way of counting, as stored)."""
        rows = []
        for i, op in enumerate(_disk_graph(self.graph, self.tensors)):
            shapes = tensor_shapes(op)
            bits = sum(_disk_bits(op, name, shape) for name, shape in shapes.items())
            dims = [op[a] for a in ("out_channels", "channels", "in_channels") if a in op]
            shape = [*dims, *op.get("kernel", [])] if shapes else None
            stored = sum(-(-_disk_bits(op, n, sh) // 8) for n, sh in shapes.items())
            rows.append({"index": i, "op": op["op"], "shape": shape, "stored_bytes": stored, "memory_bits": bits})
        return rows

    def validate(self, where: str) -> None:
        """Every op known, with its attributes, and tensors of the dtypes and shapes they imply."""
        names = set()
        for i, op in enumerate(self.graph):
            _check_op(op, i, where)
            for name, shape in tensor_shapes(op).items():
                key = f"{i}.{name}"
                if key not in self.tensors:
                    raise DataError(f"{where}: op {i} ({op['op']}) lacks tensor {key!r}")
                tensor = self.tensors[key]
                if tensor.dtype != DTYPES[name]:
                    raise DataError(f"{where}: tensor {key!r} is {tensor.dtype}, expected {DTYPES[name]}")
                if tensor.shape != shape:
                    raise DataError(
                        f"{where}: tensor {key!r} has shape {tensor.shape}, but op {i} ({op['op']}) "
                        f"with {_shape_text(op)} needs {shape}"
                    )
                if name == "weight" and op.get("weight_dtype") == "int8" and not _int8_valued(tensor):
                    raise DataError(
                        f"{where}: tensor {key!r} of op {i} ({op['op']}, weight_dtype int8) holds values "
                        "that are not integers in [-127, 127]"
                    )
                names.add(key)
        extra = set(self.tensors) - names
        if extra:
            raise DataError(f"{where}: tensors no op uses: {sorted(extra)[:5]}")


def _check_op(op: dict, i: int, where: str) -> None:
    kind = op.get("op")
    if kind not in OPS:
        raise DataError(f"{where}: op {i} is {kind!r}, not one of {', '.join(OPS)}")
    for attr in OPS[kind][1]:
        if attr not in op:
            raise DataError(f"{where}: op {i} ({kind}) lacks attribute {attr!r}")
    for attr in ("out_channels", "in_channels", "channels"):
        if attr in OPS[kind][1] and not (isinstance(op[attr], int) and op[attr] > 0):
            raise DataError(f"{where}: op {i} ({kind}): {attr} must be a positive integer, got {op[attr]!r}")
    kernel = op.get("kernel", [1])
    if "kernel" in OPS[kind][1] and not (
        isinstance(kernel, list) and len(kernel) == 2 and all(isinstance(k, int) and k > 0 for k in kernel)
    ):
        raise DataError(f"{where}: op {i} ({kind}): kernel must be [kh, kw] of positive integers, got {kernel!r}")
    for attr, capable in (("uniform", UNIFORM_CAPABLE), ("signs", SIGNS_CAPABLE)):
        listed = op.get(attr, [])
        if not isinstance(listed, list) or not all(name in capable and name in OPS[kind][0] for name in listed):
            raise DataError(f"{where}: op {i} ({kind}): {attr} must list some of its {capable}, got {listed!r}")
    if set(op.get("uniform", [])) & set(op.get("signs", [])):
        raise DataError(f"{where}: op {i} ({kind}): a tensor cannot be both uniform and signs")
    if "weight_dtype" in op and (kind not in ("conv", "linear") or op["weight_dtype"] not in WEIGHT_DTYPES):
        raise DataError(
            f"{where}: op {i} ({kind}): weight_dtype {op['weight_dtype']!r} (only conv and linear ops take one, "
            f"of {WEIGHT_DTYPES})"
        )
    inputs = op.get("inputs", [i - 1])
    if not isinstance(inputs, list) or not inputs or not all(isinstance(j, int) and -1 <= j < i for j in inputs):
        raise DataError(f"{where}: op {i} ({kind}): inputs must be earlier ops (or -1), got {inputs!r}")


def tensor_shapes(op: dict) -> dict[str, tuple[int, ...]]:
    """The in-memory shape of each tensor of an op (with valid attributes), in storage order."""
    kind = op["op"]
    if kind == "affine":
        return {"scale": (op["channels"],), "shift": (op["channels"],)}
    if not OPS[kind][0]:
        return {}
    out, cin, kernel = op["out_channels"], op["in_channels"], tuple(op.get("kernel", ()))
    main = ("bits", (out, *kernel, -(-cin // 64))) if kind.startswith("bin") else ("weight", (out, cin, *kernel))
    return dict([main, ("scale", (out,)), ("shift", (out,))])


def _disk_bits(op: dict, name: str, shape: tuple[int, ...]) -> int:
    """Bits a tensor takes on disk: one per binary weight (not the word padding) and per sign-bit scale,
    8 per int8 weight, 32 per float (one float for a uniform tensor)."""
    if name == "bits":
        return math.prod(shape[:-1]) * op["in_channels"]
    if name in op.get("uniform", ()):
        return 32
    return _blob_bits(op, name) * math.prod(shape)


def _blob(op: dict, name: str) -> str:
    """The on-disk blob of a (non-uniform) tensor of `op`."""
    if name == "bits" or name in op.get("signs", ()):
        return "bits"
    return "int8" if name == "weight" and op.get("weight_dtype") == "int8" else "float32"


def _blob_bits(op: dict, name: str) -> int:
    """Bits per value of a non-uniform, non-kernel-bits tensor on disk."""
    return {"bits": 1, "int8": 8, "float32": 32}[_blob(op, name)]


def _int8_valued(tensor: np.ndarray) -> bool:
    return bool(np.all(np.abs(tensor) <= 127) and np.all(tensor == np.round(tensor)))


def _disk_graph(graph: list[dict], tensors: dict[str, np.ndarray]) -> list[dict]:
    """The graph as written: each op listing, in `uniform`, the scales and shifts it stores as one value
    (the same bits on every channel, so that -0.0 beside 0.0 stays per channel and round-trips), and in
    `signs` the scales of only +1 and -1 it stores as one bit per channel."""
    written = []
    for i, op in enumerate(graph):
        op = {k: v for k, v in op.items() if k not in ("uniform", "signs")}
        uniform, signs = [], []
        for name in tensor_shapes(op):
            bits = tensors[f"{i}.{name}"].view(np.uint32)
            if name in UNIFORM_CAPABLE and bits.size and np.all(bits == bits.flat[0]):
                uniform.append(name)
            elif name in SIGNS_CAPABLE and np.all(np.isin(bits, _UNIT_BITS)):
                signs.append(name)
        written.append({**op, **({"uniform": uniform} if uniform else {}), **({"signs": signs} if signs else {})})
    return written


_UNIT_BITS = np.array([1.0, -1.0], np.float32).view(np.uint32)  # +1.0 and -1.0 exactly (not -0.0 or 1 + ulp)


def _shape_text(op: dict) -> str:
    return ", ".join(f"{a}={op[a]}" for a in ("out_channels", "in_channels", "kernel", "channels") if a in op)


def _shape_attributes_from_tensors(graph: list, tensors: dict) -> None:
    """Fills the shape attributes an op lacks from its tensors: graphs built in memory and version 1
    and 2 files carry the shapes only there. Anything malformed is left for `validate` to report."""
    for i, op in enumerate(graph if isinstance(graph, list) else []):
        if not isinstance(op, dict):
            continue
        kind = op.get("op")
        main = tensors.get(f"{i}.weight", tensors.get(f"{i}.bits"))
        if kind == "affine" and getattr(tensors.get(f"{i}.scale"), "ndim", 0) == 1:
            op.setdefault("channels", int(tensors[f"{i}.scale"].shape[0]))
        elif kind in ("conv", "linear", "binconv", "binlinear") and getattr(main, "ndim", 0) >= 2:
            op.setdefault("out_channels", int(main.shape[0]))
            if kind in ("conv", "linear"):
                op.setdefault("in_channels", int(main.shape[1]))
            if kind == "conv" and main.ndim == 4:
                op.setdefault("kernel", [int(k) for k in main.shape[2:]])


def _to_blobs(graph: list[dict], tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """In-memory tensors -> the dense blobs of a version 5 file (`graph` as `_disk_graph` writes it)."""
    pieces: dict[str, list[np.ndarray]] = {blob: [] for blob in BLOBS}
    for i, op in enumerate(graph):
        for name in tensor_shapes(op):
            tensor = tensors[f"{i}.{name}"]
            if name == "bits":
                planes = np.unpackbits(tensor.astype("<u8").view(np.uint8), axis=-1, bitorder="little")
                pieces["bits"].append(np.packbits(planes[..., : op["in_channels"]].ravel(), bitorder="little"))
            elif name in op.get("uniform", ()):
                pieces["float32"].append(tensor.ravel()[:1])
            elif _blob(op, name) == "bits":  # signs
                pieces["bits"].append(np.packbits(tensor.ravel() > 0, bitorder="little"))
            else:
                blob = _blob(op, name)
                pieces[blob].append(tensor.ravel().astype(np.int8 if blob == "int8" else np.float32))
    return {blob: np.concatenate(parts) for blob, parts in pieces.items() if parts}


def _from_blobs(graph: list[dict], blobs: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """The inverse of `_to_blobs`, checking that the graph's shapes account for every stored byte."""
    unknown = set(blobs) - set(BLOBS)
    if unknown:
        raise DataError(f"{where}: unknown tensors {sorted(unknown)[:5]} (a packed file holds {', '.join(BLOBS)})")
    stored = {
        "bits": blobs.get("bits", np.zeros(0, np.uint8)),
        "float32": blobs.get("float32", np.zeros(0, np.float32)),
        "int8": blobs.get("int8", np.zeros(0, np.int8)),
    }
    for blob, array in stored.items():
        if array.dtype != np.dtype(blob if blob != "bits" else "uint8") or array.ndim != 1:
            raise DataError(f"{where}: blob {blob!r} must be 1-d {'uint8' if blob == 'bits' else blob}")
    for i, op in enumerate(graph):
        _check_op(op, i, where)
    needed = [(i, n, sh) for i, op in enumerate(graph) for n, sh in tensor_shapes(op).items()]
    sizes = dict.fromkeys(BLOBS, 0)  # bytes of bits, values of the others
    for i, name, shape in needed:
        if name in graph[i].get("uniform", ()):
            sizes["float32"] += 1
        elif (blob := _blob(graph[i], name)) == "bits":
            sizes["bits"] += -(-_disk_bits(graph[i], name, shape) // 8)
        else:
            sizes[blob] += math.prod(shape)
    if any(stored[blob].size != sizes[blob] for blob in BLOBS):
        raise DataError(
            f"{where}: the graph's ops need {sizes['bits']} bytes of bits, {sizes['float32']} float32 and "
            f"{sizes['int8']} int8 values, the file holds {stored['bits'].size}, {stored['float32'].size} and "
            f"{stored['int8'].size} (metadata and tensors disagree)"
        )
    at = dict.fromkeys(BLOBS, 0)

    def take(blob: str, count: int) -> np.ndarray:  # the next `count` entries of a blob
        piece = stored[blob][at[blob] : at[blob] + count]
        at[blob] += count
        return piece

    tensors = {}
    for i, name, shape in needed:
        op, key = graph[i], f"{i}.{name}"
        if name == "bits":
            cin, rows = op["in_channels"], math.prod(shape[:-1])
            flat = np.unpackbits(take("bits", -(-_disk_bits(op, name, shape) // 8)), bitorder="little")
            planes = np.zeros((*shape[:-1], shape[-1] * 64), np.uint8)
            planes[..., :cin] = flat[: rows * cin].reshape(*shape[:-1], cin)
            tensors[key] = np.packbits(planes, axis=-1, bitorder="little").view("<u8").astype(np.uint64).reshape(shape)
        elif name in op.get("uniform", ()):
            tensors[key] = np.full(shape, take("float32", 1)[0], np.float32)
        elif (blob := _blob(op, name)) == "bits":  # signs: 1 -> +1
            count = math.prod(shape)
            flags = np.unpackbits(take("bits", -(-count // 8)), bitorder="little")[:count]
            tensors[key] = np.where(flags, 1.0, -1.0).astype(np.float32).reshape(shape)
        else:
            tensors[key] = take(blob, math.prod(shape)).astype(np.float32).reshape(shape)
    return tensors


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


def header_bytes(path: str | Path) -> int:
    """Bytes of a safetensors file before its tensor data: the length field and the JSON header (here
    the graph, metadata and tensor index)."""
    with open(path, "rb") as handle:
        return 8 + int.from_bytes(handle.read(8), "little")


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
    version = header.pop("version")
    header.pop("format")
    if version >= 3:
        tensors = _from_blobs(graph, tensors, str(path))
    for op in graph:  # on disk only: in memory every scale and shift is per channel, in float32
        op.pop("uniform", None)
        op.pop("signs", None)
    model = PackedModel(graph, tensors, header)
    model.validate(str(path))
    return model
