"""Builds the native runtime (bitface.runtime._native) with the system C compiler.

The extension is optional: where it cannot be compiled, installation still succeeds and the runtime
runs its numpy reference instead (and says so once when a model is loaded)."""

import os

from setuptools import Extension, setup

if os.name == "nt":
    flags = ["/O2", "/fp:precise"]
else:
    # -ffp-contract=off: float epilogues must round exactly as the numpy reference does.
    # -Werror=pointer-arith: arithmetic on a void * buffer counts bytes, not floats.
    flags = ["-O3", "-std=gnu11", "-ffp-contract=off", "-fno-strict-aliasing", "-Werror=pointer-arith"]

setup(
    ext_modules=[
        Extension(
            "bitface.runtime._native",
            sources=["src/bitface/runtime/_native.c"],
            extra_compile_args=flags,
            optional=True,
        )
    ]
)
