"""Background jobs: persistent in the index, resumable, cancellable, parallel across processes.

A job brings one study to what its strategy asks for.  It is re-planned when
it (re)starts, so a job interrupted by a crash or a restart simply continues:
artifacts already in place are not made again.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import resource
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable

from .archive import Wanted, make_artifact, plan
from .compress import artifact_warning
from .errors import RadPressError
from .store import Store, StoreError

__all__ = ["Jobs"]


def _make_for_instance(root: str, wanted: list[Wanted]) -> tuple[int, str | None, float, str | None]:
    """Worker: make one instance's missing artifacts; returns (bytes written, error, worker peak RSS in MB, warning)."""
    store = Store(root)
    written, error, warning = 0, None, None
    try:
        for item in wanted:
            artifact = make_artifact(store, item)
            written += artifact.bytes
            warning = artifact_warning(store.instance(item.sop_uid), artifact) or warning
    except RadPressError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad instance must not stop the job
        error = f"internal error: {type(exc).__name__}: {exc}"
    return written, error, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, warning


class Jobs:
    def __init__(self, store: Store, workers: int = 2):
        self.store = store
        self.workers = workers
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- queue ----------------------------------------------------------------
    def submit(self, study_uid: str, kind: str = "materialize", params: dict | None = None) -> int:
        self.store.study(study_uid)
        with self.store.connect() as db:
            queued = db.execute("SELECT id FROM jobs WHERE study_uid=? AND state='queued' AND kind=?", (study_uid, kind)).fetchone()
            if queued:
                return int(queued["id"])
            cur = db.execute("INSERT INTO jobs (kind, study_uid, state, params, created) VALUES (?,?,?,?,?)",
                             (kind, study_uid, "queued", json.dumps(params or {}), time.time()))
            job_id = int(cur.lastrowid)
        self._wake.set()
        return job_id

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
        job.pop("params", None)
        end = job["finished"] or time.time()
        elapsed = end - job["started"] if job["started"] else 0
        job["mb_per_s"] = job["bytes"] / 1e6 / elapsed if elapsed > 0 else 0.0
        job["errors"] = [dict(e) for e in self.store.query(
            "SELECT sop_uid, error FROM job_items WHERE job_id=? AND state='failed'", (job["id"],))]
        job["warnings"] = [dict(w) for w in self.store.query(
            "SELECT sop_uid, warning FROM job_items WHERE job_id=? AND warning IS NOT NULL", (job["id"],))]
        return job

    # -- running --------------------------------------------------------------
    def resume(self) -> int:
        """After a restart: jobs that were running go back to the queue."""
        with self.store.connect() as db:
            return db.execute("UPDATE jobs SET state='queued', cancel=0 WHERE state='running'").rowcount

    def run_pending(self, progress: Callable[[dict], None] | None = None) -> list[dict]:
        """Run queued jobs until none is left (the CLI and tests call this directly)."""
        finished = []
        while True:
            rows = self.store.query("SELECT * FROM jobs WHERE state='queued' ORDER BY id LIMIT 1")
            if not rows or self._stop.is_set():
                return finished
            finished.append(self._run(int(rows[0]["id"]), progress))

    def _run(self, job_id: int, progress) -> dict:
        job = self.get(job_id)
        try:
            todo = plan(self.store, job["study_uid"])
        except StoreError as exc:
            return self._finish(job_id, "failed", str(exc))
        by_sop: dict[str, list[Wanted]] = {}
        for item in todo.make:
            by_sop.setdefault(item.sop_uid, []).append(item)
        with self.store.connect() as db:
            db.execute("UPDATE jobs SET state='running', started=coalesce(started, ?), total=done+failed+? WHERE id=?",
                       (time.time(), len(by_sop), job_id))
        cancelled = False
        if by_sop:
            cancelled = self._execute(job_id, by_sop, progress)
        if cancelled:
            return self._finish(job_id, "cancelled", "cancelled by a user")
        for artifact in todo.remove:  # only once every new artifact is in place
            self.store.remove_artifact(artifact)
        job = self.get(job_id)
        state = "failed" if job["failed"] and not job["done"] else "done"
        message = f"{job['done']} instance(s) done, {job['failed']} failed, {len(todo.remove)} superseded artifact(s) removed"
        return self._finish(job_id, state, message)

    def _execute(self, job_id: int, by_sop: dict[str, list[Wanted]], progress) -> bool:
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context) as pool:
            pending = {pool.submit(_make_for_instance, str(self.store.root), items): sop for sop, items in by_sop.items()}
            while pending:
                finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    sop = pending.pop(future)
                    written, error, rss, warning = future.result()
                    with self.store.connect() as db:
                        db.execute("INSERT OR REPLACE INTO job_items (job_id, sop_uid, state, error, warning) VALUES (?,?,?,?,?)",
                                   (job_id, sop, "failed" if error else "done", error, warning))
                        column = "failed" if error else "done"
                        db.execute(f"UPDATE jobs SET {column}={column}+1, bytes=bytes+?, peak_rss_mb=max(peak_rss_mb, ?) WHERE id=?",
                                   (written, rss, job_id))
                    if progress:
                        progress(self.get(job_id))
                if self.store.query("SELECT cancel FROM jobs WHERE id=?", (job_id,))[0]["cancel"] or self._stop.is_set():
                    for future in pending:
                        future.cancel()
                    pool.shutdown(wait=True, cancel_futures=True)
                    return not self._stop.is_set()
        return False

    def _finish(self, job_id: int, state: str, message: str) -> dict:
        if self._stop.is_set() and state != "done":
            return self.get(job_id)  # shutting down: stays 'running' and is resumed at the next start
        with self.store.connect() as db:
            db.execute("UPDATE jobs SET state=?, message=?, finished=? WHERE id=?", (state, message, time.time(), job_id))
        return self.get(job_id)

    # -- the background thread of the web app ---------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self.resume()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="radpress-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
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
