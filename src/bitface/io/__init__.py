"""Annotation readers. Every format becomes a list of `Sample`s with 0-based pixel-centre points.

    result = read_annotations("../shared/data/cuhk_lfw_net_5pt/testImageList.txt")
    result.samples, result.skipped, result.errors

The format is detected from the source (a file or a folder) and can be forced with `format=`.
A file holding several named subsets is read one subset at a time with `FILE#SUBSET` (MPII:
`mpii_human_pose_v1_u12_1.mat#train`, `#val`, `#all`, the default).
Lenient mode (the default) skips bad samples and records why; `strict=True` raises at the first.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .aflw2000 import read_aflw2000
from .dlib_xml import read_dlib_xml
from .images import image_size, load_image
from .lists import read_cuhk, read_mtfl, read_wflw, sniff_list_format
from .mpii import read_mpii
from .pts import annotation_files, read_annotation_files
from .sample import Collector, DataError, ReadResult, Sample
from .udacity import read_udacity_csv

__all__ = [
    "FORMATS",
    "DataError",
    "ReadResult",
    "Sample",
    "detect_format",
    "image_size",
    "load_image",
    "read_annotations",
]

FORMATS = {
    "pts": "iBUG .pts files (1-based), a file or a folder of images with .pts beside them",
    "ljson": "menpo .ljson files ([y, x] points), a file or a folder",
    "pts+ljson": "a folder mixing .pts and .ljson annotations",
    "cuhk": "CUHK list: path left right top bottom x1 y1 ... x5 y5 (0-based)",
    "mtfl": "MTFL list: path x1..x5 y1..y5 gender smile glasses pose (1-based)",
    "wflw": "WFLW list: 196 coordinates, box, 6 attributes, path",
    "dlib_xml": "dlib imglab XML with <part> landmarks",
    "udacity_csv": "Udacity facial-keypoints CSV (name, x0, y0, ...)",
    "aflw2000": "AFLW2000-3D .mat files (pt3d_68, Pose_Para), a file or a folder",
    "mpii": "MPII Human Pose mpii_human_pose_v1_u12_1.mat (16 joints, head boxes); FILE#train / #val / #all",
}

CHECKS = ("none", "exists", "header", "decode")
# A point further outside the image than this fraction of the image's larger side is an error.
OUTSIDE_TOLERANCE = 0.25


def split_subset(source: str | Path) -> tuple[Path, str | None]:
    """`FILE#SUBSET` -> (FILE, SUBSET); a plain path -> (path, None)."""
    text = str(source)
    if "#" in Path(text).name:
        path, subset = text.rsplit("#", 1)
        return Path(path), subset
    return Path(text), None


def _is_mpii(path: Path) -> bool:
    from scipy.io import whosmat

    try:
        return any(name == "RELEASE" for name, _, _ in whosmat(path))
    except Exception:  # not a .mat file scipy can list: the AFLW2000 reader reports why
        return False


def detect_format(source: str | Path) -> str:
    source, _ = split_subset(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    if source.is_dir():
        suffixes = {p.suffix.lower() for p in source.rglob("*") if p.is_file()}
        found = [fmt for fmt, ext in (("pts", ".pts"), ("ljson", ".ljson")) if ext in suffixes]
        if found:
            return "+".join(found)
        if ".mat" in suffixes:
            return "aflw2000"
        raise DataError(f"{source}: folder holds no .pts, .ljson or .mat annotations")
    suffix = source.suffix.lower()
    by_suffix = {".pts": "pts", ".ljson": "ljson", ".xml": "dlib_xml", ".csv": "udacity_csv", ".mat": "aflw2000"}
    if suffix == ".mat" and _is_mpii(source):
        return "mpii"
    if suffix in by_suffix:
        return by_suffix[suffix]
    if source.stat().st_size == 0:
        raise DataError(f"{source}: empty file")
    sniffed = sniff_list_format(source)
    if sniffed:
        return sniffed
    raise DataError(f"{source}: cannot tell the annotation format; pass one of: {', '.join(FORMATS)}")


def read_annotations(
    source: str | Path,
    format: str | None = None,
    *,
    strict: bool = False,
    check: str = "exists",
    image_root: str | Path | None = None,
) -> ReadResult:
    """Read every face of `source`.

    check: how far images are verified before a sample is accepted: "none"; "exists" (file present
    and non-empty); "header" (also readable size, and points not far outside the image); "decode"
    (also fully decodable pixels).
    """
    source, subset = split_subset(source)
    if check not in CHECKS:
        raise ValueError(f"check must be one of {CHECKS}, not {check!r}")
    if format is None:
        format = detect_format(source)
    elif format not in FORMATS:
        raise DataError(f"unknown annotation format {format!r}; known: {', '.join(FORMATS)}")
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    if subset is not None and format != "mpii":
        raise DataError(f"{source}#{subset}: format {format!r} has no subsets")
    root = Path(image_root) if image_root is not None else None
    result = ReadResult(format=format, source=source)
    collector = Collector(result, strict)
    if format in ("pts", "ljson", "pts+ljson"):
        suffixes = tuple("." + part for part in format.split("+"))
        read_annotation_files(annotation_files(source, suffixes), collector, format)
    elif format == "aflw2000":
        read_aflw2000(annotation_files(source, (".mat",)), collector)
    elif source.is_dir():
        raise DataError(f"{source}: format {format!r} reads a file, not a folder")
    elif format == "cuhk":
        read_cuhk(source, collector)
    elif format == "mtfl":
        read_mtfl(source, collector)
    elif format == "wflw":
        read_wflw(source, collector, root)
    elif format == "dlib_xml":
        read_dlib_xml(source, collector)
    elif format == "udacity_csv":
        read_udacity_csv(source, collector, root)
    elif format == "mpii":
        read_mpii(source, collector, subset or "all", root)
    _check_counts(result, collector)
    if check != "none":
        _check_images(result, collector, check)
    if not result.samples:
        detail = f"; first error: {result.errors[0]}" if result.errors else ""
        raise DataError(f"{source}: no usable faces ({result.skipped} skipped){detail}")
    return result


def _check_counts(result: ReadResult, collector: Collector) -> None:
    """One source holds one landmark scheme: faces with another point count than the most common are bad."""
    counts = Counter(s.num_points for s in result.samples)
    if len(counts) <= 1:
        return
    expected = counts.most_common(1)[0][0]
    kept = []
    for sample in result.samples:
        if sample.num_points == expected:
            kept.append(sample)
        else:
            collector.fail(
                f"{sample.source}: {sample.num_points} points, the other faces of this source have {expected}"
            )
    result.samples = kept


def _check_images(result: ReadResult, collector: Collector, check: str) -> None:
    kept = []
    sizes: dict[Path, tuple[int, int]] = {}
    for sample in result.samples:
        try:
            path = sample.image_path
            if check == "exists":
                if not path.is_file():
                    raise DataError(f"{sample.source}: image {path} not found")
                if path.stat().st_size == 0:
                    raise DataError(f"{sample.source}: image {path} is empty (0 bytes)")
            else:
                if path not in sizes:
                    if check == "decode":
                        h, w = load_image(path, "gray").shape
                        sizes[path] = (w, h)
                    else:
                        sizes[path] = image_size(path)
                _check_inside(sample, *sizes[path])
        except DataError as exc:
            message = str(exc)
            if not message.startswith(sample.source):
                message = f"{sample.source}: {message}"
            collector.fail(message)
            continue
        kept.append(sample)
    result.samples = kept


def _check_inside(sample: Sample, width: int, height: int) -> None:
    margin = OUTSIDE_TOLERANCE * max(width, height)
    lo = np.array([-margin, -margin])
    hi = np.array([width - 1 + margin, height - 1 + margin])
    outside = np.flatnonzero(((sample.points < lo) | (sample.points > hi)).any(1))
    if outside.size:
        i = int(outside[0])
        raise DataError(
            f"{sample.source}: point {i} at {sample.points[i].round(2).tolist()} is far outside the "
            f"{width}x{height} image {sample.image_path}"
        )
