"""One registry of model architectures, keyed by readable names (timm's create_model pattern)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import registrar

MODELS: dict[str, Callable[..., nn.Module]] = {}


register_model = registrar(MODELS, "model")


def create_model(name: str, **options) -> nn.Module:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](**options)
