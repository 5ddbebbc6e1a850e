"""bitface: facial landmark localization with tiny binarized, pruned and quantized networks."""

__version__ = "0.1.0"
