"""One job engine: the archive's per-instance work runs in local worker processes, or as Celery tasks when REDIS_URL is set.

The runner (:class:`core.jobs.Jobs`) plans a job, hands each instance to a
*pool* and records every outcome in the jobs table, whichever pool it is:
:class:`core.workers.WorkerPool` (processes of this host) or
:class:`CeleryPool` (Celery workers on any host sharing the data directory).
Both run the same function, :func:`core.jobs._make_for_instance`.  The Celery
app is the one Dash's background callbacks use too, so one
``celery -A app:celery_app worker`` serves both.

A Celery worker that dies holding an instance does not lose it: tasks are
acknowledged only once done (``acks_late``; a killed pool process has its task
requeued, ``reject_on_worker_lost``), and a task whose whole worker is gone
(its processes dead on this host, or no heartbeat from another host for
:data:`STALE_SECONDS`) is sent again.  Each instance is made under its lock
and only what is still missing is made, so a task delivered twice makes
nothing twice.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import resource
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Hashable

from .archive import Wanted
from .errors import InvalidOptionError
from .jobs import LEASE_SECONDS, _make_for_instance
from .labjobs import run_lab_job
from .locks import item_lock
from .policyjobs import run_policy_job
from .store import Store
from .validate import check_uid
from .workers import Outcome, Pool, WorkerPool

__all__ = ["celery_app", "pool_factory", "workers_answer", "CeleryPool", "TASK", "STALE_SECONDS", "PING_EVERY_S"]

TASK = "radpress.run"
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = LEASE_SECONDS  # a started task without a heartbeat for this long is sent again
QUIET_SECONDS = 60.0  # tasks in flight and no worker heard from for this long: say so in the log
log = logging.getLogger(__name__)
PING_EVERY_S = 15.0  # how often one process asks whether a Celery worker answers (workers_answer)
# What a Celery task may run, by name (never a function named by the message): the per-instance work, a lab sweep,
# and the comparison a saved policy starts.
_FUNCTIONS: dict[str, Callable] = {"instance": _make_for_instance, "lab": run_lab_job, "policy": run_policy_job}
_NAMES = {fn: name for name, fn in _FUNCTIONS.items()}
_worker_pid: int | None = None  # the Celery worker's main process (set in it before its pool starts)


def pool_factory(url: str | None = None) -> Callable[[int], Pool]:
    """The pool a job runner uses: Celery when *url* (default REDIS_URL) is set, else local worker processes."""
    url = url or os.environ.get("REDIS_URL")
    return functools.partial(CeleryPool, url=url) if url else WorkerPool


@functools.lru_cache(maxsize=None)
def _celery(url: str):
    from celery import Celery
    from celery.signals import task_received, worker_init

    app = Celery("radpress", broker=url, backend=url)
    app.conf.update(worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)
    app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True)(_task)
    worker_init.connect(_remember_worker, weak=False)
    task_received.connect(_received, weak=False)
    return app


def celery_app(url: str | None = None):
    """The one Celery app (Dash's background callbacks and the archive's jobs) for *url*, default REDIS_URL."""
    url = url or os.environ.get("REDIS_URL")
    if not url:
        raise InvalidOptionError("The Celery engine needs REDIS_URL.", hint="Set REDIS_URL=redis://host:6379/0.")
    return _celery(url)


_pinged: dict[str, tuple[float, bool]] = {}  # per broker URL: when this process last asked, and whether a worker answered
_asking: dict[str, tuple[float, threading.Thread]] = {}  # per broker URL: the ping under way, since when
_ping_lock = threading.Lock()


def workers_answer(url: str | None = None, timeout: float = 1.0) -> bool:
    """Whether a Celery worker answers a ping on *url* (default REDIS_URL); asked at most every :data:`PING_EVERY_S`
    per process, so the Jobs page and ``/api/health`` never wait on the broker more than once in that time.

    The ping runs in a thread of its own and its caller waits *timeout* (and half a second) at most: a broker that
    is down keeps kombu retrying its connection for ~6 s, too long for a health check; no worker answers then."""
    url = url or os.environ.get("REDIS_URL")
    if not url:
        raise InvalidOptionError("Celery workers need REDIS_URL.", hint="Set REDIS_URL=redis://host:6379/0.")
    with _ping_lock:
        asked = _pinged.get(url)
        if asked is not None and time.monotonic() - asked[0] < PING_EVERY_S:
            return asked[1]
        since, thread = _asking.get(url) or (0.0, None)
        if thread is None or not thread.is_alive():
            since, thread = _asking[url] = (time.monotonic(), threading.Thread(
                target=_ping, args=(url, timeout), name="radpress-ping", daemon=True))
            thread.start()
    thread.join(max(0.0, since + timeout + 0.5 - time.monotonic()))
    with _ping_lock:
        asked = _pinged.get(url)
        return asked is not None and asked[0] >= since and asked[1]


def _ping(url: str, timeout: float) -> None:
    try:
        answered = bool(celery_app(url).control.ping(timeout=timeout))
    except Exception:  # noqa: BLE001 - a broker that does not answer has no worker answering either
        answered = False
    with _ping_lock:
        _pinged[url] = (time.monotonic(), answered)


def _remember_worker(**_kwargs) -> None:
    """In a Celery worker's main process, before it forks its pool: whose death means the worker is gone."""
    global _worker_pid
    _worker_pid = os.getpid()


