"""Worker processes: a killed worker fails its task alone, and no worker outlives the process that started it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.workers import WorkerPool

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_tasks_run_and_errors_come_back():
    with WorkerPool(2) as pool:
        pool.submit("a", divmod, 7, 2)
        pool.submit("b", divmod, 1, 0)
        assert pool.free == 0
        outcomes = {}
        while pool.busy:
            outcomes.update((o.key, o) for o in pool.wait(10))
    assert outcomes["a"].value == (3, 1) and outcomes["a"].error is None
    assert outcomes["b"].value is None and "ZeroDivisionError" in outcomes["b"].error


def test_a_killed_worker_fails_only_its_task_and_is_replaced():
    with WorkerPool(2) as pool:
        pool.submit("slow", time.sleep, 30)
        pool.submit("quick", divmod, 9, 4)
        [quick] = pool.wait(10)
        assert quick.key == "quick" and quick.value == (2, 1)
        slow_pid = pool.running()["slow"]
        os.kill(slow_pid, signal.SIGKILL)
        started = time.monotonic()
        [slow] = pool.wait(10)
        assert time.monotonic() - started < 5
        assert slow.key == "slow" and slow.value is None and "killed by SIGKILL" in slow.error
        pool.submit("after", divmod, 5, 5)  # the pool carries on with a fresh worker
        [after] = pool.wait(10)
        assert after.value == (1, 0) and slow_pid not in pool.pids()


STARTER = """
import sys, time
from core.workers import WorkerPool
pool = WorkerPool(2)
pool.submit("busy", time.sleep, 120)
pool.submit("idle", divmod, 1, 1)
while not pool.wait(10):
    pass
print(" ".join(map(str, pool.pids())), flush=True)
time.sleep(120)
"""


def test_workers_exit_when_the_process_that_started_them_is_killed():
    """SIGKILL the app: its busy and idle workers (and the fork server) are gone within seconds, no orphans."""
    app = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    family: set[int] = set()
    try:
        workers = set(map(int, app.stdout.readline().split()))
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        family = descendants(app.pid)
        assert workers < family  # the workers and the fork server
        app.send_signal(signal.SIGKILL)
        app.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(pid) for pid in family):
            time.sleep(0.05)
        assert [pid for pid in family if alive(pid)] == []
    finally:
        app.kill()
        app.wait()
        for pid in family:  # never leave a failed run's orphans behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("code, fragment", [(-signal.SIGKILL, "SIGKILL (the system may have run out of memory)"),
                                            (-signal.SIGSEGV, "SIGSEGV"), (3, "exit code 3")])
def test_death_messages_name_the_cause(code, fragment):
    from core.workers import _death

    assert fragment in _death(code)


def test_a_worker_is_replaced_after_its_task_quota():
    """Whatever a codec leaks leaves with the worker: after max_tasks tasks a fresh process takes over."""
    with WorkerPool(1, max_tasks=2) as pool:
        seen = []
        for n in range(3):
            pool.submit(n, os.getpid)
            [outcome] = pool.wait(10)
            seen.append(outcome.value)
    assert seen[0] == seen[1] != seen[2]


def test_workers_do_not_run_the_apps_main_module_again(tmp_path):
    """A worker is not handed the app's __main__ (app.py: 1.6 s of imports per worker); its tasks still run."""
    marker = tmp_path / "imports"
    main = tmp_path / "main.py"
    main.write_text(f"""import os, sys
sys.path.insert(0, {str(ROOT)!r})
with open({str(marker)!r}, "a") as fh:
    fh.write(__name__ + "\\n")
from core.workers import WorkerPool
if __name__ == "__main__":
    with WorkerPool(1) as pool:
        pool.submit("pid", os.getpid)
        [outcome] = pool.wait(30)
    print(outcome.value, os.getpid())
""")
    done = subprocess.run([sys.executable, str(main)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    worker, parent = map(int, done.stdout.split())
    assert worker != parent
    assert marker.read_text().split() == ["__main__"]  # never "__mp_main__": run once, by the app


def _loaded(names):
    return [name for name in names if name in sys.modules]


def test_workers_are_forked_with_the_task_modules_already_imported():
    """The fork server imported the artifact tasks and codec libraries once: a new worker does not import them again."""
    from core.workers import PRELOAD, WORKER_NAME, warm

    warm()
    with WorkerPool(1) as pool:
        pool.submit("loaded", _loaded, PRELOAD)
        [outcome] = pool.wait(30)
        pid = pool.pids()[0]
        assert Path(f"/proc/{pid}/comm").read_text().strip() == WORKER_NAME
    assert outcome.value == list(PRELOAD)


def _environment(name):
    return os.environ.get(name)


def test_a_worker_runs_with_the_apps_environment_of_now(monkeypatch):
    """Forked by a server started earlier, a worker still sees what the app's environment says when it starts."""
    from core.workers import warm

    warm()
    monkeypatch.setenv("RADPRESS_INDEX_JOURNAL", "delete")
    with WorkerPool(1) as pool:
        pool.submit("env", _environment, "RADPRESS_INDEX_JOURNAL")
        [outcome] = pool.wait(30)
    assert outcome.value == "delete"


def test_the_fork_server_preloads_wherever_the_app_was_started(tmp_path):
    """The fork server (``python -c``) finds ``core`` from any working directory: its workers start with every
    PRELOAD module, the guard that ties the server's life to the app's among them."""
    script = tmp_path / "app.py"
    script.write_text(f"""import sys
sys.path.insert(0, {str(ROOT)!r})
from core.workers import PRELOAD, WorkerPool
from tests.core.test_workers import _loaded
if __name__ == "__main__":
    with WorkerPool(1) as pool:
        pool.submit("loaded", _loaded, PRELOAD)
        [outcome] = pool.wait(60)
    print(outcome.value == list(PRELOAD), "core.forkserver_guard" in PRELOAD)
""")
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.stdout.split() == ["True", "True"], out.stderr[-2000:]
