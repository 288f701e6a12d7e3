"""Worker processes for jobs: one task each at a time, replaced when one dies, gone when the app dies.

:class:`concurrent.futures.ProcessPoolExecutor` breaks as a whole when the OS
kills one worker (out of memory, kill -9): every pending task fails and the
job that used it hung in "running".  Here each worker holds exactly one task,
so a dead worker fails that task alone, with the signal that killed it, and a
fresh worker takes the next one.  Workers are forked by a fork server that
imported what tasks need once (:data:`PRELOAD`): a worker is ready in
milliseconds, not after ~0.9 s of imports.  A worker leaves the moment the
app exits (it waits on the app's pidfd) or its fork server does
(``PR_SET_PDEATHSIG``), and the fork server leaves with the app; an idle
worker also leaves when its task pipe closes.  No orphan outlives the app.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import types
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Hashable, Sized

from .environ import environment

__all__ = ["Pool", "WorkerPool", "Outcome", "warm"]

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
WORKER_NAME = "radpress-worker"  # the process name (15 characters at most)
# Background work runs behind the web requests sharing its cores (an upload burst, a doctor's preview):
# it takes the CPU they leave, all of it when they are idle.
JOB_NICE = 10


# What the fork server imports once for every worker it forks: the artifact tasks and the codec libraries they
# load on first use.
PRELOAD = ("core.forkserver_guard", "core.jobs", "core.codecs.openjpeg", "glymur", "imagecodecs", "jpeg_ls", "PIL.Image",
           "pydicom.pixels")


def _die_with(app: int) -> None:
    """Leave the moment the app exits, even mid-task in C code: a thread waits on the app's pidfd (Linux); and
    the kernel SIGKILLs this process when its parent, the fork server, exits."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        libc.prctl(_PR_SET_NAME, WORKER_NAME.encode(), 0, 0, 0)  # what ps and top show
        try:
            exited = os.pidfd_open(app)
        except ProcessLookupError:
            os._exit(0)
        threading.Thread(target=lambda: (select.select([exited], [], []), os._exit(0)), daemon=True,
                         name="radpress-app-watch").start()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def _let_the_fork_server_go() -> None:
    """Python hands every forked child the write end of the fork server's "app alive" pipe, so that the server
    stays while any child lives; a worker, which must die with the server, lets it go."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # noqa: SLF001 - the stdlib's own record of the inherited descriptor
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None


def _serve(tasks: Connection, app: int, env: dict[str, str]) -> None:
    """A worker's life: run tasks until told to stop or until the app's end of the pipe closes.

    It runs with the app's environment of now, not the fork server's of its start (as a spawned process would).
    """
    _let_the_fork_server_go()
    _die_with(app)
    os.environ.clear()
    os.environ.update(env)
    os.nice(JOB_NICE)
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):  # the app is gone (also covers a parent that died before prctl)
            return
        if task is None:
            return
        fn, args = task
        try:
            answer = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as this task's failure
            answer = ("error", f"internal error: {type(exc).__name__}: {exc}")
        tasks.send(answer)


@dataclass(frozen=True)
class Outcome:
    """What one task came to: its value, or why it has none."""

    key: Hashable
    value: Any = None
    error: str | None = None


_MAIN_SWAP = threading.Lock()


@contextlib.contextmanager
def _without_main():
    """While a worker is spawned, the app's ``__main__`` looks empty, so the worker does not run it again as
    ``__mp_main__`` (app.py: 1.6 s of CPU in imports per worker).  A task needs none of it: its function is
    importable from ``core``."""
    with _MAIN_SWAP:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = main


def _context():
    """The fork server's context, its server importing :data:`PRELOAD` when it starts (once per app)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


_ROOT = str(Path(__file__).resolve().parent.parent)  # where ``core`` is


def _server_finds_core():
    """The fork server is ``python -c``: it imports from its working directory, and Python 3.11 drops the
    ``sys.path`` it is handed.  While it may be started, PYTHONPATH names the directory ``core`` is in, so that
    :data:`PRELOAD` is imported wherever the app was started from."""
    return environment(PYTHONPATH=os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p))


def warm() -> None:
    """Start the fork server now (the job runner does at start-up) rather than when the first job needs a worker."""
    from multiprocessing import forkserver

    _context()
    with _server_finds_core():
        forkserver.ensure_running()