# -- in the Celery worker ---------------------------------------------------------
def _heartbeat() -> dict:
    """Who holds a task now (host, the process running it, the worker's main process) and when they said so."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "worker": _worker_pid or os.getpid(), "beat": time.time()}


def _received(request=None, **_kwargs) -> None:
    """In the worker's main process, before its pool gets the task: a worker killed before the task starts is noticed too."""
    if request is not None and request.name == TASK:
        request.task.backend.store_result(request.id, _heartbeat(), "RECEIVED")


def _task(self, name: str, args: list):
    """Run one registered function; a heartbeat (host, pids, time) is kept in the task's state meanwhile."""
    if name not in _FUNCTIONS:
        raise InvalidOptionError(f"No job function {name!r}; known: {', '.join(_FUNCTIONS)}.")
    args = _checked(name, args)
    stop, task_id = threading.Event(), self.request.id  # the request is thread-local: read it here

    def beat():
        while True:
            self.update_state(task_id=task_id, state="STARTED", meta=_heartbeat())
            if stop.wait(HEARTBEAT_SECONDS):
                return

    heart = threading.Thread(target=beat, name="radpress-heartbeat", daemon=True)
    heart.start()
    try:
        return _make_missing(*args) if name == "instance" else _FUNCTIONS[name](*args)
    finally:
        stop.set()
        heart.join()  # no heartbeat may overwrite the result


_VARIANTS = ("thumbnail", "lossless", "lossy", "master", "cine")


def _checked(name: str, args) -> list:
    """A message's arguments, checked before use: its data directory must be this worker's own (RADPRESS_DATA, as
    the app the worker built set it) and each instance item a UID, a known variant, a codec name and a ratio — so a
    message (from anyone who can write to Redis) never names a path (``Store(root)`` creates folders, variant and
    codec are parts of a file name)."""
    mine = Path(os.environ.get("RADPRESS_DATA", "var")).resolve()
    root = args[0] if isinstance(args, list) and args else None
    if not isinstance(root, str) or "\x00" in root or Path(root).resolve() != mine:
        raise InvalidOptionError(f"A task for data directory {str(root)[:200]!r}, not this worker's ({mine}): refused.",
                                 hint="Start the worker with the app's RADPRESS_DATA (the same path on every host).")
    if name in ("lab", "policy"):
        if len(args) != 3 or isinstance(args[1], bool) or not isinstance(args[1], int) or not isinstance(args[2], str):
            raise InvalidOptionError(f"A {name} task takes (data directory, job id, owner).")
        return [str(mine), args[1], args[2]]
    items = args[1] if len(args) == 2 and isinstance(args[1], list) and args[1] else None
    fields = set(Wanted.__dataclass_fields__)
    for item in items or [None]:
        if not (isinstance(item, dict) and set(item) == fields and isinstance(item["sop_uid"], str)
                and item["variant"] in _VARIANTS and isinstance(item["codec"], str) and re.fullmatch(r"[a-z0-9]{1,16}", item["codec"])
                and isinstance(item["ratio"], (int, float)) and not isinstance(item["ratio"], bool)):
            raise InvalidOptionError(f"Not an instance item of a job: {str(item)[:200]}.")
        check_uid(item["sop_uid"], "SOP Instance UID")
    return [str(mine), items]


