"""The plain numpy reference of every packed op: the definition native kernels are tested against
bit for bit. Clear rather than fast. Activations are float32 (B, C, H, W) or (B, F)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..export.format import PackedModel, pack_signs, unpack_signs

CHUNK = 16  # images per popcount chunk: bounds the (B, Ho, Wo, O, words, kh, kw) temporary


def conv_real(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    kh, kw = weight.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))  # (B, C, Ho, Wo, kh, kw)
    return np.einsum("bchwij,ocij->bohw", windows, weight, optimize=True).astype(np.float32)


def conv_binary_dot(x: np.ndarray, bits: np.ndarray, channels: int) -> np.ndarray:
    """Integer dot products sum(sign(x) * sign(w)) by XOR and popcount: K - 2 * popcount(x ^ w)."""
    kh, kw = bits.shape[1:3]
    packed = pack_signs(x)  # (B, H, W, words)
    out = []
    for start in range(0, len(x), CHUNK):
        windows = sliding_window_view(packed[start : start + CHUNK], (kh, kw), axis=(1, 2))  # (b,Ho,Wo,words,kh,kw)
        w = np.moveaxis(bits, 3, 1)  # (O, words, kh, kw)
        mismatches = np.bitwise_count(windows[:, :, :, None] ^ w[None, None, None]).sum((-1, -2, -3), dtype=np.int64)
        out.append(np.moveaxis(channels * kh * kw - 2 * mismatches, 3, 1))  # (b, O, Ho, Wo)
    return np.concatenate(out).astype(np.int32)


def linear_binary_dot(x: np.ndarray, bits: np.ndarray, features: int) -> np.ndarray:
    packed = pack_signs(x)  # (B, words)
    mismatches = np.bitwise_count(packed[:, None, :] ^ bits[None]).sum(-1, dtype=np.int64)
    return (features - 2 * mismatches).astype(np.int32)


def affine(y: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    shape = (1, -1) + (1,) * (y.ndim - 2)
    return (y.astype(np.float32) * scale.reshape(shape) + shift.reshape(shape)).astype(np.float32)


def run_op(model: PackedModel, index: int, x: np.ndarray) -> np.ndarray:
    op = model.graph[index]
    kind = op["op"]
    if kind == "pad":
        left, right, top, bottom = op["pad"]
        return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "maxpool":
        k = op["size"]
        b, c, h, w = x.shape
        return x[:, :, : h // k * k, : w // k * k].reshape(b, c, h // k, k, w // k, k).max((3, 5))
    if kind == "flatten":
        return x.reshape(len(x), -1)
    scale, shift = model.tensor(index, "scale"), model.tensor(index, "shift")
    if kind == "conv":
        return affine(conv_real(x, model.tensor(index, "weight")), scale, shift)
    if kind == "linear":
        return affine(x @ model.tensor(index, "weight").T, scale, shift)
    bits, channels = model.tensor(index, "bits"), int(op["in_channels"])
    if kind == "binconv":
        if op["binary_input"]:
            return affine(conv_binary_dot(x, bits, channels), scale, shift)
        return affine(conv_real(x, unpack_signs(bits, channels)), scale, shift)
    if kind == "binlinear":
        if op["binary_input"]:
            return affine(linear_binary_dot(x, bits, channels), scale, shift)
        return affine(x @ unpack_signs(bits, channels).T, scale, shift)
    raise ValueError(f"unknown op {kind!r}")


def run(model: PackedModel, x: np.ndarray) -> np.ndarray:
    for index in range(len(model.graph)):
        x = run_op(model, index, x)
    return x
