"""bitface: facial landmark localization with tiny binarized, pruned and quantized networks."""

__version__ = "0.1.0"


def __getattr__(name):  # `from bitface import Landmarker` without importing OpenCV on `import bitface`
    if name in ("Landmarker", "Face"):
        from . import api

        return getattr(api, name)
    if name == "FaceTracker":
        from .track import FaceTracker

        return FaceTracker
    raise AttributeError(f"module 'bitface' has no attribute {name!r}")
