"""`bitface predict`: landmarks on image files, folders (recursive) and videos, as JSON and drawings.

A bad file does not stop a run: it is reported, listed at the end, and the exit code is 1. The JSON
and every drawing are written atomically, so a failure never leaves half a file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .api import Landmarker
from .draw import draw_landmarks, save_image
from .io.images import load_image
from .io.sample import DataError
from .smooth import LandmarkSmoother
from .track import FaceTracker

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


def expand(inputs: list[Path]) -> tuple[list[Path], list[str]]:
    """Files to run (folders searched recursively for images and videos) and errors for the rest."""
    files, errors = [], []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not found:
                errors.append(f"{item}: folder has no images or videos")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            errors.append(f"{item}: no such file or folder")
    return files, errors


def atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def draw_faces(image: np.ndarray, faces) -> np.ndarray:
    canvas = image
    for face in faces:
        canvas = draw_landmarks(canvas, face.points, face.box, min_side=0)
    return canvas if faces else (image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))


def video_frames(path: Path):
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataError(f"{path}: not a readable video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames += 1
            yield frames - 1, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), fps
    finally:
        capture.release()
    if frames == 0:
        raise DataError(f"{path}: video has no readable frames")


def run_video(
    lm: Landmarker, path: Path, draw_dir: Path | None, smooth: bool = True, detect_every: int | None = None
) -> list[dict]:
    """Every frame's faces, followed by their landmarks between detections (FaceTracker); with `smooth`,
    landmarks pass a One Euro filter per tracked face."""
    entries, writer, tmp, smoother = [], None, None, None
    tracker = FaceTracker(lm, detect_every)
    try:
        for index, frame, fps in tqdm(video_frames(path), desc=path.name, unit="frame", leave=False):
            faces = tracker(frame)
            if smooth:
                smoother = smoother or LandmarkSmoother(fps=fps)
                faces = smoother(faces)
            entries.append({"path": str(path), "frame": index, "faces": [f.to_dict() for f in faces]})
            if draw_dir is not None:
                if writer is None:
                    out = draw_dir / f"{path.stem}.landmarks.mp4"
                    tmp = out.with_name(f".{out.name}.tmp.mp4")
                    draw_dir.mkdir(parents=True, exist_ok=True)
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                writer.write(cv2.cvtColor(draw_faces(frame, faces), cv2.COLOR_RGB2BGR))
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        if writer is not None:
            writer.release()
    if tmp is not None:
        os.replace(tmp, draw_dir / f"{path.stem}.landmarks.mp4")
    return entries


def predict(
    inputs: list[Path],
    model: str | None,
    detector: str,
    json_out: Path | None,
    draw_dir: Path | None,
    quiet: bool = False,
    smooth: bool = True,
    refine: int | None = None,
    detect_every: int | None = None,
    flip_test: bool = False,
) -> int:
    lm = Landmarker(model, detector, refine, flip_test)
    FaceTracker(lm, detect_every)  # a bad setting fails here, before any file is read
    files, errors = expand(inputs)
    results = []
    for path in tqdm(files, desc="predict", unit="file", disable=quiet or len(files) < 2):
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                results += run_video(lm, path, draw_dir, smooth, detect_every)
                continue
            image = load_image(path, "rgb")
            faces = lm(image)
            entry = {"path": str(path), "faces": [f.to_dict() for f in faces]}
            if not faces:
                entry["note"] = "no face found"
            results.append(entry)
            if draw_dir is not None:
                out = draw_dir / f"{path.stem}.landmarks.png"
                atomic_write(out, lambda tmp, image=image, faces=faces: save_image(tmp, draw_faces(image, faces)))
            if not quiet:
                print(f"{path}: {len(faces)} face{'s' * (len(faces) != 1)}", file=sys.stderr)
        except DataError as exc:
            errors.append(str(exc))
    document = {"model": lm.name, "detector": detector, "refine": lm.refine, "images": results}
    if json_out is not None:
        atomic_write(json_out, lambda tmp: tmp.write_text(json.dumps(document, indent=1) + "\n"))
    elif results:
        print(json.dumps(document))
    for message in errors:
        print(f"bitface: error: {message}", file=sys.stderr)
    if errors:
        print(f"bitface: {len(errors)} input(s) failed, {len(results)} done", file=sys.stderr)
    return 1 if errors or not files else 0