class _Worker:
    def __init__(self, context):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, os.getpid(), dict(os.environ)), daemon=True,
                                       name=WORKER_NAME)
        with _without_main(), _server_finds_core():
            self.process.start()
        child.close()
        self.key: Hashable | None = None
        self.tasks = 0


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the system may have run out of memory)" if -exitcode == signal.SIGKILL else ""
        return f"the worker process making this instance's copies was killed by {name}{hint}; the other instances continue"
    return f"the worker process making this instance's copies exited unexpectedly (exit code {exitcode})"


class Pool(abc.ABC):
    """What a job runner asks of a pool, local (:class:`WorkerPool`) or remote (:class:`core.engine.CeleryPool`):
    *size* task slots, :meth:`submit` to a free one, :meth:`wait` for outcomes, :meth:`close` when done."""

    size: int
    _busy: Sized  # the tasks in flight
    remote = False  # True when tasks run elsewhere: a runner shutting down then waits for none

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def free(self) -> int:
        return self.size - len(self._busy)

    @property
    def busy(self) -> int:
        return len(self._busy)

    @abc.abstractmethod
    def submit(self, key: Hashable, fn: Callable, *args) -> None: ...

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> list[Outcome]: ...

    @abc.abstractmethod
    def close(self, timeout: float = 0) -> None: ...


class WorkerPool(Pool):
    """Up to *size* worker processes; :meth:`submit` a task to a free one, :meth:`wait` for outcomes.

    Linux sends the death signal when the *thread* that started a worker
    ends, so a pool is used and closed within one call on one thread (a job's
    run), never kept across threads.
    """

    def __init__(self, size: int, max_tasks: int = 500):
        self.size = max(1, size)
        self.max_tasks = max_tasks  # then a worker is replaced: whatever a codec leaks goes with it
        self._context = _context()
        self._idle: list[_Worker] = []
        self._busy: list[_Worker] = []

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._idle + self._busy]

    def running(self) -> dict[Hashable, int]:
        """The process id working on each task now."""
        return {w.key: w.process.pid for w in self._busy}

    def submit(self, key: Hashable, fn: Callable, *args) -> None:
        """Hand one task to a free worker (started when none is idle); *fn* must be importable by the worker."""
        if not self.free:
            raise RuntimeError("every worker is busy; wait() for one first")
        while self._idle and not self._idle[-1].process.is_alive():  # killed while idle: not this task's fault
            _end(self._idle.pop())
        worker = self._idle.pop() if self._idle else _Worker(self._context)
        worker.key = key
        worker.conn.send((fn, args))
        self._busy.append(worker)

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        """Outcomes of the tasks finished within *timeout* seconds (none when nothing is running)."""
        if not self._busy:
            return []
        ready = set(wait([w.conn for w in self._busy] + [w.process.sentinel for w in self._busy], timeout))
        outcomes = []
        for worker in list(self._busy):
            if worker.conn in ready or worker.process.sentinel in ready:
                outcomes.append(self._collect(worker))
        return outcomes

    def _collect(self, worker: _Worker) -> Outcome:
        self._busy.remove(worker)
        try:
            if worker.conn.poll():
                status, value = worker.conn.recv()
                worker.tasks += 1
                if worker.tasks < self.max_tasks:
                    self._idle.append(worker)
                else:  # idle now: it leaves at once
                    _ask_to_leave(worker)
                    worker.process.join(5)
                    _end(worker)
                return Outcome(worker.key, value, None) if status == "ok" else Outcome(worker.key, None, value)
        except (EOFError, OSError):
            pass
        _end(worker)  # died before answering: this task alone fails; the next one gets a new worker
        return Outcome(worker.key, None, _death(worker.process.exitcode))

    def close(self, timeout: float = 60) -> None:
        """End every worker: a busy one first finishes its task (its outcome is dropped) for up to *timeout* s."""
        deadline = time.monotonic() + timeout
        workers, self._idle, self._busy = self._idle + self._busy, [], []
        for worker in workers:
            _ask_to_leave(worker)
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            _end(worker)


def _ask_to_leave(worker: _Worker) -> None:
    try:
        worker.conn.send(None)
    except (OSError, ValueError):  # already gone
        pass


def _end(worker: _Worker) -> None:
    if worker.process.is_alive():
        worker.process.kill()
    worker.process.join()
    worker.conn.close()
