"""The Jobs page's data: one page of the jobs a user may see, newest first, with the study's patient and description.

Paged in SQL (a clinic's job history grows without bound); the studies a
non-administrator may open are matched inside the query, so a page is always
full and the page count is exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .jobs import Jobs
from .users import User, visible_jobs, visible_studies

__all__ = ["JobPage", "job_page", "PER_PAGE"]

PER_PAGE = 50
MAX_PAGE = 1 << 31


@dataclass(frozen=True)
class JobPage:
    jobs: list[dict]  # as Jobs.get describes them, plus study_indexed, patient_name, study_description, study_date
    page: int  # 1-based, clamped to the pages there are
    pages: int
    total: int


def job_page(jobs: Jobs, user: User, page: int = 1, per_page: int = PER_PAGE) -> JobPage:
    """Page *page* (1-based; out of range is clamped) of the jobs of the studies *user* may open."""
    store = jobs.store
    if user.role == "admin":
        where, args = "", ()
    else:  # one parameter however many studies (SQLite caps the number of parameters)
        where, args = "WHERE j.study_uid IN (SELECT value FROM json_each(?))", (json.dumps([s["study_uid"] for s in visible_studies(store, user)]),)
    total = store.query(f"SELECT count(*) AS n FROM jobs j {where}", args)[0]["n"]
    pages = max(1, -(-total // per_page))
    page = min(max(1, page if isinstance(page, int) and 0 < page < MAX_PAGE else 1), pages)
    rows = store.query(
        "SELECT j.*, s.study_uid IS NOT NULL AS study_indexed, p.name AS patient_name, s.description AS study_description, "
        "s.date AS study_date FROM jobs j "
        f"LEFT JOIN studies s ON s.study_uid=j.study_uid LEFT JOIN patients p ON p.patient_key=s.patient_key {where} "
        "ORDER BY j.id DESC LIMIT ? OFFSET ?", (*args, per_page, (page - 1) * per_page))
    return JobPage(visible_jobs(store, user, [jobs._describe(r) for r in rows]), page, pages, total)