def _make_missing(root: str, items: list[dict]):
    """The instance's artifacts still missing, under its lock: a task delivered twice (or sent again) makes nothing twice."""
    wanted = [Wanted(**item) for item in items]
    store = Store(root)
    with item_lock(root, f"engine:{wanted[0].sop_uid}", timeout=3600):  # (make_artifact takes "instance:" itself)
        missing = [w for w in wanted if not _made(store, w)]
        if not missing:
            return 0, None, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, None
        return _make_for_instance(root, missing)


def _made(store: Store, wanted: Wanted) -> bool:
    artifact = store.artifact(wanted.sop_uid, wanted.variant, wanted.ratio)
    return artifact is not None and artifact.codec == wanted.codec


# -- in the job runner ------------------------------------------------------------
@dataclasses.dataclass
class _Sent:
    name: str
    args: list
    result: object  # celery AsyncResult


class CeleryPool(Pool):
    """:class:`core.workers.WorkerPool`'s interface over Celery: up to *size* tasks in flight, outcomes by :meth:`wait`.

    *size* is how many instances are queued at once; set it to at least the
    workers' total concurrency so none waits for the runner.
    """

    remote = True  # its tasks run elsewhere: a runner shutting down does not wait for them

    def __init__(self, size: int, url: str | None = None, poll: float = 0.1):
        self.size = max(1, size)
        self._app = celery_app(url)
        self._poll = poll
        self._busy: dict[Hashable, _Sent] = {}
        self._heard = time.monotonic()  # when a worker last took or finished one of our tasks

    def submit(self, key: Hashable, fn: Callable, *args) -> None:
        """Queue *fn* (a registered job function) for a Celery worker."""
        if not self.free:
            raise RuntimeError("as many tasks as the pool's size are in flight; wait() for one first")
        name = _NAMES[fn]
        encoded = [args[0], [dataclasses.asdict(w) for w in args[1]]] if name == "instance" else list(args)
        self._busy[key] = _Sent(name, encoded, self._send(name, encoded))

    def _send(self, name: str, args: list):
        return self._app.send_task(TASK, args=(name, args))

    def wait(self, timeout: float | None = None) -> list[Outcome]:
        """Outcomes of the tasks finished within *timeout* seconds; a task whose worker died is sent again meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._busy:
            outcomes = [outcome for key in list(self._busy) if (outcome := self._check(key)) is not None]
            if outcomes or (deadline is not None and time.monotonic() >= deadline):
                return outcomes
            if time.monotonic() - self._heard > QUIET_SECONDS:
                self._heard = time.monotonic()  # once a minute at most
                if not self._app.control.ping(timeout=1.0):
                    log.warning("%d instance(s) wait for a Celery worker and none answers on REDIS_URL; "
                                "start one: celery -A app:celery_app worker", len(self._busy))
            time.sleep(self._poll)
        return []

    def _check(self, key: Hashable) -> Outcome | None:
        sent = self._busy[key]
        result = sent.result
        state = result.state
        if state != "PENDING":
            self._heard = time.monotonic()
        if state == "SUCCESS":
            value = result.result
            del self._busy[key]
            result.forget()
            return Outcome(key, tuple(value) if isinstance(value, list) else value)
        if state in ("FAILURE", "REVOKED"):
            error = f"internal error: {type(result.result).__name__}: {result.result}" if state == "FAILURE" else "the task was revoked"
            del self._busy[key]
            result.forget()
            return Outcome(key, None, error)
        if state in ("RECEIVED", "STARTED") and worker_lost(result.info):
            self._app.control.revoke(result.id)  # a late redelivery is dropped (and would make nothing: _make_missing)
            result.forget()
            sent.result = self._send(sent.name, sent.args)
        return None

    def close(self, timeout: float = 0) -> None:
        """Forget every task in flight; those not started yet are revoked (those running finish, and make nothing twice)."""
        busy, self._busy = self._busy, {}
        if busy:
            self._app.control.revoke([s.result.id for s in busy.values()])


def worker_lost(meta, now: float | None = None) -> bool:
    """True when a started task's worker is gone: on this host both its processes have exited, or its heartbeat is stale.

    A pool process killed alone is not enough: its worker requeues the task (reject_on_worker_lost).
    """
    if not isinstance(meta, dict) or "beat" not in meta:
        return False
    if (now or time.time()) - meta["beat"] > STALE_SECONDS:
        return True
    return meta.get("host") == socket.gethostname() and not _alive(meta.get("pid")) and not _alive(meta.get("worker"))


def _alive(pid) -> bool:
    """A process of this host that has not exited (a zombie, killed but not yet reaped, has)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:
        return True
