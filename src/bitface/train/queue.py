"""Train a family of recipes (a benchmark's rows) a few at a time, one thread each, resumably.

A run folder whose recipe changed since it was trained is moved aside (never mixed with new
epochs); a stopped run resumes from its last epoch; a finished one is skipped. Stopping the queue
(Ctrl-C, or SIGTERM as `kill` sends) stops its runs too: left running, they would go on writing
epochs into folders the user takes to be idle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from .recipe import load_recipe, recipe_from_dict


def finished_epochs(folder: Path) -> int:
    log = folder / "log.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def pending_command(recipe: Path, folder: Path, until: int | None = None) -> list[str] | None:
    """The `bitface train` command that brings `folder` to the recipe's last epoch (or to `until`),
    or None when it is there already."""
    resolved = load_recipe(recipe)
    run_recipe = folder / "recipe.yaml"  # keys added since the run are read with their defaults
    if run_recipe.is_file() and recipe_from_dict(yaml.safe_load(run_recipe.read_text())) != resolved:
        stale = folder.with_name(folder.name + f".stale-{int(time.time())}")
        print(f"{folder.name}: the recipe changed since this run; moved to {stale.name}, training afresh")
        folder.rename(stale)
    target = resolved.train.epochs if until is None else min(until, resolved.train.epochs)
    if finished_epochs(folder) >= target:
        return None
    command = [sys.executable, "-m", "bitface.cli", "train", str(recipe), "--out", str(folder), "--quiet"]
    if until is not None:
        command += ["--until", str(target)]
    return command + (["--resume"] if (folder / "state.pt").is_file() else [])


def run_queue(commands: list[list[str]], parallel: int = 2, pin: bool = True) -> list[int]:
    """Run the commands `parallel` at a time with one thread each (pinned to separate cores where
    the OS allows and more than one runs at once); returns their exit codes in order."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # a lone job is left to the scheduler: pinning it to the first core would stack it on another
    # queue's job there
    pinned = pin and parallel > 1 and hasattr(os, "sched_getaffinity")
    cores = sorted(os.sched_getaffinity(0)) if pinned else []
    waiting = list(enumerate(commands))
    running: dict[subprocess.Popen, tuple[int, int | None]] = {}
    codes: list[int] = [0] * len(commands)
    start = time.time()

    def name(command):
        return Path(command[command.index("--out") + 1]).name

    # SIGTERM unwinds like Ctrl-C, through the finally below (only the main thread may set handlers)
    handles_term = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_term) if handles_term else None
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                index, command = waiting.pop(0)
                busy = {core for _, core in running.values()}
                core = next((c for c in cores if c not in busy), None)
                preexec = (lambda c=core: os.sched_setaffinity(0, {c})) if core is not None else None
                print(f"[{(time.time() - start) / 60:6.1f} min] start {name(command)}", flush=True)
                process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, preexec_fn=preexec)
                running[process] = (index, core)
            time.sleep(0.5)
            for process in [p for p in running if p.poll() is not None]:
                index, _ = running.pop(process)
                codes[index] = process.returncode
                status = "done" if process.returncode == 0 else f"FAILED ({process.returncode})"
                print(f"[{(time.time() - start) / 60:6.1f} min] {status}: {name(process.args)}", flush=True)
    finally:
        for process in running:  # stopped early: a run resumes from its last saved epoch
            process.terminate()
        for process in running:
            process.wait()
        if handles_term:
            signal.signal(signal.SIGTERM, previous)
    return codes


def _exit_on_term(signum, frame):
    raise SystemExit(128 + signum)
