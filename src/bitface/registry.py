"""Name -> factory tables filled by decorators (models, blocks, detectors): torch-free, so any part
of bitface can keep one."""

from __future__ import annotations


def registrar(table: dict, kind: str):
    """The `@register_<kind>(name)` decorator for `table`; a name registered twice is an error."""

    def register(name: str):
        def add(factory):
            if name in table:
                raise ValueError(f"{kind} {name!r} is registered twice")
            table[name] = factory
            return factory

        return add

    return register
