"""Benchmark results with their provenance: every file records how to regenerate it.

A result is a JSON document plus a Markdown table generated from it (never edited by hand), both
carrying the command, git revision, date, CPU model and thread count.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision(cwd: str | Path | None = None) -> str:
    try:

        def git(*args):
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()

        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short=12", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pin_single_thread(core: int | None = None) -> int | None:
    """One thread for every library we use, on one core (the last by default). Returns the core."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import cv2

    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        core = cores[-1] if core is None else core
        os.sched_setaffinity(0, {core})
        return core
    return None


def provenance(command: str | None = None, **extra) -> dict:
    return {
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_revision": git_revision(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        **extra,
    }


def markdown_table(rows: list[dict], columns: list[str], formats: dict[str, str] | None = None) -> str:
    formats = formats or {}

    def cell(row, col):
        value = row.get(col)
        if value is None:
            return "-"
        return format(value, formats[col]) if col in formats else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(path: str | Path, data: dict, title: str, body_markdown: str) -> tuple[Path, Path]:
    """Write PATH.json (data, which must hold a 'provenance' dict) and PATH.md (title, provenance, body)."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = data["provenance"]
    json_path, md_path = path.with_suffix(".json"), path.with_suffix(".md")
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    header = [f"# {title}", "", "Generated from the JSON beside this file; do not edit by hand.", ""]
    header += [f"- {key}: `{value}`" for key, value in meta.items()]
    md_path.write_text("\n".join(header) + "\n\n" + body_markdown)
    return json_path, md_path
