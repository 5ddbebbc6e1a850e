import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitface.train.queue import run_queue

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs Linux CPU affinity")

# the cores this process had at collection, before any test pinned it (bitface bench pins itself to one)
START_CORES = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()


@pytest.fixture(autouse=True)
def all_start_cores():
    now = os.sched_getaffinity(0)
    os.sched_setaffinity(0, START_CORES)
    yield
    os.sched_setaffinity(0, now)


# each job writes the cores it may run on to the file after --out
REPORT = "import os, sys; open(sys.argv[2], 'w').write(' '.join(map(str, sorted(os.sched_getaffinity(0)))))"


def job(path) -> list[str]:
    return [sys.executable, "-c", REPORT, "--out", str(path)]


def cores_of(path) -> set[int]:
    return {int(c) for c in path.read_text().split()}


def test_a_lone_job_is_not_pinned_so_it_cannot_stack_on_another_queues_core(tmp_path, capsys):
    assert run_queue([job(tmp_path / "a"), job(tmp_path / "b")], parallel=1) == [0, 0]
    assert cores_of(tmp_path / "a") == cores_of(tmp_path / "b") == START_CORES
    assert "done: a" in capsys.readouterr().out


@pytest.mark.skipif(len(START_CORES) < 2, reason="needs two cores")
def test_parallel_jobs_run_pinned_to_separate_cores(tmp_path):
    assert run_queue([job(tmp_path / "a"), job(tmp_path / "b")], parallel=2) == [0, 0]
    a, b = cores_of(tmp_path / "a"), cores_of(tmp_path / "b")
    assert len(a) == len(b) == 1 and a != b


SLEEPER = "import sys, time; open(sys.argv[2], 'w').write('started'); time.sleep(60)"
# a foreground queue, as Ctrl-C finds it: where the tests themselves run as a background job (CI, nohup &),
# the shell had SIGINT ignored, Python keeps it ignored, and the queue would never see the signal
QUEUE = """
import signal, sys
from bitface.train.queue import run_queue
signal.signal(signal.SIGINT, signal.default_int_handler)
run_queue([[sys.executable, '-c', {sleeper!r}, '--out', path] for path in sys.argv[1:]], parallel=2)
"""


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_queue_stops_its_runs(tmp_path, how):
    """A queue killed (SIGTERM) or interrupted must not leave its runs training on as orphans."""
    flags = [tmp_path / "a", tmp_path / "b"]
    queue = subprocess.Popen([sys.executable, "-c", QUEUE.format(sleeper=SLEEPER), *map(str, flags)])
    deadline = time.time() + 30
    while not all(f.exists() for f in flags) and time.time() < deadline:
        time.sleep(0.05)
    listed = subprocess.run(["pgrep", "-P", str(queue.pid)], capture_output=True, text=True).stdout
    children = [int(pid) for pid in listed.split()]
    assert len(children) == 2, "the queue did not start both runs"
    queue.send_signal(how)
    assert queue.wait(timeout=20) != 0
    for pid in children:
        deadline = time.time() + 10
        while pid_alive(pid) and time.time() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid), f"run {pid} outlived its queue"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"  # a zombie is dead
