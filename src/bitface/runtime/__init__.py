"""Runs packed model files with numpy (and, where built, native kernels); never imports torch."""

from .model import PackedLandmarker, load_packed_model

__all__ = ["PackedLandmarker", "load_packed_model"]
