"""Quality-lab sweeps as jobs: never inside a web request, one sweep per study and settings however many ask.

A sweep takes seconds to minutes (every codec and ratio encoded, decoded and
measured on every instance).  A request only reads the cache or starts — or
joins — the job that computes it (:meth:`core.jobs.Jobs.submit` with the
sweep's cache key: single flight); the job runs in a worker process of a
runner of its own, records its progress in the job table (``/api/jobs/<id>``)
and stores the result under that key, where the next request finds it.
Who may run how large a sweep is decided once, by :func:`core.users.lab_scope_for`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from .archive import cached_lab, lab_key
from .errors import RadPressError
from .store import Store
from .users import User, allowed, lab_scope_for

__all__ = ["LabState", "LabNotReady", "TooManySweeps", "LAB_MAX_ACTIVE", "start_lab", "lab_state", "lab_result",
           "cancel_lab", "run_lab_job"]

LAB_MAX_ACTIVE = 2  # sweeps one user may have queued or running at once (joining one already asked for is free)
_PROGRESS_EVERY_S = 0.25


class LabNotReady(RadPressError):
    """The sweep for these settings has not finished (or failed); its state says why."""

    http_status = 409


class TooManySweeps(RadPressError):
    """The user already has :data:`LAB_MAX_ACTIVE` sweeps queued or running."""

    http_status = 429


@dataclass(frozen=True)
class LabState:
    """Where a sweep stands: ``done`` (with its result), ``queued``/``running`` (with its job), ``failed``,
    ``cancelled`` (with the job and its message), or ``none`` (never asked for, or evicted from the cache)."""

    state: str
    result: dict | None = None
    job: dict | None = None

    def answer(self) -> dict:
        """The JSON an HTTP client gets while the sweep is not done."""
        job = self.job or {}
        return {"state": self.state, "job": job.get("id"), "done": job.get("done", 0), "total": job.get("total", 0),
                "message": job.get("message"), "progress": f"/api/jobs/{job['id']}" if job else None}


def _scope(store: Store, user: User, study_uid: str, config):
    scope = lab_scope_for(store, user, study_uid, config)
    return scope, lab_key(store, study_uid, scope.config, scope.sop_uids)


def lab_state(store: Store, jobs, user: User, study_uid: str, config=None) -> LabState:
    """The sweep's state for this user and settings, read only: nothing is started."""
    _, key = _scope(store, user, study_uid, config)
    return _state(store, jobs, study_uid, key)


def _state(store: Store, jobs, study_uid: str, key: str) -> LabState:
    if (result := cached_lab(store, key)) is not None:
        return LabState("done", result=result)
    job = jobs.latest(study_uid, "lab", key)
    if job is None or job["state"] == "done":  # done but evicted from the cache: to be run again
        return LabState("none")
    return LabState(job["state"], job=job)


def start_lab(store: Store, jobs, user: User, study_uid: str, config=None, *, again: bool = False) -> LabState:
    """The cached sweep, or the job computing it: joined when one with the same settings is queued or running,
    else started.  A sweep that failed or was cancelled is started again only when *again*.

    Raises the scope's refusals (403, a sweep too large: 400) and :class:`TooManySweeps` (429).
    """
    scope, key = _scope(store, user, study_uid, config)
    state = _state(store, jobs, study_uid, key)
    if state.state in ("done", "queued", "running") or (state.state in ("failed", "cancelled") and not again):
        return state
    active = store.query("SELECT count(*) AS n FROM jobs WHERE kind='lab' AND state IN ('queued', 'running') "
                         "AND json_extract(params, '$.user')=?", (user.name,))[0]["n"]
    if active >= LAB_MAX_ACTIVE:
        raise TooManySweeps(f"{user.name} already has {active} quality-lab sweeps queued or running (at most {LAB_MAX_ACTIVE}).",
                            hint="Wait for one to finish, or cancel one on the Jobs page.")
    config = scope.config
    params = {"user": user.name, "codecs": list(config.codecs), "ratios": list(config.ratios),
              "sop_uids": sorted(scope.sop_uids) if scope.sop_uids is not None else None,
              "seconds": scope.seconds, "encodings": scope.encodings}
    job = jobs.get(jobs.submit(study_uid, "lab", params, key=key))  # joined when another request got there first
    return LabState(job["state"], job=job)


def lab_result(store: Store, jobs, user: User, study_uid: str, config=None) -> dict:
    """The finished sweep; :class:`LabNotReady` (409) with its state when there is none to show."""
    state = lab_state(store, jobs, user, study_uid, config)
    if state.result is None:
        detail = f": {state.job['message']}" if state.job and state.job.get("message") else ""
        raise LabNotReady(f"The quality-lab sweep for these settings is {state.state}{detail}.",
                          hint="Run the sweep (POST /api/studies/<uid>/lab) and wait for its job.")
    return state.result


def cancel_lab(store: Store, jobs, user: User, study_uid: str, config=None) -> LabState:
    """Cancel the sweep's job: the user who started it or an administrator may."""
    state = lab_state(store, jobs, user, study_uid, config)
    if state.job and state.state in ("queued", "running"):
        started_by = json.loads(store.query("SELECT params FROM jobs WHERE id=?", (state.job["id"],))[0]["params"]).get("user")
        if started_by == user.name or allowed(user, "jobs"):
            job = jobs.cancel(state.job["id"])
            return LabState(job["state"], job=job)
    return state


class _Stop(Exception):
    """The task ends early: cancelled, lost, or over its time box (the message says which)."""

    def __init__(self, state: str, message: str):
        super().__init__(message)
        self.state = state


def run_lab_job(root: str, job_id: int, owner: str) -> tuple[str, str]:
    """Worker process: run job *job_id*'s sweep, write its progress while it is *owner*'s; returns (state, message)."""
    from .archive import study_lab
    from .lab import LabConfig

    store = Store(root)
    row = store.query("SELECT study_uid, params FROM jobs WHERE id=?", (job_id,))[0]
    params = json.loads(row["params"])
    config = LabConfig(codecs=tuple(params["codecs"]), ratios=tuple(params["ratios"]))
    deadline = time.monotonic() + params["seconds"] if params.get("seconds") is not None else None
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        if deadline is not None and time.monotonic() > deadline:
            raise _Stop("failed", f"Demo lab runs stop after {params['seconds']:g} s. Log in with a clinic account for a full sweep.")
        if done < total and time.monotonic() - last < _PROGRESS_EVERY_S:
            return
        last = time.monotonic()
        with store.connect() as db:
            mine = db.execute("UPDATE jobs SET done=?, total=? WHERE id=? AND owner=? AND state='running'",
                              (done, total, job_id, owner)).rowcount
            cancel = db.execute("SELECT cancel FROM jobs WHERE id=?", (job_id,)).fetchone()["cancel"]
        if not mine:
            raise _Stop("lost", "the job is no longer this runner's")
        if cancel:
            raise _Stop("cancelled", "cancelled by a user")

    sops = set(params["sop_uids"]) if params.get("sop_uids") is not None else None
    try:
        result = study_lab(store, row["study_uid"], config, progress, refresh=True, sop_uids=sops)
    except _Stop as stop:
        return stop.state, str(stop)
    except RadPressError as exc:
        return "failed", str(exc)
    return "done", f"quality-lab sweep: {len(result['per_instance'])} measurements over {result['instances']} instance(s) in {result['wall_s']:.1f} s"
