"""Image I/O. Inside bitface images are numpy uint8 arrays in RGB order (H, W, 3) or gray (H, W);
the conversion from OpenCV's BGR happens here, once."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .sample import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")


def load_image(path: str | Path, mode: str = "rgb") -> np.ndarray:
    """Decode an image file into uint8 RGB (H, W, 3) or gray (H, W). Raises DataError naming the file."""
    if mode not in ("rgb", "gray"):
        raise ValueError(f"mode must be 'rgb' or 'gray', not {mode!r}")
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read image file ({exc.strerror or exc})") from None
    if data.size == 0:
        raise DataError(f"{path}: image file is empty (0 bytes)")
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:].tobytes():
        # libjpeg decodes a cut-off JPEG with a grey bottom and only a warning: refuse it instead.
        raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
    flag = cv2.IMREAD_GRAYSCALE if mode == "gray" else cv2.IMREAD_COLOR
    image = cv2.imdecode(data, flag)
    if image is None:
        raise DataError(f"{path}: not a decodable image ({data.size} bytes)")
    if mode == "rgb":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: image file is empty (0 bytes)")
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def to_rgb(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image


def find_image(stem_path: Path) -> Path | None:
    """The image beside an annotation file: same name, any known image extension."""
    for ext in IMAGE_EXTENSIONS:
        for candidate in (stem_path.with_suffix(ext), stem_path.with_suffix(ext.upper())):
            if candidate.is_file():
                return candidate
    return None
