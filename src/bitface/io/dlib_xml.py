"""dlib imglab XML: <image file=...><box top left width height><part name x y/>...</box></image>."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .sample import Collector, DataError, Sample, make_points


def read_dlib_xml(path: Path, collector: Collector) -> None:
    """Points are 0-based integers. A dlib box covers pixels left .. left+width-1, so its continuous
    extent in our pixel-centre coordinates is [left - 0.5, left + width - 0.5]."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{path}: not well-formed XML ({exc})") from None
    images = root.find("images")
    if root.tag != "dataset" or images is None:
        raise DataError(f"{path}: not a dlib imglab dataset (expected <dataset><images>)")
    for image_index, image in enumerate(images.iter("image")):
        name = image.get("file")
        for box_index, box in enumerate(image.iter("box")):
            where = f"{path}: image {image_index} ({name}) box {box_index}"
            if box.get("ignore") == "1":
                continue
            try:
                if name is None:
                    raise DataError(f"{where}: <image> without a file attribute")
                left, top, width, height = (float(box.get(k, "nan")) for k in ("left", "top", "width", "height"))
                parts = sorted(box.iter("part"), key=lambda p: int(p.get("name", "-1")))
                if not parts:
                    raise DataError(f"{where}: box has no <part> landmarks")
                points = make_points([[float(p.get("x", "nan")), float(p.get("y", "nan"))] for p in parts], None, where)
                if not np.isfinite([left, top, width, height]).all() or width <= 0 or height <= 0:
                    raise DataError(f"{where}: bad box attributes")
            except ValueError as exc:
                collector.fail(str(exc) if isinstance(exc, DataError) else f"{where}: {exc}")
                continue
            collector.add(
                Sample(
                    image_path=path.parent / name,
                    points=points,
                    box=np.array([left - 0.5, top - 0.5, left + width - 0.5, top + height - 0.5]),
                    source=f"{path.name}:{name}#{box_index}",
                )
            )
