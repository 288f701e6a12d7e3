"""The comparison a saved policy starts, as a job: which studies' artifacts change, each then queued for its own job.

Saving answers at once (:func:`core.archive.save_policy` stores the policy);
working out which studies change reads every instance's kind (0.5 s of CPU at
10,000 studies), so it runs as a job of kind ``policy`` in a worker process of
its runner's own lane (:data:`core.jobs.TASKS`), its progress on the Jobs page.

Two saves that race leave no study planned on the older policy.  The save
records, under one lock with the new policy, the policy the archive's copies
follow (:data:`APPLIED`) unless one is pending already.  The job compares that
with the stored policy and queues the studies that differ; then, under the
same lock, it clears :data:`APPLIED` if no save came meanwhile, or moves it to
the policy just compared and compares again.  A study's job plans on the policy
stored when it runs, so the later policy wins.
"""

from __future__ import annotations

import json
import time

from .archive import changed_studies
from .locks import item_lock
from .policy import Policy
from .store import Store, StoreError

__all__ = ["KIND", "POLICY_LOCK", "APPLIED", "pending_policy", "comparison_stalled", "run_policy_job"]

KIND = "policy"
POLICY_LOCK = "policy"  # held by a save (the two rows it writes) and by the job's last step (compare and clear)
APPLIED = "policy_applied"  # settings key: the policy the copies follow while a comparison is pending
_PROGRESS_EVERY_S = 0.25


def _rows(read) -> tuple[str | None, str | None]:
    """(APPLIED, the stored policy) as stored text, in one statement: a consistent pair."""
    rows = {r[0]: r[1] for r in read("SELECT key, value FROM settings WHERE key IN ('policy', ?)", (APPLIED,))}
    return rows.get(APPLIED), rows.get("policy")


def pending_policy(store: Store) -> Policy | None:
    """The policy the archive's copies still follow while a saved policy's comparison has not finished, else None."""
    applied, _ = _rows(store.query)
    return None if applied is None else _policy(applied)


def comparison_stalled(store: Store) -> bool:
    """True when a comparison is pending and no job will run it (cancelled, or failed): the next save starts one."""
    return pending_policy(store) is not None and not store.query(
        "SELECT 1 FROM jobs WHERE kind=? AND state IN ('queued', 'running') LIMIT 1", (KIND,))


def _policy(text: str | None) -> Policy:
    return Policy() if text is None else Policy.stored(json.loads(text))


def run_policy_job(root: str, job_id: int, owner: str) -> tuple[str, str]:
    """Worker process: queue a job for each study whose artifacts differ between the pending and the stored policy,
    comparing again while saves come in; returns (state, message)."""
    from .jobs import Jobs  # (core.jobs runs this task)

    store = Store(root)
    jobs = Jobs(store)
    queued: set[str] = set()
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        if done < total and time.monotonic() - last < _PROGRESS_EVERY_S:
            return
        last = time.monotonic()
        with store.connect() as db:
            db.execute("UPDATE jobs SET done=?, total=? WHERE id=? AND owner=? AND state='running'", (done, total, job_id, owner))

    rounds = 0
    while True:
        applied, current = _rows(store.query)
        if applied is None:
            break
        rounds += 1
        for uid in changed_studies(store, _policy(applied), _policy(current), progress):
            try:
                jobs.submit(uid)
            except StoreError:  # deleted since: nothing of it to plan
                continue
            queued.add(uid)
        with item_lock(root, POLICY_LOCK), store.connect() as db:
            now_applied, now_current = _rows(db.execute)
            if now_applied != applied:  # another comparison moved it on: start from where it left it
                continue
            if now_current == current:
                db.execute("DELETE FROM settings WHERE key=?", (APPLIED,))
                break
            db.execute("UPDATE settings SET value=? WHERE key=?", (current, APPLIED))  # saved meanwhile: compare again
    if not queued:
        return "done", "Policy compared: no study's copies change, so no job was queued." if rounds else "Policy already compared."
    return "done", f"Policy compared: {len(queued)} {'study gets' if len(queued) == 1 else 'studies get'} new copies (their jobs are queued)."
