"""One registry of model architectures, keyed by readable names (timm's create_model pattern)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def add(factory):
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = factory
        return factory

    return add


def create_model(name: str, **options) -> nn.Module:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](**options)
