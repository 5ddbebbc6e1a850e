"""Compiles a packed model's op graph (a DAG) into native stages over preallocated buffers.

Every op's output is a *value*. Values are stored in buffers, as floats (HWC) or as packed sign bits
(planar words), and read through views (a channel slice, plus the padding the reader adds):
- conv, linear and binary layers become one convolution stage each, with scale, shift and ReLU
  applied on the way out; a linear layer on a flattened map is a convolution whose kernel covers the
  whole map (its weights reordered to the runtime's pixel-major layout);
- a ReLU moves onto the layer that produces its input (through max-pools: relu(max) = max(relu));
- a value whose every reader is a binary-input layer is stored as sign bits only: a binary layer's
  float test `dot * scale + shift >= 0` becomes an integer range [lo, hi] on the dot product,
  found by evaluating that float expression on every possible dot (so it is exact); an affine
  (BatchNorm) before a binary layer becomes sign bits written by the epilogue of the stage that
  produces its input (a conv, an add or a max-pool), or else one pass from floats to bits; max-pools between
  become ORs on the bits (sign(max) is the OR of the signs);
- a value read both ways is stored as floats and signed into a second buffer once;
- `pad` ops and built-in paddings are borders written once into the producer's buffer (0.0, -inf
  for max-pools, or +1 sign bits); a binary layer's built-in padding contributes 0 to its dot
  products, so a per-position correction table removes what the +1 border added;
- the inputs of a concat write straight into their channel slice of its buffer (no copies).
Graphs it cannot express raise `Unsupported`; the runtime then falls back to the numpy reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..export.format import PackedModel, pack_signs, unpack_signs

INPUT, CONV, BCONV, POOL, BPOOL, SIGN, AFFINE, ADD, UPSAMPLE = range(9)
FIELDS = (
    "kind in_buf out_buf ho wo kh kw cin words in_off in_row in_pix in_plane cout cout_pad out_mode "
    "out_off out_row out_pix out_plane relu size stride in2_buf in2_off in2_row in2_pix fix_w "
    "aff_buf aff_off aff_row aff_plane aff_relu pool aff2_buf aff2_off aff2_row aff2_plane aff2_relu no_store"
).split()
BLOCK = 16  # output channels per weight block (the kernels' register blocking)
PX = 8  # output pixels per vector: rows are read up to PX pixels past their end
OUT_FLOAT, OUT_BITS = 0, 1
LAYERS = ("conv", "binconv", "linear", "binlinear")
VIEWS = ("pad", "flatten")  # ops that only change how their input is read


class Unsupported(ValueError):
    """The graph has a construct the native runtime does not fuse (the reference still runs it)."""


@dataclass
class Buffer:
    """One preallocated activation buffer; `fill` is what its border holds."""

    bits: bool
    channels: int
    height: int
    width: int
    border: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # top, bottom, left, right
    fill: str | None = None  # floats: "zero" or "-inf"; bits: "ones" (+1 signs) or "zeros" (-1)

    def need(self, pad: tuple[int, int, int, int], fill: str, why: str) -> None:
        if not any(pad):
            return
        if self.fill not in (None, fill):
            raise Unsupported(f"{why}: one buffer would need {self.fill} and {fill} borders")
        self.fill = fill
        self.border = [max(a, b) for a, b in zip(self.border, pad, strict=True)]

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
        """Borders filled, interior zero, slack for vector reads past a row."""
        hp, wp = self.padded
        row, _, _ = self.strides()
        slack = PX * max(self.channels, 1) + 2 * row + 64
        t, _, left, _ = self.border
        if not self.bits:
            image = np.full((hp, wp, self.channels), -np.inf if self.fill == "-inf" else 0.0, np.float32)
            image[t : t + self.height, left : left + self.width] = 0
            return np.concatenate([image.ravel(), np.zeros(slack, np.float32)])
        planes = np.zeros((self.words, hp, wp), np.uint64)
        if self.fill == "ones":  # sign bits of a padded 0.0: +1 on the real channels
            for w in range(self.words):
                n = min(64, self.channels - 64 * w)
                planes[w] = np.uint64((1 << n) - 1) if n < 64 else np.uint64(2**64 - 1)
            planes[:, t : t + self.height, left : left + self.width] = 0
        return np.concatenate([planes.ravel(), np.zeros(slack, np.uint64)])


@dataclass(frozen=True)
class View:
    """A value as stored: buffer `buf`, channels [c0, c0 + channels), read with `pad` around it."""

    buf: int
    c0: int
    channels: int
    height: int
    width: int
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right

    def padded(self, pad) -> View:
        return replace(self, pad=tuple(a + b for a, b in zip(self.pad, pad, strict=True)))


@dataclass
class Stage:
    kind: int
    out: View
    source: View | None = None
    source2: View | None = None
    params: dict = field(default_factory=dict)
    # weight scale shift lo hi fix row_class aff_scale aff_shift aff2_scale aff2_shift
    tensors: list = field(default_factory=lambda: [None] * 11)
    affine_out: View | None = None  # a binary conv's fused affine -> sign (the next layer's input bits)
    affine2_out: View | None = None  # a real conv's second one (its value read by two BatchNorms)
    fused: list = field(default_factory=list)  # the affine ops fused into this stage


@dataclass
class CompiledPlan:
    stages: list[tuple]
    buffers: list[np.ndarray]
    output: tuple[int, ...]
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, ...]  # per image, as the reference returns it
    layout: list[Buffer]

    @property
    def kinds(self) -> list[int]:
        """The stage kinds, in order (each stage's first parameter)."""
        return [params[0] for params, *_ in self.stages]


def _thresholds(scale, shift, relu: bool, k: int, then=None) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the dot products d in [-k, k] whose float32 value d * scale + shift (then ReLU)
    has sign +1, as [lo, hi]; with then = (scale2, shift2, relu2), the sign of that value through a
    following affine: the same float operations in the same order as the reference, so exact."""
    values = np.arange(-k, k + 1, dtype=np.float32)[None] * scale[:, None] + shift[:, None]
    if then is not None:
        scale2, shift2, relu2 = then
        values = (np.maximum(values, np.float32(0)) if relu else values) * scale2[:, None] + shift2[:, None]
        relu = relu2
    on = (values >= 0) | bool(relu)
    lo = np.ones(len(scale), np.int32)
    hi = np.zeros(len(scale), np.int32)
    for o, row in enumerate(on):
        where = np.flatnonzero(row)
        if len(where):
            if where[-1] - where[0] + 1 != len(where):
                raise Unsupported(f"non-monotone threshold in channel {o}")
            lo[o], hi[o] = where[0] - k, where[-1] - k
    return lo, hi


def _padding_fix(signs: np.ndarray, height: int, width: int, padding: int) -> tuple[np.ndarray, np.ndarray]:
    """What a +1 border adds to each dot product of a binary conv whose padding should add 0.

    signs: (O, C, kh, kw) of ±1. Returns (table [row class][O][x] int32, row class per output row)."""
    _, _, kh, kw = signs.shape
    ho, wo = height + 2 * padding - kh + 1, width + 2 * padding - kw + 1
    outside_rows = np.array([[not 0 <= y - padding + ky < height for ky in range(kh)] for y in range(ho)])
    outside_cols = np.array([[not 0 <= x - padding + kx < width for kx in range(kw)] for x in range(wo)])
    classes, row_class = np.unique(outside_rows, axis=0, return_inverse=True)
    taps = classes[:, None, :, None] | outside_cols[None, :, None, :]  # (class, x, ky, kx)
    per_tap = signs.sum(1)  # (O, kh, kw)
    table = np.einsum("cxyk,oyk->cox", taps.astype(np.int32), per_tap.astype(np.int32))
    return np.ascontiguousarray(table, np.int32), np.ascontiguousarray(row_class.ravel(), np.int32)


class _Compiler:
    def __init__(self, model: PackedModel):
        self.model = model
        self.graph = model.graph
        self.n = len(self.graph)
        if not self.n:
            raise Unsupported("the graph has no ops")
        self.inputs = [model.inputs_of(i) for i in range(self.n)]
        self.shapes = {-1: tuple(int(v) for v in model.meta["input_shape"])}
        self.flat = {-1: False}
        for i in range(self.n):
            self.shapes[i], self.flat[i] = self._shape(i)
        self._fuse_relus()
        self._find_readers()
        self.layout: list[Buffer] = []
        self.stages: list[Stage] = []
        self.stored: dict[int, View] = {}  # value -> where it is stored (its buffer says floats or bits)
        self.signed: dict[int, View] = {}  # float values also signed into a bits buffer
        # values written by a stage with a float epilogue (binary or real conv, add, max-pool): where a
        # following affine -> sign can be fused
        self.producer: dict[int, Stage] = {}
        self.done_at: dict[int, int] = {-1: 0}  # value -> index of the last stage writing it

    # -- shapes and graph facts -------------------------------------------------------------
    def _shape(self, i: int) -> tuple[tuple[int, int, int], bool]:
        op, kind = self.graph[i], self.graph[i]["op"]
        first = self.inputs[i][0]
        c, h, w = self.shapes[first]
        if kind == "pad":
            left, right, top, bottom = op["pad"]
            return (c, h + top + bottom, w + left + right), self.flat[first]
        if kind == "flatten":
            return (c, h, w), True
        if kind in ("relu", "affine"):
            return (c, h, w), self.flat[first]
        if kind == "maxpool":
            k, s, p = int(op["size"]), int(op.get("stride", op["size"])), int(op.get("padding", 0))
            return (c, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1), False
        if kind == "upsample":
            f = int(op["factor"])
            return (c, h * f, w * f), False
        if kind == "add":
            return (c, h, w), False
        if kind == "concat":
            return (sum(self.shapes[j][0] for j in self.inputs[i]), h, w), False
        cout = len(self.model.tensor(i, "scale"))
        if kind in ("linear", "binlinear"):
            return (cout, 1, 1), True
        kh, kw = op["kernel"] if kind == "binconv" else self.model.tensor(i, "weight").shape[2:]
        s, p = int(op.get("stride", 1)), int(op.get("padding", 0))
        return (cout, (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1), False

    def _fuse_relus(self) -> None:
        """canon[i]: the value op i's output really is (a fused ReLU is its input's value)."""
        self.canon = list(range(self.n))
        self.relu = [False] * self.n
        readers = [0] * self.n
        for i in range(self.n):
            for j in self.inputs[i]:
                if j >= 0:
                    readers[j] += 1
        for i, op in enumerate(self.graph):
            if op["op"] != "relu":
                continue
            j = self.inputs[i][0]
            while j >= 0 and self.graph[j]["op"] == "maxpool" and not self.graph[j].get("padding") and readers[j] == 1:
                j = self.inputs[j][0]
            if j >= 0 and self.graph[j]["op"] in (*LAYERS, "affine") and readers[j] == 1:
                self.relu[j] = True
                self.canon[i] = self.canon[self.inputs[i][0]]

    def _resolve(self, j: int) -> int:
        return j if j < 0 else self.canon[j]

    def _find_readers(self) -> None:
        """Which values are read as sign bits only, as floats, or both."""
        self.readers: dict[int, list[int]] = {j: [] for j in range(-1, self.n)}
        for i in range(self.n):
            if self.canon[i] != i:
                continue
            for j in self.inputs[i]:
                self.readers[self._resolve(j)].append(i)
        self.wants_bits, self.wants_float = {}, {}
        result = self._resolve(self.n - 1)  # the network's output is read as floats
        for v in range(self.n - 1, -2, -1):
            if v >= 0 and self.canon[v] != v:
                continue
            bits = floats = False
            for r in self.readers[v]:
                op = self.graph[r]
                if op["op"] in ("binconv", "binlinear") and op["binary_input"]:
                    bits = True
                elif op["op"] in ("maxpool", *VIEWS) and self.wants_bits[r] and not self.wants_float[r]:
                    bits = True
                else:
                    floats = True
            if v == result:
                floats = True
            self.wants_bits[v], self.wants_float[v] = bits, floats

    # -- views ---------------------------------------------------------------------------------
    def new_buffer(self, bits: bool, shape) -> int:
        self.layout.append(Buffer(bits, *shape))
        return len(self.layout) - 1

    def _through_view(self, v: int, read) -> View | None:
        """A pad or flatten op's value, as `read` (floats or bits) gives its input; None otherwise."""
        if v < 0 or self.graph[v]["op"] not in VIEWS:
            return None
        view = read(self.inputs[v][0])
        if self.graph[v]["op"] == "pad":
            left, right, top, bottom = self.graph[v]["pad"]
            view = view.padded((top, bottom, left, right))
        return view

    def floats(self, v: int) -> View:
        v = self._resolve(v)
        if (view := self._through_view(v, self.floats)) is not None:
            return view
        if self._is_stored_bits(v):
            raise Unsupported(f"value {v} is needed as floats but was stored as sign bits")
        return self.stored[v]

    def bits(self, v: int) -> View:
        v = self._resolve(v)
        if (view := self._through_view(v, self.bits)) is not None:
            return view
        if self._is_stored_bits(v):
            return self.stored[v]
        if v not in self.signed:
            source = self.stored[v]
            if any(source.pad):
                raise Unsupported(f"value {v}: signing a padded view")
            out = View(self.new_buffer(True, (source.channels, source.height, source.width)), 0, *self.shapes[v])
            self.stages.append(Stage(SIGN, out, source))
            self.signed[v] = out
        return self.signed[v]

    def read(self, view: View, fill: str, why: str) -> View:
        self.layout[view.buf].need(view.pad, fill, why)
        return view

    # -- lowering ------------------------------------------------------------------------------
    def compile(self) -> CompiledPlan:
        c, h, w = self.shapes[-1]
        self.stored[-1] = View(self.new_buffer(False, (c, h, w)), 0, c, h, w)
        self.stages.append(Stage(INPUT, self.stored[-1]))
        self._place_concats()
        for i in range(self.n):
            if self.canon[i] == i and self.graph[i]["op"] not in VIEWS:
                self._lower(i)
        last = self._resolve(self.n - 1)
        result = self.floats(last)
        if any(result.pad):
            raise Unsupported("the graph ends in padding")
        return self._finish(result, self.flat[self.n - 1])

    def _place_concats(self) -> None:
        """The values each concat's buffer holds at a channel offset (their producers write there).
        Outer concats first, so that a concat inside another is itself a slice of the outer buffer."""
        self.placed: dict[int, View] = {}
        for i in reversed(range(self.n)):
            if self.graph[i]["op"] != "concat" or self.canon[i] != i:
                continue
            if i in self.placed:
                whole = self.placed[i]
            else:
                whole = View(self.new_buffer(False, self.shapes[i]), 0, *self.shapes[i])
            c0 = whole.c0
            for j in self.inputs[i]:
                v = self._resolve(j)
                movable = v >= 0 and self.graph[v]["op"] not in VIEWS and v not in self.placed
                movable = movable and self.inputs[i].count(j) == 1
                if not movable:
                    raise Unsupported(f"op {i}: concat of value {j}, which cannot be written in place")
                self.placed[v] = View(whole.buf, c0, *self.shapes[v])
                c0 += self.shapes[v][0]
            self.stored[i] = whole

    def _output(self, v: int, bits: bool) -> View:
        if v in self.placed:
            self.stored[v] = self.placed[v]
        else:
            self.stored[v] = View(self.new_buffer(bits, self.shapes[v]), 0, *self.shapes[v])
        return self.stored[v]

    def _lower(self, i: int) -> None:
        op, kind = self.graph[i], self.graph[i]["op"]
        only_bits = self.wants_bits[i] and not self.wants_float[i] and i not in self.placed
        where = f"op {i} ({kind})"
        if kind == "concat":  # its inputs wrote into its buffer
            self.done_at[i] = max(self.done_at[self._resolve(j)] for j in self.inputs[i])
            return
        self.done_at[i] = len(self.stages)  # the stage appended below (fusions overwrite it)
        if kind in LAYERS:
            return self._lower_layer(i, only_bits)
        if kind == "maxpool":
            k, s, p = int(op["size"]), int(op.get("stride", op["size"])), int(op.get("padding", 0))
            source_is_bits = self._is_stored_bits(self.inputs[i][0])
            if only_bits and source_is_bits:
                source = self.read(self.bits(self.inputs[i][0]).padded((p,) * 4), "zeros", where)
                stage = Stage(BPOOL, self._output(i, True), source)
            elif (k, s, p) == (2, 2, 0) and self._fuse_pool(i):
                return
            else:
                source = self.read(self.floats(self.inputs[i][0]).padded((p,) * 4), "-inf", where)
                stage = Stage(POOL, self._output(i, False), source)
                self.producer[i] = stage
            stage.params.update(size=k, stride=s)
        elif kind in ("affine", "relu"):
            if kind == "affine" and only_bits and self._fuse_affine(i):
                return
            source = self.read(self.floats(self.inputs[i][0]), "zero", where)
            stage = Stage(AFFINE, self._output(i, only_bits), source)
            c = self.shapes[i][0]
            if kind == "affine":
                scale, shift = self.model.tensor(i, "scale"), self.model.tensor(i, "shift")
            else:
                scale, shift = np.ones(c, np.float32), np.zeros(c, np.float32)
            stage.params["relu"] = int(self.relu[i] or kind == "relu")
            stage.tensors[1:3] = [np.ascontiguousarray(scale, np.float32), np.ascontiguousarray(shift, np.float32)]
        elif kind == "add":
            if len(self.inputs[i]) == 2 and self._fuse_add(i):
                return
            first, *rest = self.inputs[i]
            out = self._sum_output(i, len(self.stages))
            source = self.floats(first)
            for j in rest:
                other = self.floats(j)
                if any(source.pad) or any(other.pad):
                    raise Unsupported(f"{where}: reads a padded value")
                self.stages.append(Stage(ADD, out, source, other))
                source = out
            self.producer[i] = self.stages[-1]
            return
        elif kind == "upsample":
            source = self.read(self.floats(self.inputs[i][0]), "zero", where)
            stage = Stage(UPSAMPLE, self._output(i, False), source)
            stage.params["size"] = int(op["factor"])
        else:
            raise Unsupported(f"{where}: no native stage")
        if any(stage.source.pad) and kind != "maxpool":
            raise Unsupported(f"{where}: reads a padded value")
        self.stages.append(stage)

    def _fuse_affine(self, i: int) -> bool:
        """An affine whose only use is a binary layer's sign, on the output of a conv, add or pool: that
        stage's epilogue writes the sign bits (the float test in the same order as the reference's)."""
        v = self._resolve(self.inputs[i][0])
        stage = self.producer.get(v)
        if stage is None or self.floats(v) != stage.out:
            return False
        tensors = [
            np.ascontiguousarray(self.model.tensor(i, "scale"), np.float32),
            np.ascontiguousarray(self.model.tensor(i, "shift"), np.float32),
        ]
        if self._threshold_through_affine(i, v, stage, tensors):
            return True
        if stage.affine_out is None:
            stage.affine_out = self._output(i, True)
            stage.params["aff_relu"] = int(self.relu[i])
            stage.tensors[7:9] = tensors
        elif stage.kind == CONV and stage.affine2_out is None:  # a stem read by two blocks' BatchNorms
            stage.affine2_out = self._output(i, True)
            stage.params["aff2_relu"] = int(self.relu[i])
            stage.tensors[9:11] = tensors
        else:
            return False
        stage.fused.append(i)
        if stage.kind == CONV and sorted(self.readers[v]) == sorted(stage.fused) and v != self.n - 1:
            stage.params["no_store"] = 1  # nothing reads the floats themselves: only their signs are written
        self.done_at[i] = self.stages.index(stage)
        return True

    def _threshold_through_affine(self, i: int, v: int, stage: Stage, tensors: list) -> bool:
        """A binary conv whose value only this affine reads, for a sign: the conv thresholds its
        dot products through both (its own scale, ReLU, then the affine) and writes the sign bits
        alone, so neither the float map nor a float epilogue is computed."""
        if stage.kind != BCONV or stage.source2 is not None or stage.affine_out is not None or "pool" in stage.params:
            return False
        if self.readers[v] != [i] or v in self.placed:
            return False
        k = stage.source.channels * stage.params["kh"] * stage.params["kw"]
        then = (*tensors, self.relu[i])
        stage.tensors[3:5] = _thresholds(stage.tensors[1], stage.tensors[2], self.relu[v], k, then)
        stage.out = self._output(i, True)
        del self.producer[v], self.stored[v]
        stage.fused.append(i)
        self.done_at[i] = self.stages.index(stage)
        return True

    def _fuse_pool(self, i: int) -> bool:
        """A 2x2 max-pool of a binary conv's float output (or fused sum) read only here: the conv's
        epilogue writes the pooled map, so the full-resolution one is never stored."""
        v = self._resolve(self.inputs[i][0])
        stage = self.producer.get(v)
        if stage is None or stage.kind != BCONV or stage.affine_out is not None or "pool" in stage.params:
            return False
        if self.readers[v] != [i] or v in self.placed or self.layout[stage.out.buf].bits:
            return False
        height, width = stage.out.height, stage.out.width
        if height % 2 or width % 2:
            return False
        stage.out = self._output(i, False)
        stage.params.update(pool=2, ho=height, wo=width)
        del self.producer[v], self.stored[v]
        self.producer[i] = stage
        self.done_at[i] = self.stages.index(stage)
        return True

    def _fuse_add(self, i: int) -> bool:
        """a + b where b is a binary conv's output read only here, and a is complete before that conv
        runs: the conv's epilogue writes the sum (no separate pass over both maps)."""
        for a, b in (self.inputs[i], self.inputs[i][::-1]):
            v = self._resolve(b)
            stage = self.producer.get(v)
            if stage is None or stage.kind != BCONV or self.readers[v] != [i] or v in self.placed:
                continue
            if stage.affine_out is not None:
                continue
            other = self.floats(a)
            position = self.stages.index(stage)
            if any(other.pad) or stage.source2 is not None or self.done_at[self._base(a)] >= position:
                continue
            stage.out = self._sum_output(i, position, only=a)
            stage.source2 = other
            del self.producer[v], self.stored[v]
            self.producer[i] = stage
            self.done_at[i] = position
            return True
        return False

    def _sum_output(self, i: int, position: int, only: int | None = None) -> View:
        """Where add i, run by stage `position`, writes: in place over an input (`only` that one) whose
        buffer holds nothing read later, so the sum takes no second map (and less cache); else a new buffer."""
        if i not in self.placed:
            for j in self.inputs[i] if only is None else [only]:
                v, view = self._resolve(j), self.floats(j)
                buffer = self.layout[view.buf]
                whole = view == View(view.buf, 0, buffer.channels, buffer.height, buffer.width)
                if v >= 0 and whole and self.shapes[i] == self.shapes[v] and self._read_before(v, i, position):
                    self.stored[i] = view
                    return view
        return self._output(i, False)

    def _read_before(self, v: int, i: int, position: int) -> bool:
        """Whether every reader of value v but op i (and of the parts of v, a concat) runs before stage
        `position`: then v's buffer may be overwritten from there on."""
        parts = self.inputs[v] if self.graph[v]["op"] == "concat" else []
        for r in self.readers[v]:
            if r == i:
                continue
            if self.graph[r]["op"] in VIEWS or r not in self.done_at or self.done_at[r] >= position:
                return False
        return all(self._read_before(self._resolve(p), v, position) for p in parts)

    def _base(self, v: int) -> int:
        """The stored value a view op (pad, flatten) or fused ReLU reads."""
        v = self._resolve(v)
        while v >= 0 and self.graph[v]["op"] in VIEWS:
            v = self._resolve(self.inputs[v][0])
        return v

    def _is_stored_bits(self, v: int) -> bool:
        return self.layout[self.stored[self._base(v)].buf].bits

    def _lower_layer(self, i: int, only_bits: bool) -> None:
        op, kind = self.graph[i], self.graph[i]["op"]
        where = f"op {i} ({kind})"
        binary = kind.startswith("bin")
        binary_input = binary and bool(op["binary_input"])
        stride, padding = int(op.get("stride", 1)), int(op.get("padding", 0))
        scale, shift = self.model.tensor(i, "scale"), self.model.tensor(i, "shift")
        source_value = self.inputs[i][0]
        source = self.bits(source_value) if binary_input else self.floats(source_value)
        c, h, w = source.channels, source.height, source.width
        if kind in ("linear", "binlinear"):
            if any(source.pad):
                raise Unsupported(f"{where}: padding before a linear layer")
            dense = unpack_signs(self.model.tensor(i, "bits"), int(op["in_channels"])) if binary else None
            dense = self.model.tensor(i, "weight") if dense is None else dense
            if dense.shape[1] != c * h * w:
                raise Unsupported(f"{where}: {dense.shape[1]} inputs, the map has {c}x{h}x{w}")
            weight = dense.reshape(len(dense), c, h, w)  # flatten order is (C, H, W)
        else:
            weight = unpack_signs(self.model.tensor(i, "bits"), int(op["in_channels"])) if binary else None
            weight = self.model.tensor(i, "weight") if weight is None else weight
        kh, kw = weight.shape[2:]
        fix = None
        if binary_input and padding:
            if any(source.pad):
                raise Unsupported(f"{where}: built-in padding after a pad op")
            fix = _padding_fix(weight, h, w, padding)
        if binary_input and stride != 1:
            raise Unsupported(f"{where}: a strided binary convolution")
        source = self.read(source.padded((padding,) * 4), "ones" if binary_input else "zero", where)
        out = self._output(i, only_bits)
        stage = Stage(BCONV if binary_input else CONV, out, source)
        cout = len(scale)
        cout_pad = -(-cout // BLOCK) * BLOCK
        stage.params.update(kh=kh, kw=kw, cout_pad=cout_pad, stride=stride, relu=int(self.relu[i]))
        if binary_input:  # [cout_pad / 16][kh][kw][words][16]
            words = -(-c // 64)
            bits = np.zeros((cout_pad, kh, kw, words), np.uint64)
            bits[:cout] = pack_signs(weight)
            packed = bits.reshape(cout_pad // BLOCK, BLOCK, kh, kw, words).transpose(0, 2, 3, 4, 1)
            stage.tensors[0] = np.ascontiguousarray(packed)
        else:  # [kh][kw][cin][cout_pad]
            dense = np.zeros((kh, kw, c, cout_pad), np.float32)
            dense[..., :cout] = weight.transpose(2, 3, 1, 0)
            stage.tensors[0] = dense
        stage.tensors[1:3] = [np.ascontiguousarray(scale, np.float32), np.ascontiguousarray(shift, np.float32)]
        if binary_input and only_bits:
            stage.tensors[3:5] = _thresholds(scale, shift, self.relu[i], c * kh * kw)
        if fix is not None:  # [row class][x][cout_pad], with slack for 8-wide vector reads
            table, row_class = fix
            fix_w = table.shape[2] + PX
            padded = np.zeros((table.shape[0], fix_w, cout_pad), np.int32)
            padded[:, : table.shape[2], :cout] = table.transpose(0, 2, 1)
            stage.tensors[5:7] = [padded, row_class]
            stage.params["fix_w"] = fix_w
        if not only_bits:
            self.producer[i] = stage
        self.stages.append(stage)

    # -- numbers for the C side ----------------------------------------------------------------
    def _finish(self, result: View, flat: bool) -> CompiledPlan:
        def place(view: View) -> tuple[int, int, int, int]:
            """(offset of the view's first read position, row, pix, plane)."""
            buffer = self.layout[view.buf]
            row, pix, plane = buffer.strides()
            t, _, left, _ = view.pad
            offset = buffer.origin() - t * row - left * pix + (0 if buffer.bits else view.c0)
            return offset, row, pix, plane

        share = self._share_buffers(result.buf)
        stages = []
        for s in self.stages:
            p = dict.fromkeys(FIELDS, 0)
            p.update(size=1, stride=1, in_buf=-1, in2_buf=-1, aff_buf=-1, aff2_buf=-1)
            p.update(kind=s.kind, out_buf=s.out.buf, ho=s.out.height, wo=s.out.width, cout=s.out.channels)
            out = self.layout[s.out.buf]
            p["out_mode"] = OUT_BITS if out.bits else OUT_FLOAT
            p["out_off"], p["out_row"], p["out_pix"], p["out_plane"] = place(s.out)
            if s.source is not None:
                p["in_buf"] = s.source.buf
                p["in_off"], p["in_row"], p["in_pix"], p["in_plane"] = place(s.source)
                p.update(cin=s.source.channels, words=-(-s.source.channels // 64))
            else:
                p["cin"] = s.out.channels
            if s.source2 is not None:
                p["in2_buf"] = s.source2.buf
                p["in2_off"], p["in2_row"], p["in2_pix"], _ = place(s.source2)
            if s.affine_out is not None:
                p["aff_buf"] = s.affine_out.buf
                p["aff_off"], p["aff_row"], _, p["aff_plane"] = place(s.affine_out)
            if s.affine2_out is not None:
                p["aff2_buf"] = s.affine2_out.buf
                p["aff2_off"], p["aff2_row"], _, p["aff2_plane"] = place(s.affine2_out)
            p.update(s.params)
            for name in ("in_buf", "out_buf", "in2_buf", "aff_buf", "aff2_buf"):
                p[name] = share.get(p[name], p[name])
            stages.append((tuple(int(p[f]) for f in FIELDS), *s.tensors))
        row, pix, _ = self.layout[result.buf].strides()
        offset = place(result)[0]
        output = (share[result.buf], result.channels, result.height, result.width, offset, row, pix)
        kept = sorted(set(share.values()))
        assert kept == list(range(len(kept)))
        shape = (
            (result.channels * result.height * result.width,)
            if flat
            else (
                result.channels,
                result.height,
                result.width,
            )
        )
        layout = [None] * len(kept)
        for buf, physical in share.items():
            layout[physical] = self.layout[buf]
        return CompiledPlan(stages, [b.initial() for b in layout], output, self.shapes[-1], shape, layout)

    def _share_buffers(self, result: int) -> dict[int, int]:
        """Buffer -> memory it uses. Buffers of the same layout (shape, border and its fill) whose
        lifetimes (first to last stage touching them) do not overlap share one: the network's working
        set then stays in cache (the hourglass allocated 6 MB for 67 values). Borders are written once
        and stages write only interiors, so a shared buffer's border stays what every user needs."""
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for k, stage in enumerate(self.stages):
            for view in (stage.out, stage.source, stage.source2, stage.affine_out, stage.affine2_out):
                if view is not None:
                    first.setdefault(view.buf, k)
                    last[view.buf] = k
        last[result] = len(self.stages)  # read after the last stage
        busy: dict[tuple, list[list[int]]] = {}  # layout -> [[physical, last stage using it]]
        share: dict[int, int] = {}
        count = 0
        for buf in sorted(first, key=first.get):  # buffers no stage touches (superseded by a fusion) go
            b = self.layout[buf]
            key = (b.bits, b.channels, b.height, b.width, tuple(b.border), b.fill)
            for slot in busy.get(key, []):
                if slot[1] < first[buf]:
                    share[buf], slot[1] = slot[0], last[buf]
                    break
            else:
                share[buf], count = count, count + 1
                busy.setdefault(key, []).append([share[buf], last[buf]])
        return share


def compile_plan(model: PackedModel) -> CompiledPlan:
    return _Compiler(model).compile()
