"""MPII Human Pose (Andriluka et al., CVPR 2014): the official `mpii_human_pose_v1_u12_1.mat`.

The file holds one MATLAB struct, RELEASE: `annolist(i).image.name`, and per person
`annolist(i).annorect(r)` with the head rectangle `x1 y1 x2 y2`, the rough body centre `objpos`,
the body `scale` (person height / 200 px) and `annopoints.point(k)` with `id` (0-15), `x`, `y` and
`is_visible`; `img_train(i)` is 1 for the training images (the test images carry no joints).

Each annotated person of a training image becomes one `Sample`:
- `points` (16, 2) in the MPII joint order (see `schemes.MPII16`), converted from MATLAB's 1-based
  pixels to ours; joints the annotators did not place are NaN (heatmap targets leave them blank and
  the metrics skip them), and `visible` is False for them and for joints marked occluded;
- `box` the person square: side 200 * scale around objpos (the crop recipes grow and shift it);
- `attributes["head_box"]` the head rectangle [x0, y0, x1, y1], whose diagonal sets PCKh's scale.

MPII's own validation split (Tompson et al.) is not part of this file. `#train` and `#val` select a
fixed split of the training images instead: every tenth annotated image (by its position in the
file) is held out for validation, so no image, and thus no person, is on both sides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .sample import Collector, DataError, Sample

NUM_JOINTS = 16
SUBSETS = ("all", "train", "val")
VAL_EVERY = 10  # every tenth annotated training image is held out by '#val'
PERSON_HEIGHT = 200.0  # MPII's scale unit: a person of scale 1 is 200 px tall


def _items(value) -> list:
    """A MATLAB struct array loaded with squeeze_me as a list: one struct, an array of them, or empty."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def _number(value) -> float | None:
    """A scalar field as float; None where MATLAB left it empty (or it is not a number)."""
    array = np.asarray(value)
    if array.size != 1:
        return None
    try:
        number = float(array.ravel()[0])
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _field(struct, name: str):
    return getattr(struct, name, None) if hasattr(struct, "_fieldnames") and name in struct._fieldnames else None


def mpii_image_root(path: Path) -> Path:
    # The official layout: mpii_human_pose_v1_u12_2/<the .mat> beside images/.
    for parent in (path.parent, path.parent.parent):
        if (parent / "images").is_dir():
            return parent / "images"
    return path.parent


def read_mpii(path: Path, collector: Collector, subset: str = "all", image_root: Path | None = None) -> None:
    from scipy.io import loadmat

    if subset not in SUBSETS:
        raise DataError(f"{path}: unknown MPII subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    try:
        release = loadmat(path, squeeze_me=True, struct_as_record=False).get("RELEASE")
    except Exception as exc:  # scipy raises several unrelated types for corrupt files
        raise DataError(f"{path}: not a readable .mat file ({exc})") from None
    if release is None or _field(release, "annolist") is None or _field(release, "img_train") is None:
        raise DataError(f"{path}: no RELEASE struct with annolist and img_train (not the MPII annotation file?)")
    images = _items(release.annolist)
    is_train = np.atleast_1d(np.asarray(release.img_train)).ravel()
    if len(is_train) != len(images):
        raise DataError(f"{path}: img_train has {len(is_train)} entries for {len(images)} images")
    root = image_root or mpii_image_root(path)
    annotated = 0  # position among the annotated training images, which decides the split
    for index, (entry, train) in enumerate(zip(images, is_train, strict=True), start=1):
        if not train:
            continue
        where = f"{path.name}:annolist({index})"
        try:
            name = str(entry.image.name)
        except AttributeError:
            collector.fail(f"{where}: no image.name")
            continue
        people = []
        for r, rect in enumerate(_items(_field(entry, "annorect")), start=1):
            try:
                person = _person(rect, f"{where}.annorect({r})")
            except DataError as exc:
                collector.fail(str(exc))
                continue
            if person is not None:
                people.append((r, person))
        if not people:
            continue
        annotated += 1
        held_out = annotated % VAL_EVERY == 0
        if subset == "train" and held_out or subset == "val" and not held_out:
            continue
        for r, (points, visible, box, head_box, scale) in people:
            collector.add(
                Sample(
                    image_path=root / name,
                    points=points,
                    box=box,
                    visible=visible,
                    source=f"{path.name}:annolist({index}).annorect({r})",
                    attributes={"head_box": head_box, "scale": scale},
                )
            )


def _person(rect, where: str):
    """(points, visible, person box, head box, scale) of one annorect; None for a person without joints."""
    annopoints = _field(rect, "annopoints")
    points_list = _items(_field(annopoints, "point")) if annopoints is not None else []
    if not points_list:
        return None  # people marked only by a rough position (no joints) are not training samples
    points = np.full((NUM_JOINTS, 2), np.nan)
    visible = np.zeros(NUM_JOINTS, dtype=bool)
    for point in points_list:
        joint, x, y = (_number(_field(point, key)) for key in ("id", "x", "y"))
        if joint is None or x is None or y is None:
            raise DataError(f"{where}: a joint lacks its id, x or y")
        if not (0 <= joint < NUM_JOINTS and joint == int(joint)):
            raise DataError(f"{where}: joint id {joint:g} is not in 0..{NUM_JOINTS - 1}")
        points[int(joint)] = (x - 1.0, y - 1.0)  # MATLAB pixels are 1-based
        flag = _number(_field(point, "is_visible"))
        visible[int(joint)] = flag is None or flag > 0  # MPII leaves the flag empty on many visible joints
    head = [_number(_field(rect, key)) for key in ("x1", "y1", "x2", "y2")]
    if any(v is None for v in head):
        raise DataError(f"{where}: joints without a head rectangle (x1 y1 x2 y2), so PCKh cannot score them")
    head_box = np.array(head) - 1.0
    if head_box[2] <= head_box[0] or head_box[3] <= head_box[1]:
        raise DataError(f"{where}: empty head rectangle {np.round(head_box + 1, 2).tolist()}")
    scale = _number(_field(rect, "scale"))
    objpos = _field(rect, "objpos")
    centre = [_number(_field(objpos, "x")), _number(_field(objpos, "y"))] if objpos is not None else [None, None]
    if scale is None or scale <= 0 or None in centre:
        raise DataError(f"{where}: joints without a body scale and objpos, so the person cannot be cropped")
    half = PERSON_HEIGHT * scale / 2
    cx, cy = centre[0] - 1.0, centre[1] - 1.0
    return points, visible, np.array([cx - half, cy - half, cx + half, cy + half]), head_box, scale
