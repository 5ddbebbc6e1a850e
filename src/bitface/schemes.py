"""Landmark schemes: point names, flip permutations, eye indices, normalizing distances, reductions.

"Left" and "right" always mean the side of the *image* (the subject's right eye is on the image's
left), which is how every annotation format we read orders its points.

Normalizers (one definition for the whole project, see GUIDE section 3):

- ``interocular``: distance between the outer eye corners (iBUG 68: points 36 and 45).
- ``interpupil``: distance between the eye centres (mean of each eye's points, or the pupil points).
- ``box_width``: width of the face box. The annotated box when the sample has one (CUHK, Sun et al.'s
  convention), otherwise the tight box of the ground-truth points; reports say which was used.
- ``box_sqrt_wh``: sqrt(w * h) of the tight box of the ground-truth points (AFLW2000-3D / DHM).
- ``box_diag``: diagonal of the tight box of the ground-truth points.
- ``head``: 0.6 x the diagonal of the annotated head box (MPII's head segment length; PCKh@0.5 counts a
  joint as found within half of it). Human pose only; callers pass the head boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NORMALIZERS = ("interocular", "interpupil", "box_width", "box_sqrt_wh", "box_diag", "head")
HEAD_SIZE_FACTOR = 0.6  # MPII: head segment length = 0.6 x head box diagonal (its evaluation code's SC_BIAS)


@dataclass(frozen=True)
class Scheme:
    name: str
    point_names: tuple[str, ...]
    flip_permutation: tuple[int, ...]
    left_eye: tuple[int, ...]  # points of the eye on the image's left; their mean is its centre
    right_eye: tuple[int, ...]
    outer_eye_corners: tuple[int, int] | None  # None: the scheme has no corners (5-point)
    default_normalizer: str
    description: str = ""
    aliases: tuple[str, ...] = field(default=())

    @property
    def num_points(self) -> int:
        return len(self.point_names)

    def eye_centres(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centres of the image-left and image-right eyes, for points of shape (..., N, 2)."""
        points = self._check(points)
        return points[..., list(self.left_eye), :].mean(-2), points[..., list(self.right_eye), :].mean(-2)

    def flip_points(self, points: np.ndarray, width: float) -> np.ndarray:
        """Mirror points horizontally in an image `width` pixels wide and relabel them.

        Pixel-centre convention: column i is at x = i, so the mirror of x is (width - 1) - x.
        """
        points = self._check(points)
        flipped = points[..., list(self.flip_permutation), :].copy()
        flipped[..., 0] = (width - 1) - flipped[..., 0]
        return flipped

    def _check(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        if points.shape[-2:] != (self.num_points, 2):
            raise ValueError(
                f"scheme {self.name!r} expects points of shape (..., {self.num_points}, 2), got {points.shape}"
            )
        return points


def tight_boxes(points: np.ndarray) -> np.ndarray:
    """Tight boxes [x0, y0, x1, y1] of points (..., N, 2); NaN points (not annotated) are left out."""
    points = np.asarray(points, dtype=np.float64)
    return np.concatenate([np.nanmin(points, -2), np.nanmax(points, -2)], axis=-1)


def normalizing_distances(
    scheme: Scheme, normalizer: str, gt_points: np.ndarray, boxes: np.ndarray | None = None
) -> np.ndarray:
    """The normalizing distance of each face, for ground-truth points of shape (B, N, 2).

    `boxes` (B, 4) as [x0, y0, x1, y1] are the face boxes of ``box_width`` (without them it falls back
    to the tight box of the points; callers record which source they used) or the head boxes of ``head``
    (required). Ground truth may hold NaN for joints nobody annotated (MPII); box normalizers ignore them.
    """
    gt = scheme._check(gt_points)
    if gt.ndim == 2:
        gt = gt[None]
    if normalizer == "interocular":
        if scheme.outer_eye_corners is None:
            raise ValueError(
                f"scheme {scheme.name!r} has no eye corners, so 'interocular' is undefined for it; "
                "use 'interpupil' (eye centres) or a box normalizer"
            )
        i, j = scheme.outer_eye_corners
        d = np.linalg.norm(gt[:, i] - gt[:, j], axis=-1)
    elif normalizer == "interpupil":
        if not scheme.left_eye:
            raise ValueError(f"scheme {scheme.name!r} has no eyes, so 'interpupil' is undefined for it")
        left, right = scheme.eye_centres(gt)
        d = np.linalg.norm(left - right, axis=-1)
    elif normalizer == "box_width":
        b = tight_boxes(gt) if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(b) != len(gt):
            raise ValueError(f"got {len(b)} boxes for {len(gt)} faces")
        d = b[:, 2] - b[:, 0]
    elif normalizer == "head":
        if boxes is None:
            raise ValueError("the 'head' normalizer needs the head boxes of the samples (MPII's x1 y1 x2 y2)")
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(b) != len(gt):
            raise ValueError(f"got {len(b)} head boxes for {len(gt)} people")
        d = HEAD_SIZE_FACTOR * np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    elif normalizer in ("box_sqrt_wh", "box_diag"):
        b = tight_boxes(gt)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        d = np.sqrt(w * h) if normalizer == "box_sqrt_wh" else np.hypot(w, h)
    else:
        raise ValueError(f"unknown normalizer {normalizer!r}; choose one of {', '.join(NORMALIZERS)}")
    if not np.all(np.isfinite(d)) or np.any(d <= 0):
        bad = int(np.flatnonzero(~(np.isfinite(d) & (d > 0)))[0])
        raise ValueError(f"normalizer {normalizer!r} is zero or not finite for face {bad}")
    return d


def _mirror_pairs(n: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    perm = list(range(n))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


def _range_pairs(a: range, b: range) -> list[tuple[int, int]]:
    return list(zip(a, b, strict=True))


# --- 5 points, CUHK / MTFL order ---------------------------------------------------------------
FIVE = Scheme(
    name="5pt",
    aliases=("5", "cuhk5", "five"),
    point_names=("left_eye", "right_eye", "nose_tip", "left_mouth_corner", "right_mouth_corner"),
    flip_permutation=_mirror_pairs(5, [(0, 1), (3, 4)]),
    left_eye=(0,),
    right_eye=(1,),
    outer_eye_corners=None,
    default_normalizer="box_width",
    description="5 points in CUHK/MTFL order: eyes, nose tip, mouth corners (image left first)",
)

# --- iBUG 68 -----------------------------------------------------------------------------------
_IBUG_NAMES = (
    [f"jaw_{i:02d}" for i in range(17)]
    + [f"left_brow_{i}" for i in range(5)]
    + [f"right_brow_{i}" for i in range(5)]
    + [f"nose_bridge_{i}" for i in range(4)]
    + [f"nose_base_{i}" for i in range(5)]
    + [f"left_eye_{i}" for i in range(6)]
    + [f"right_eye_{i}" for i in range(6)]
    + [f"outer_lip_{i:02d}" for i in range(12)]
    + [f"inner_lip_{i}" for i in range(8)]
)
IBUG68 = Scheme(
    name="68pt",
    aliases=("68", "ibug68", "300w"),
    point_names=tuple(_IBUG_NAMES),
    flip_permutation=_mirror_pairs(
        68,
        _range_pairs(range(0, 8), range(16, 8, -1))  # jaw
        + _range_pairs(range(17, 22), range(26, 21, -1))  # brows
        + [(31, 35), (32, 34)]  # nose base
        + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
        + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lip
        + [(60, 64), (61, 63), (65, 67)],  # inner lip
    ),
    left_eye=tuple(range(36, 42)),
    right_eye=tuple(range(42, 48)),
    outer_eye_corners=(36, 45),
    default_normalizer="interocular",
    description="iBUG 300-W 68 points",
)

# --- WFLW 98 -----------------------------------------------------------------------------------
_WFLW_NAMES = (
    [f"contour_{i:02d}" for i in range(33)]
    + [f"left_brow_{i}" for i in range(9)]
    + [f"right_brow_{i}" for i in range(9)]
    + [f"nose_bridge_{i}" for i in range(4)]
    + [f"nose_base_{i}" for i in range(5)]
    + [f"left_eye_{i}" for i in range(8)]
    + [f"right_eye_{i}" for i in range(8)]
    + [f"outer_lip_{i:02d}" for i in range(12)]
    + [f"inner_lip_{i}" for i in range(8)]
    + ["left_pupil", "right_pupil"]
)
WFLW98 = Scheme(
    name="98pt",
    aliases=("98", "wflw98", "wflw"),
    point_names=tuple(_WFLW_NAMES),
    flip_permutation=_mirror_pairs(
        98,
        _range_pairs(range(0, 16), range(32, 16, -1))  # contour
        + _range_pairs(range(33, 38), range(46, 41, -1))  # upper brows
        + _range_pairs(range(38, 42), range(50, 46, -1))  # lower brows
        + [(55, 59), (56, 58)]  # nose base
        + _range_pairs(range(60, 65), range(72, 67, -1))  # eye corner + upper lid
        + _range_pairs(range(65, 68), range(75, 72, -1))  # lower lid
        + [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86)]  # outer lip
        + [(88, 92), (89, 91), (93, 95)]  # inner lip
        + [(96, 97)],  # pupils
    ),
    left_eye=(96,),
    right_eye=(97,),
    outer_eye_corners=(60, 72),
    default_normalizer="interocular",
    description="WFLW 98 points (eye centres are its pupil points 96, 97)",
)

# --- AFLW 21 -----------------------------------------------------------------------------------
AFLW21 = Scheme(
    name="21pt",
    aliases=("21", "aflw21", "aflw"),
    point_names=(
        "left_brow_outer",
        "left_brow_centre",
        "left_brow_inner",
        "right_brow_inner",
        "right_brow_centre",
        "right_brow_outer",
        "left_eye_outer",
        "left_eye_centre",
        "left_eye_inner",
        "right_eye_inner",
        "right_eye_centre",
        "right_eye_outer",
        "left_ear",
        "nose_left",
        "nose_tip",
        "nose_right",
        "right_ear",
        "mouth_left",
        "mouth_centre",
        "mouth_right",
        "chin",
    ),  # fmt: skip
    flip_permutation=_mirror_pairs(
        21, [(0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 16), (13, 15), (17, 19)]
    ),
    left_eye=(7,),
    right_eye=(10,),
    outer_eye_corners=(6, 11),
    default_normalizer="box_sqrt_wh",
    description="AFLW 21 points",
)

# --- MPII human pose, 16 joints --------------------------------------------------------------
# MPII's joint ids and order; "right"/"left" are the person's, as MPII annotates them.
MPII16 = Scheme(
    name="mpii16",
    aliases=("mpii", "16", "pose16"),
    point_names=(
        "right_ankle",
        "right_knee",
        "right_hip",
        "left_hip",
        "left_knee",
        "left_ankle",
        "pelvis",
        "thorax",
        "upper_neck",
        "head_top",
        "right_wrist",
        "right_elbow",
        "right_shoulder",
        "left_shoulder",
        "left_elbow",
        "left_wrist",
    ),  # fmt: skip
    flip_permutation=_mirror_pairs(16, [(0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)]),
    left_eye=(),
    right_eye=(),
    outer_eye_corners=None,
    default_normalizer="head",
    description="MPII Human Pose 16 joints (the person's right and left); scored by PCKh",
)

SCHEMES: dict[str, Scheme] = {s.name: s for s in (FIVE, IBUG68, WFLW98, AFLW21, MPII16)}
_ALIASES = {alias: s for s in SCHEMES.values() for alias in (s.name, *s.aliases)}


def get_scheme(name_or_count: str | int) -> Scheme:
    """A scheme by name ('68pt', 'ibug68', ...) or by its number of points."""
    if isinstance(name_or_count, Scheme):
        return name_or_count
    key = str(name_or_count).lower()
    if key in _ALIASES:
        return _ALIASES[key]
    raise KeyError(f"unknown landmark scheme {name_or_count!r}; known: {', '.join(SCHEMES)}")


def scheme_for_count(num_points: int) -> Scheme:
    for scheme in SCHEMES.values():
        if scheme.num_points == num_points:
            return scheme
    raise KeyError(f"no landmark scheme has {num_points} points; known: {', '.join(SCHEMES)}")


def reduce_68_to_5(points: np.ndarray) -> np.ndarray:
    """iBUG 68 -> 5 points: eye centres (mean of each eye's 6 points), nose tip 30, mouth corners 48, 54."""
    points = IBUG68._check(points)
    left, right = IBUG68.eye_centres(points)
    return np.stack([left, right, points[..., 30, :], points[..., 48, :], points[..., 54, :]], axis=-2)
