"""Background jobs: persistent in the index, resumable, cancellable, parallel across processes.

A job brings one study to what its strategy asks for.  Several processes may
run jobs over one archive: a runner *claims* a job in one write transaction,
holding a lease (owner + expiry) that it renews while it works; a job whose
runner died goes back to the queue once the lease expires (at once when the
runner was a process on this host that is gone).  The job is re-planned until
nothing is missing, so an instance stored while it runs is not left without
its copies, and artifacts already in place are not made again.  Each instance
is made in a worker process (:mod:`core.workers`); one killed by the OS fails
that instance alone.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import secrets
import socket
import threading
import time
from typing import Callable

from .archive import Wanted, make_artifacts, plan, storage_report
from .compress import artifact_warning
from .errors import RadPressError
from .labjobs import run_lab_job
from .policyjobs import run_policy_job
from .store import Store, StoreError
from .workers import Outcome, Pool, WorkerPool, warm

__all__ = ["Jobs", "LEASE_SECONDS"]

LEASE_SECONDS = 30.0
# Kinds that are one task run in a worker process, and in the web app by a runner of their own: a lab sweep of
# minutes never holds up a study's copies; a saved policy's comparison (core.policyjobs) waits for neither.
TASKS: dict[str, Callable] = {"lab": run_lab_job, "policy": run_policy_job}


_STORES: dict[str, Store] = {}


def _worker_store(root: str) -> Store:
    """The archive at *root*, opened once per worker process: opening checks the schema under a write lock,
    which every instance would otherwise queue for behind the runner's own writes."""
    store = _STORES.get(root)
    if store is None:
        store = _STORES[root] = Store(root)
    return store


def _make_for_instance(root: str, wanted: list[Wanted]) -> tuple[int, str | None, float, str | None]:
    """Worker: make one instance's missing artifacts (one decode for all, :func:`make_artifacts`); returns
    (bytes written, error, worker peak RSS in MB, warning)."""
    store = _worker_store(root)
    written, error, warning = 0, None, None
    try:
        row = store.instance(wanted[0].sop_uid) if wanted else None
        for artifact in make_artifacts(store, wanted):
            written += artifact.bytes
            warning = artifact_warning(row, artifact) or warning
    except RadPressError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad instance must not stop the job
        error = f"internal error: {type(exc).__name__}: {exc}"
    return written, error, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, warning


