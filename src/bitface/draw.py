"""Drawing landmarks and boxes on images, for eyeballing data and predictions."""

from __future__ import annotations

import cv2
import numpy as np

from .io.images import to_rgb


def draw_landmarks(
    image: np.ndarray,
    points: np.ndarray,
    box: np.ndarray | None = None,
    numbers: bool = False,
    min_side: int = 256,
    colour=(0, 255, 0),
) -> np.ndarray:
    """An RGB copy of `image` with the points (and box) drawn; small images are enlarged first so
    the marks stay legible. Sub-pixel positions are kept by drawing with fixed-point coordinates."""
    canvas = to_rgb(image).copy()
    zoom = max(1.0, min_side / min(canvas.shape[:2]))
    if zoom > 1:
        canvas = cv2.resize(canvas, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
    shift = 4  # fractional bits for cv2's sub-pixel drawing

    def fixed(xy):
        # pixel-centre coordinates scale about the pixel edge: x' = (x + 0.5) * zoom - 0.5
        return tuple(int(round(((v + 0.5) * zoom - 0.5) * (1 << shift))) for v in xy)

    radius = max(1, round(min(canvas.shape[:2]) / 200))
    if box is not None:
        x0, y0, x1, y1 = box
        cv2.rectangle(canvas, fixed((x0, y0)), fixed((x1, y1)), (255, 200, 0), radius, cv2.LINE_AA, shift)
    for i, p in enumerate(np.asarray(points, dtype=np.float64)):
        if not np.isfinite(p).all():
            continue
        cv2.circle(canvas, fixed(p), radius << shift, colour, -1, cv2.LINE_AA, shift)
        if numbers:
            x, y = ((v + 0.5) * zoom - 0.5 for v in p)
            cv2.putText(
                canvas, str(i), (int(x) + 2, int(y) - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 0), 1, cv2.LINE_AA
            )
    return canvas


def save_image(path, image: np.ndarray) -> None:
    """Write an RGB or gray uint8 image; the format follows the file extension."""
    from .io.sample import DataError

    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    try:
        ok = cv2.imwrite(str(path), bgr)
    except cv2.error as exc:
        raise DataError(f"{path}: cannot write image ({exc.err})") from None
    if not ok:
        raise DataError(f"{path}: cannot write image (unknown extension or unwritable folder)")
