"""Crops, augmentation, heatmaps and the sample -> network-input pipeline (torch-free, except
`bitface.data.dataset`, which needs the `train` extra)."""

from .augment import AugmentSpec
from .crop import CropSpec
from .geometry import OutputSpace
from .heatmaps import Decoded, decode_argmax, decode_soft_argmax, gaussian_heatmaps
from .pipeline import Example, InputSpec, make_example, to_original

__all__ = [
    "AugmentSpec",
    "CropSpec",
    "Decoded",
    "Example",
    "InputSpec",
    "OutputSpace",
    "decode_argmax",
    "decode_soft_argmax",
    "gaussian_heatmaps",
    "make_example",
    "to_original",
]
