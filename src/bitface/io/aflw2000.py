"""AFLW2000-3D: one .mat per image with `pt3d_68` (3 x 68: x, y, z) and `Pose_Para` (1 x 7:
pitch, yaw, roll in radians, then translation and scale). The x, y values are used as 0-based
pixel coordinates, as 3DDFA's own Python evaluation does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .pts import read_files_beside_images
from .sample import Collector, DataError, make_points


def parse_aflw2000_mat(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as exc:  # scipy raises several unrelated types for corrupt files
        raise DataError(f"{path}: not a readable .mat file ({exc})") from None
    if "pt3d_68" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: no 'pt3d_68' key (keys: {', '.join(keys)})")
    pt3d = np.asarray(mat["pt3d_68"], dtype=np.float64)
    if pt3d.shape != (3, 68):
        raise DataError(f"{path}: 'pt3d_68' has shape {pt3d.shape}, expected (3, 68)")
    points = make_points(pt3d[:2].T, 68, str(path))
    pose = None
    if "Pose_Para" in mat:
        para = np.asarray(mat["Pose_Para"], dtype=np.float64).ravel()
        if para.size < 3 or not np.isfinite(para[:3]).all():
            raise DataError(f"{path}: 'Pose_Para' needs 3 finite angles, got {para.tolist()}")
        pitch, yaw, roll = np.degrees(para[:3])
        pose = np.array([yaw, pitch, roll])
    return points, pose


def read_aflw2000(files: list[Path], collector: Collector) -> None:
    def parse(path: Path) -> dict:
        points, pose = parse_aflw2000_mat(path)
        return {"points": points, "pose": pose}

    read_files_beside_images(files, collector, parse)