def _runner_name() -> str:
    """host:pid:token, unique per runner: two runners of one process are still told apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _runner_gone(owner: str | None) -> bool:
    """True when *owner* ran on this host and its process has exited (a lease from elsewhere must expire)."""
    if not owner:
        return True
    host, pid, _token = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Jobs:
    def __init__(self, store: Store, workers: int = 2, lease: float = LEASE_SECONDS, kinds: tuple[str, ...] | None = None,
                 pool: Callable[[int], Pool] = WorkerPool, settle: float = 0.0):
        self.store = store
        # seconds a study must have received no instance before its copies are made (the app's runner: a study
        # still arriving from a modality is not planned again per instance, and its copies do not compete with it)
        self.settle = settle
        self.pool = pool  # where instances are made: local processes, or Celery (core.engine.pool_factory)
        self.kinds = kinds  # the kinds this runner claims (None: every kind but those its lanes run)
        self._lanes: list[Jobs] = []
        self.workers = workers
        self.lease = lease
        self.owner = _runner_name()
        self._renewed = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- queue ----------------------------------------------------------------
    def submit(self, study_uid: str, kind: str = "materialize", params: dict | None = None, key: str | None = None) -> int:
        """Queue a job for the study, or return the one already queued (a running one is re-planned by a new job).

        With *key* (single flight), a queued or running job of this kind with that key is joined instead.
        """
        self.store.study(study_uid)
        if key is None:  # once per upload request: a job already queued is found without taking the write lock
            queued = self.store.query("SELECT id FROM jobs WHERE study_uid=? AND state='queued' AND kind=?", (study_uid, kind))
            if queued:
                return int(queued[0]["id"])
        with self.store.connect() as db:
            if key is None:
                queued = db.execute("SELECT id FROM jobs WHERE study_uid=? AND state='queued' AND kind=?", (study_uid, kind)).fetchone()
            else:
                queued = db.execute("SELECT id FROM jobs WHERE study_uid=? AND state IN ('queued', 'running') AND kind=? "
                                    "AND json_extract(params, '$.key')=?", (study_uid, kind, key)).fetchone()
            if queued:
                return int(queued["id"])
            cur = db.execute("INSERT INTO jobs (kind, study_uid, state, params, created) VALUES (?,?,?,?,?)",
                             (kind, study_uid, "queued", json.dumps({**(params or {}), **({"key": key} if key else {})}), time.time()))
            job_id = int(cur.lastrowid)
        self._wake.set()
        for lane in self._lanes:
            if kind in lane.kinds:
                lane._wake.set()
        return job_id

    def latest(self, study_uid: str, kind: str, key: str) -> dict | None:
        """The newest job of this kind and single-flight key, or None."""
        rows = self.store.query("SELECT * FROM jobs WHERE study_uid=? AND kind=? AND json_extract(params, '$.key')=? "
                                "ORDER BY id DESC LIMIT 1", (study_uid, kind, key))
        return self._describe(rows[0]) if rows else None

    def cancel(self, job_id: int) -> dict:
        job = self.get(job_id)
        with self.store.connect() as db:
            if job["state"] == "queued":
                db.execute("UPDATE jobs SET state='cancelled', finished=?, message='cancelled before it started' WHERE id=?", (time.time(), job_id))
            elif job["state"] == "running":
                db.execute("UPDATE jobs SET cancel=1 WHERE id=?", (job_id,))
        return self.get(job_id)

    def get(self, job_id: int) -> dict:
        rows = self.store.query("SELECT * FROM jobs WHERE id=?", (job_id,))
        if not rows:
            raise StoreError(f"No job {job_id}.")
        return self._describe(rows[0])

    def list(self, limit: int = 100) -> list[dict]:
        return [self._describe(r) for r in self.store.query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))]

    def _describe(self, row) -> dict:
        job = dict(row)
        for private in ("params", "owner", "lease"):
            job.pop(private, None)
        end = job["finished"] or time.time()
        elapsed = end - job["started"] if job["started"] else 0
        job["mb_per_s"] = job["bytes"] / 1e6 / elapsed if elapsed > 0 else 0.0
        job["duration_s"] = elapsed  # since it first started, to its end or now
        job["instances_per_s"] = (job["done"] + job["failed"]) / elapsed if elapsed > 0 else 0.0
        job["errors"] = [dict(e) for e in self.store.query(
            "SELECT sop_uid, error FROM job_items WHERE job_id=? AND state='failed'", (job["id"],))]
        job["warnings"] = [dict(w) for w in self.store.query(
            "SELECT sop_uid, warning FROM job_items WHERE job_id=? AND warning IS NOT NULL", (job["id"],))]
        return job

    # -- leases -----------------------------------------------------------------
    def claim(self) -> dict | None:
        """Take the oldest queued job whose study no other runner is working on, with a fresh lease; None if there is none.

        One write transaction (BEGIN IMMEDIATE): two runners, in any
        processes, never claim the same job.
        """
        now = time.time()
        if self.kinds is not None:
            kinds = f"kind IN ({','.join('?' * len(self.kinds))})", self.kinds
        else:
            other = [k for lane in self._lanes for k in lane.kinds]
            kinds = f"kind NOT IN ({','.join('?' * len(other))})", other
        with self.store.connect() as db:
            self._release_abandoned(db, now)
            settling, params = "", tuple(kinds[1])
            if self.settle > 0:  # (an instance "from the future", the clock set back, does not hold a study up)
                settling = (" AND NOT (j.kind='materialize' AND EXISTS (SELECT 1 FROM instances i JOIN series s "
                            "USING (series_uid) WHERE s.study_uid=j.study_uid AND i.created>? AND i.created<=?))")
                params += (now - self.settle, now)
            row = db.execute(
                f"SELECT id FROM jobs j WHERE state='queued' AND {kinds[0]} AND NOT EXISTS "
                "(SELECT 1 FROM jobs r WHERE r.study_uid=j.study_uid AND r.kind=j.kind AND r.state='running')"
                f"{settling} ORDER BY id LIMIT 1", params).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state='running', owner=?, lease=?, started=coalesce(started, ?) WHERE id=?",
                       (self.owner, now + self.lease, now, row["id"]))
        self._renewed = time.monotonic()
        return self.get(int(row["id"]))

    def renew(self, job_id: int) -> bool:
        """Extend this runner's lease; False when the job is no longer ours (the lease expired and another runner took it)."""
        with self.store.connect() as db:
            mine = db.execute("UPDATE jobs SET lease=? WHERE id=? AND owner=? AND state='running'",
                              (time.time() + self.lease, job_id, self.owner)).rowcount == 1
        self._renewed = time.monotonic()
        return mine

    def _still_mine(self, job_id: int) -> bool:
        """Renew the lease once a third of it has passed; False when the job was lost."""
        return time.monotonic() - self._renewed < self.lease / 3 or self.renew(job_id)

    def resume(self) -> int:
        """Jobs whose runner died go back to the queue (a cancel asked for meanwhile is honoured); returns how many."""
        with self.store.connect() as db:
            return self._release_abandoned(db, time.time())

    @staticmethod
    def _release_abandoned(db, now: float) -> int:
        released = 0
        for row in db.execute("SELECT id, owner, lease, cancel FROM jobs WHERE state='running'").fetchall():
            if (row["lease"] or 0) >= now and not _runner_gone(row["owner"]):
                continue
            if row["cancel"]:
                db.execute("UPDATE jobs SET state='cancelled', finished=?, message='cancelled by a user' WHERE id=?", (now, row["id"]))
            else:
                db.execute("UPDATE jobs SET state='queued', owner=NULL, lease=NULL WHERE id=?", (row["id"],))
                released += 1
        return released

    # -- running --------------------------------------------------------------
    def run_pending(self, progress: Callable[[dict], None] | None = None) -> list[dict]:
        """Claim and run jobs until none is left for this runner (the CLI and tests call this directly)."""
        finished = []
        with self.pool(self.workers) as pool:  # workers start with the first task and serve every job of this run
            while not self._stop.is_set():
                job = self.claim()
                if job is None:
                    break
                finished.append(self._run(job, pool, progress))
        return finished

    def _run(self, job: dict, pool: Pool, progress) -> dict:
        """Plan, make, and plan again until nothing new is missing; superseded artifacts go last."""
        job_id = job["id"]
        if job["cancel"]:
            return self._finish(job_id, "cancelled", "cancelled by a user")
        if job["kind"] in TASKS:
            return self._run_task(job, pool, TASKS[job["kind"]])
        tried = {r["sop_uid"] for r in self.store.query("SELECT sop_uid FROM job_items WHERE job_id=?", (job_id,))}
        while True:
            try:
                todo = plan(self.store, job["study_uid"])
            except StoreError as exc:
                return self._finish(job_id, "failed", str(exc))
            by_sop: dict[str, list[Wanted]] = {}
            for item in todo.make:
                if item.sop_uid not in tried:  # each instance once per job: a failure is recorded, not retried forever
                    by_sop.setdefault(item.sop_uid, []).append(item)
            if not by_sop:
                break
            tried |= by_sop.keys()
            with self.store.connect() as db:
                db.execute("UPDATE jobs SET total=done+failed+? WHERE id=? AND owner=?", (len(by_sop), job_id, self.owner))
            ended = self._execute(job_id, by_sop, pool, progress)
            if ended == "cancelled":
                return self._finish(job_id, "cancelled", "cancelled by a user")
            if ended == "stopped":  # shutting down: back to the queue for the next runner
                with self.store.connect() as db:
                    db.execute("UPDATE jobs SET state='queued', owner=NULL, lease=NULL WHERE id=? AND owner=?", (job_id, self.owner))
                return self.get(job_id)
            if ended == "lost":
                return self.get(job_id)
        for artifact in todo.remove:  # only once every new artifact is in place
            if not self._still_mine(job_id):
                return self.get(job_id)
            self.store.remove_artifact(artifact)
        try:  # warm the study's storage projection (a sample encode when it has no lossless copies): never in a request
            storage_report(self.store, job["study_uid"])
        except RadPressError:
            pass
        job = self.get(job_id)
        state = "failed" if job["failed"] and not job["done"] else "done"
        message = f"{job['done']} instance(s) done, {job['failed']} failed, {len(todo.remove)} superseded artifact(s) removed"
        return self._finish(job_id, state, message)

    def _run_task(self, job: dict, pool: Pool, task: Callable) -> dict:
        """A job that is one task (a lab sweep) in a worker process, which records its own progress and reads the
        cancel flag; meanwhile the lease is renewed.  Shutting down kills the task and queues the job again."""
        job_id = job["id"]
        pool.submit(job_id, task, str(self.store.root), job_id, self.owner)
        outcomes = []
        while pool.busy:
            outcomes += pool.wait(timeout=0.5)
            if pool.busy and (not self._still_mine(job_id) or self._stop.is_set()):
                pool.close(timeout=0)  # the task's writes check the owner: a lost job is not touched
                with self.store.connect() as db:
                    db.execute("UPDATE jobs SET state='queued', owner=NULL, lease=NULL WHERE id=? AND owner=?", (job_id, self.owner))
                return self.get(job_id)
        outcome = outcomes[0]
        state, message = outcome.value if outcome.error is None else ("failed", f"the {job['kind']} job stopped: {outcome.error}")
        return self._finish(job_id, state, message)

    def _execute(self, job_id: int, by_sop: dict[str, list[Wanted]], pool: Pool, progress) -> str:
        """Make every instance's artifacts in worker processes; returns done, cancelled, stopped or lost (the lease).

        Whatever else ends it, the tasks already handed out are waited for, so
        the pool is idle for the next job; shutting down waits for none.
        """
        queue = list(by_sop.items())
        ended = "done"

        def hand_out() -> None:
            while queue and ended == "done" and pool.free:
                sop, items = queue.pop(0)
                pool.submit(sop, _make_for_instance, str(self.store.root), items)

        while (queue and ended == "done") or pool.busy:
            hand_out()
            outcomes = pool.wait(timeout=0.5)
            hand_out()  # a worker that answered gets its next instance before its outcome is recorded
            for outcome in outcomes:
                if self._record(job_id, outcome) and progress:  # not recorded once the job is lost
                    progress(self.get(job_id))
            if ended == "done" and not self._still_mine(job_id):
                ended = "lost"
            elif ended == "done" and self._stop.is_set():
                ended = "stopped"
            elif ended == "done" and self.store.query("SELECT cancel FROM jobs WHERE id=?", (job_id,))[0]["cancel"]:
                ended = "cancelled"
            if ended == "stopped":  # shutting down waits for no instance (a 120-frame one takes a minute): local workers
                pool.close(timeout=0)  # are killed (their writes are atomic), Celery's finish on their hosts; the
                # runner that takes the job next makes what is missing
        return ended

    def _record(self, job_id: int, outcome: Outcome) -> bool:
        """Count one instance's result (a dead worker's too); False when the job is no longer this runner's."""
        written, error, rss, warning = outcome.value if outcome.error is None else (0, outcome.error, 0.0, None)
        column = "failed" if error else "done"
        with self.store.connect() as db:
            mine = db.execute(f"UPDATE jobs SET {column}={column}+1, bytes=bytes+?, peak_rss_mb=max(peak_rss_mb, ?) "
                              "WHERE id=? AND owner=?", (written, rss, job_id, self.owner)).rowcount
            if mine:
                db.execute("INSERT OR REPLACE INTO job_items (job_id, sop_uid, state, error, warning) VALUES (?,?,?,?,?)",
                           (job_id, outcome.key, column, error, warning))
        return bool(mine)

    def _finish(self, job_id: int, state: str, message: str) -> dict:
        with self.store.connect() as db:
            db.execute("UPDATE jobs SET state=?, message=?, finished=? WHERE id=? AND owner=?",
                       (state, message, time.time(), job_id, self.owner))
        return self.get(job_id)

    # -- the background thread of the web app ---------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self.resume()
        self._stop.clear()
        if self.pool is WorkerPool and self.kinds is None:
            warm()  # the first job's workers are forked ready, not after a second of imports each
        if self.kinds is None and not self._lanes:
            self._lanes = [Jobs(self.store, workers=1, lease=self.lease, kinds=(kind,), pool=self.pool) for kind in TASKS]
        for lane in self._lanes:
            lane.start()
        self._thread = threading.Thread(target=self._loop, name="radpress-jobs", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        """True while this runner's thread runs (``/api/health``)."""
        return bool(self._thread and self._thread.is_alive())

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for lane in self._lanes:
            lane.stop()
        if self._thread:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pending()
            except Exception:  # noqa: BLE001 - the thread must outlive one bad job
                logging.getLogger(__name__).exception("job runner")
            self._wake.wait(timeout=2)
            self._wake.clear()


def submit_archive_job(jobs: Jobs, kind: str, params: dict | None = None) -> int:
    """Queue a job about the whole archive, not one study (a saved policy's comparison), or return the one of this
    kind already queued: it will read what is stored when it runs."""
    with jobs.store.connect() as db:
        queued = db.execute("SELECT id FROM jobs WHERE study_uid IS NULL AND state='queued' AND kind=?", (kind,)).fetchone()
        if queued:
            return int(queued["id"])
        job_id = int(db.execute("INSERT INTO jobs (kind, study_uid, state, params, created) VALUES (?,NULL,?,?,?)",
                                (kind, "queued", json.dumps(params or {}), time.time())).lastrowid)
    for runner in (jobs, *jobs._lanes):
        runner._wake.set()
    return job_id
