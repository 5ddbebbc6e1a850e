"""Per-layer bit-widths, memory and MACs, counted as the papers count them (larq's summary, in torch).

Memory: 32 bits per real weight (8 for a real layer trained with int8 weights), 1 bit per binary
weight, plus 32 bits per scale (XNOR's per-channel alpha, ACN's one Â per layer, an int8 layer's
step per channel). BatchNorm counts its 2 affine values per channel, or 33 bits when only a sign
reads it (a pre-activation BatchNorm before a binary-input conv), which the packed file stores as a
threshold and a direction (`bitface.export.convert.sign_only_affines`). ACN's amplitude matrix A is
training-only and not counted. MACs are
binary when both the weights and the inputs of a layer are 1-bit, float otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..nn.blocks import PreActConv, create_block
from ..nn.layers import QuantMixin


@dataclass
class LayerRow:
    name: str
    kind: str
    params: int
    weight_bits: int
    input_bits: int
    memory_bits: int
    macs: int
    binary_macs: bool


@dataclass
class Summary:
    rows: list[LayerRow]

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def memory_bits(self) -> int:
        return sum(r.memory_bits for r in self.rows)

    @property
    def fp32_bits(self) -> int:
        return 32 * self.params

    @property
    def binary_macs(self) -> int:
        return sum(r.macs for r in self.rows if r.binary_macs)

    @property
    def float_macs(self) -> int:
        return sum(r.macs for r in self.rows if not r.binary_macs)

    def totals(self) -> dict:
        return {
            "params": self.params,
            "memory_bits": self.memory_bits,
            "memory_kib": self.memory_bits / 8 / 1024,
            "fp32_kib": self.fp32_bits / 8 / 1024,
            "compression": self.fp32_bits / self.memory_bits if self.memory_bits else 1.0,
            "binary_macs": self.binary_macs,
            "float_macs": self.float_macs,
        }

    def to_dict(self) -> dict:
        return {"layers": [asdict(r) for r in self.rows], "totals": self.totals()}

    def table(self) -> str:
        name = max([len("layer")] + [len(r.name) for r in self.rows]) + 2  # deep modules have long names
        kind = max([len("kind")] + [len(r.kind) for r in self.rows]) + 2
        head = f"{'layer':<{name}}{'kind':<{kind}}{'params':>9}{'w bits':>7}{'in bits':>8}{'memory':>11}{'MACs':>13}"
        head += "  mac"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r.name:<{name}}{r.kind:<{kind}}{r.params:>9,}{r.weight_bits:>7}{r.input_bits:>8}"
                f"{_bytes(r.memory_bits):>11}{r.macs:>13,}  {'binary' if r.binary_macs else 'float'}"
            )
        t = self.totals()
        lines += [
            "-" * len(head),
            f"params {t['params']:,} | memory {_bytes(t['memory_bits'])} (FP32 {_bytes(self.fp32_bits)}, "
            f"{t['compression']:.1f}x smaller) | binary MACs {t['binary_macs']:,} | float MACs {t['float_macs']:,}",
        ]
        return "\n".join(lines)


def _bytes(bits: int) -> str:
    return f"{bits / 8 / 1024:.2f} KiB"


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> Summary:
    """Summarize `model` for one input of `input_shape` (C, H, W)."""
    outputs: dict[str, torch.Size] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=name: outputs.__setitem__(name, out.shape))
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    before_sign = {  # BatchNorms only a sign reads
        id(m[0]) for m in model.modules() if isinstance(m, PreActConv) and m[-1].input_quantizer is not None
    }
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            rows.append(_weight_layer(name, m, outputs[name]))
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and m.affine:
            bits = 33 if id(m) in before_sign else 64
            rows.append(LayerRow(name, type(m).__name__, 2 * m.num_features, 32, 32, bits * m.num_features, 0, False))
    return Summary(rows)


def _weight_layer(name: str, m: nn.Module, out_shape: torch.Size) -> LayerRow:
    quantized = isinstance(m, QuantMixin)
    quantizer = m.kernel_quantizer if quantized else None
    weight_bits = m.weight_bits if quantized else 32
    input_bits = m.input_bits if quantized else 32
    weights = m.weight.numel()
    bias = m.bias.numel() if m.bias is not None else 0
    scales = quantizer.extra_parameters() if quantizer is not None else 0
    per_output = weights // m.weight.shape[0]
    spatial = out_shape[2] * out_shape[3] if len(out_shape) == 4 else 1
    kind = type(m).__name__ + (
        f"[{m.kernel_quantizer_name}" + (",sign]" if input_bits == 1 else "]") if quantizer else ""
    )
    return LayerRow(
        name=name,
        kind=kind,
        params=weights + bias + scales,
        weight_bits=weight_bits,
        input_bits=input_bits,
        memory_bits=weights * weight_bits + 32 * (bias + scales),
        macs=m.weight.shape[0] * spatial * per_output,
        binary_macs=weight_bits == 1 and input_bits == 1,
    )


# The blocks of Bulat & Tzimiropoulos (ICCV 2017) as its binary comparisons set them: (label, block,
# width factor, figure, the paper's whole-network parameters in millions and MPII PCKh, from its
# Tables 2 and 4). Theirs count a whole hourglass of such blocks; ours count one block, so the ratios
# to the bottleneck are what compare.
PAPER_BLOCKS = (
    ("bottleneck", "bottleneck", 1.0, "4a", 3.5, 67.2),
    ("wider", "wider", 1.0, "4b", 11.3, 70.7),
    ("multiscale", "multiscale", 1.0, "4c", 4.0, 69.3),
    ("multiscale_no1x1", "multiscale_no1x1", 1.0, "4d", 9.3, 75.5),
    ("hpm", "hpm", 1.0, "4e", 6.2, 76.0),
    ("hpm at 3/4 width", "hpm", 0.75, "1b", 4.0, 72.7),  # Table 4: matched to the bottleneck
)


def compare_blocks(width: int = 256, binarization: str = "xnor") -> list[dict]:
    """One block of each kind at `width` channels in and out (the Fig. 1b variant at 3/4 of it): its
    parameters and memory as the papers count them, beside the paper's network-level figures."""
    rows = []
    for label, name, factor, figure, paper_params, paper_pckh in PAPER_BLOCKS:
        channels = round(width * factor)
        block = summarize(create_block(name, channels, channels, binarization), (channels, 8, 8))
        rows.append(
            {
                "block": label,
                "figure": figure,
                "channels": channels,
                "params": block.params,
                "memory_bits": block.memory_bits,
                "paper_params_m": paper_params,
                "paper_pckh": paper_pckh,
            }
        )
    for row in rows:
        row["params_vs_bottleneck"] = row["params"] / rows[0]["params"]
        row["paper_params_vs_bottleneck"] = row["paper_params_m"] / rows[0]["paper_params_m"]
    return rows


def blocks_table(rows: list[dict], binarization: str) -> str:
    head = (
        f"{'block':<18}{'fig':<5}{'channels':>9}{'params':>10}{'memory':>12}{'x bottleneck':>14}"
        f"   | paper: {'params':>7}{'x bottleneck':>14}{'PCKh':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['block']:<18}{r['figure']:<5}{r['channels']:>9}{r['params']:>10,}{_bytes(r['memory_bits']):>12}"
            f"{r['params_vs_bottleneck']:>14.2f}   | {'':>7}{r['paper_params_m']:>6.1f}M"
            f"{r['paper_params_vs_bottleneck']:>14.2f}{r['paper_pckh']:>6.1f}%"
        )
    lines += [
        "-" * len(head),
        f"ours: one block, {binarization}, memory as the papers count it (1 bit per binary weight, 32 per real "
        "value and scale);",
        "paper: Bulat & Tzimiropoulos (ICCV 2017) Tables 2 and 4, whole binary hourglass networks (theirs), MPII PCKh;",
        "the parameter-matched pair of Table 4 is the bottleneck and the final block at 3/4 width (Fig. 1b).",
    ]
    return "\n".join(lines)
