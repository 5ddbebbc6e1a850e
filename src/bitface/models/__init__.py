"""Architectures assembled from bitface.nn, by registry name."""

from . import hourglass, regression  # noqa: F401  (registers the models)
from .registry import MODELS, create_model, register_model

__all__ = ["MODELS", "create_model", "register_model"]
