"""The plain numpy reference of every packed op: the definition native kernels are tested against
bit for bit. Clear rather than fast. Activations are float32 (B, C, H, W) or (B, F)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..export.format import PackedModel, pack_signs, unpack_signs

CHUNK = 16  # images per popcount chunk: bounds the (B, Ho, Wo, O, words, kh, kw) temporary


def conv_real(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    """Cross-correlation with zero padding, as im2col and one matrix product (BLAS)."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    kh, kw = weight.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # (B, C, Ho, Wo, kh, kw)
    b, c, ho, wo = windows.shape[:4]
    columns = windows.transpose(0, 2, 3, 1, 4, 5).reshape(b * ho * wo, c * kh * kw)
    out = columns @ weight.reshape(len(weight), -1).T.astype(columns.dtype)
    return np.ascontiguousarray(out.reshape(b, ho, wo, -1).transpose(0, 3, 1, 2), dtype=np.float32)


def sign(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 1.0, -1.0).astype(np.float32)


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


def run_op(model: PackedModel, index: int, x: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """One op on its input(s)."""
    op = model.graph[index]
    kind = op["op"]
    if kind == "add":
        return np.sum([x, *others], axis=0, dtype=np.float32)
    if kind == "concat":
        return np.concatenate([x, *others], axis=1)
    if kind == "upsample":
        f = int(op["factor"])
        return x.repeat(f, axis=2).repeat(f, axis=3)
    if kind == "pad":
        left, right, top, bottom = op["pad"]
        return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "maxpool":
        k, stride, padding = int(op["size"]), int(op.get("stride", op["size"])), int(op.get("padding", 0))
        if padding:
            x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
        return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride].max((-1, -2))
    if kind == "flatten":
        return x.reshape(len(x), -1)
    scale, shift = model.tensor(index, "scale"), model.tensor(index, "shift")
    if kind == "affine":
        return affine(x, scale, shift)
    stride, padding = int(op.get("stride", 1)), int(op.get("padding", 0))
    if kind == "conv":
        return affine(conv_real(x, model.tensor(index, "weight"), stride, padding), scale, shift)
    if kind == "linear":
        return affine(x @ model.tensor(index, "weight").T, scale, shift)
    bits, channels = model.tensor(index, "bits"), int(op["in_channels"])
    if kind == "binconv":
        if op["binary_input"] and stride == 1 and padding == 0:
            return affine(conv_binary_dot(x, bits, channels), scale, shift)
        # Zero padding after the sign (it contributes 0) or strides: a float conv of the ±1 values,
        # exact for dot products below 2^24.
        source = sign(x) if op["binary_input"] else x
        return affine(conv_real(source, unpack_signs(bits, channels), stride, padding), scale, shift)
    if kind == "binlinear":
        if op["binary_input"]:
            return affine(linear_binary_dot(x, bits, channels), scale, shift)
        return affine(x @ unpack_signs(bits, channels).T, scale, shift)
    raise ValueError(f"unknown op {kind!r}")


def run(model: PackedModel, x: np.ndarray) -> np.ndarray:
    """The whole graph; each output is dropped once no later op reads it."""
    last_use = {}
    for index in range(len(model.graph)):
        for j in model.inputs_of(index):
            last_use[j] = index
    outputs = {-1: x}
    for index in range(len(model.graph)):
        inputs = model.inputs_of(index)
        outputs[index] = run_op(model, index, *(outputs[j] for j in inputs))
        for j in set(inputs):
            if last_use[j] == index:
                del outputs[j]
    return outputs[len(model.graph) - 1]
