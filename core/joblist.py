"""The Jobs page's data: one page of the jobs a user may see, newest first, with the study's patient and description.

Paged in SQL (a clinic's job history grows without bound); the studies a
non-administrator may open are matched inside the query (core.users.visibility_sql),
so a page is always full, the page count is exact, and 10,000 studies cost no
query each.  With REDIS_URL set the jobs' work runs on Celery workers started
apart from the app: when jobs have waited a while and no worker answers, the
Jobs page and ``/api/health`` say so (:func:`missing_worker`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .engine import workers_answer
from .jobs import Jobs
from .present import duration
from .store import Store
from .users import User, visibility_sql, visible_jobs

__all__ = ["JobPage", "job_page", "missing_worker", "PER_PAGE", "WAIT_GRACE_S"]

PER_PAGE = 50
MAX_PAGE = 1 << 31
WAIT_GRACE_S = 20.0  # jobs waiting this long, and no Celery worker answers: say so (a worker starting takes a few s)


@dataclass(frozen=True)
class JobPage:
    jobs: list[dict]  # as Jobs.get describes them, plus study_indexed, patient_name, study_description, study_date
    page: int  # 1-based, clamped to the pages there are
    pages: int
    total: int


def job_page(jobs: Jobs, user: User, page: int = 1, per_page: int = PER_PAGE) -> JobPage:
    """Page *page* (1-based; out of range is clamped) of the jobs of the studies *user* may open."""
    store = jobs.store
    clause, args, _ = visibility_sql(user)  # the rule of core.users.authorize, as SQL: no query per study
    where = "" if user.role == "admin" else f"WHERE st.study_uid IS NOT NULL AND {clause}"
    joins = "LEFT JOIN studies st ON st.study_uid=j.study_uid LEFT JOIN patients p ON p.patient_key=st.patient_key"
    total = store.query(f"SELECT count(*) AS n FROM jobs j {joins} {where}", args)[0]["n"]
    pages = max(1, -(-total // per_page))
    page = min(max(1, page if isinstance(page, int) and 0 < page < MAX_PAGE else 1), pages)
    rows = store.query(
        "SELECT j.*, st.study_uid IS NOT NULL AS study_indexed, p.name AS patient_name, st.description AS study_description, "
        f"st.date AS study_date FROM jobs j {joins} {where} ORDER BY j.id DESC LIMIT ? OFFSET ?",
        (*args, per_page, (page - 1) * per_page))
    shown = [jobs._describe(r) for r in rows]
    return JobPage(visible_jobs(store, user, shown) if user.sees_only_demo else shown, page, pages, total)  # demo: sample errors only


def missing_worker(store: Store, url: str | None = None, grace: float = WAIT_GRACE_S, detail: bool = True) -> str | None:
    """What to tell users when jobs wait for a Celery worker and none runs, else None; with *detail*, how many
    jobs wait and for how long (not for ``/api/health``, which anyone may read).

    Only with a broker (*url*, default REDIS_URL: without one, jobs run in this host's processes) and once the
    oldest unfinished job has waited *grace* seconds; the broker is asked then (:func:`core.engine.workers_answer`).
    """
    url = url or os.environ.get("REDIS_URL")
    if not url:
        return None
    waiting = store.query("SELECT count(*) AS n, min(created) AS since FROM jobs WHERE state IN ('queued', 'running')")[0]
    if not waiting["n"] or time.time() - waiting["since"] < grace or workers_answer(url):
        return None
    if not detail:
        return "No job worker is running: start one with `make worker`."
    jobs = f"{waiting['n']} job{'s' if waiting['n'] != 1 else ''}"
    return (f"No job worker is running: start one with `make worker`. {jobs} waiting, the oldest for "
            f"{duration(time.time() - waiting['since'])}; with REDIS_URL set, jobs run on Celery workers only.")
