"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017), as Real-to-Binary (Martinez et al., ICLR 2020)
uses it to make a binary network attend where its real twin does: at the output of every residual
block, the spatial map of the channels' mean squared activation, scaled to unit length per image,
matched to the teacher's at the same block. Widths may differ (the maps average over channels); the
two networks need the same blocks at the same resolutions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..nn.blocks import Residual


def residual_blocks(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The network's residual blocks in the order it registers them (stem, hourglass, stack)."""
    return [m for m in network.modules() if isinstance(m, Residual)]


@contextmanager
def record_blocks(network: torch.nn.Module, into: list | None) -> Iterator[None]:
    """While open, append the output of each of the network's residual blocks to `into` as it runs (a
    no-op when `into` is None). The hooks are removed on exit, so copies of the network (the moving
    average) never carry them."""
    if into is None:
        yield
        return
    handles = [m.register_forward_hook(lambda _m, _i, out: into.append(out)) for m in residual_blocks(network)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H * W): the mean over channels of the squared activation, unit length per image."""
    return F.normalize(features.pow(2).mean(1).flatten(1), dim=1)


def attention_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Sum over blocks of the mean squared difference of the attention maps (the reference
    implementation's form; the recipe's weight multiplies half of it, as its beta / 2 does)."""
    if len(student) != len(teacher):
        raise ValueError(f"attention: the student ran {len(student)} residual blocks, the teacher {len(teacher)}")
    total = student[0].new_zeros(())
    for index, (s, t) in enumerate(zip(student, teacher, strict=True)):
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(
                f"attention: residual block {index} gives {tuple(s.shape)} in the student and {tuple(t.shape)} "
                "in the teacher (batch and resolution must match)"
            )
        total = total + (attention_map(s) - attention_map(t)).pow(2).mean()
    return total


@torch.no_grad()
def check_matched_blocks(student: torch.nn.Module, teacher: torch.nn.Module, input_shape: tuple) -> int:
    """Run both networks once on a zero image and check that their residual blocks pair up (same count,
    same resolutions); returns the number of pairs. Raises ValueError naming the first mismatch."""
    outputs: dict[str, list] = {"student": [], "teacher": []}
    for name, network in (("student", student), ("teacher", teacher)):
        was_training = network.training
        network.eval()
        try:
            with record_blocks(network, outputs[name]):
                network(torch.zeros(1, *input_shape))
        finally:
            network.train(was_training)
    if not outputs["student"]:
        raise ValueError("attention: the student has no residual blocks to match")
    attention_loss(outputs["student"], outputs["teacher"])  # raises on a count or shape mismatch
    return len(outputs["student"])
