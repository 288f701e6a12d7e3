"""Jobs with the study they serve, progress, duration, throughput, errors and a cancel button."""

import time
from urllib.parse import quote

import dash_bootstrap_components as dbc
from dash import dcc, html

from core.present import dicom_date, duration, person_name

CANCEL = "job-cancel"


def _study_cell(job: dict) -> html.Td:
    """Patient and study description (the UID on hover); a study no longer in the index keeps the tail of its UID."""
    uid = job["study_uid"]
    if uid is None:  # a job about the whole archive
        return html.Td("All studies (policy saved)" if job["kind"] == "policy" else "All studies", className="job-study")
    if not job.get("study_indexed"):
        return html.Td(uid[-20:], title=uid, className="job-study")
    about = " · ".join(t for t in (job.get("study_description") or "", dicom_date(job.get("study_date"))) if t)
    return html.Td([html.Div(dcc.Link(person_name(job["patient_name"]), href=f"/study?uid={quote(uid)}"), className="job-patient"),
                    html.Div(about or "(no description)", className="small text-muted job-description")],
                   title=uid, className="job-study")


def _speed(job: dict) -> str:
    if not job.get("started"):
        return ""
    mb = job["mb_per_s"]
    return f"{job['instances_per_s']:.1f} inst/s, {mb:.{1 if mb >= 1 else 2}f} MB/s"  # a small job's 0.04 MB/s is not 0.0


def make_job_table(jobs: list[dict], can_cancel: bool) -> html.Div:
    if not jobs:
        return html.P("No jobs yet.", className="text-muted")
    rows = []
    for job in jobs:
        total = job["total"] or 0
        finished = job["done"] + job["failed"]
        percent = 100 * finished / total if total else (100 if job["state"] == "done" else 0)
        errors = [html.Li(f"{e['sop_uid']}: {e['error']}") for e in job["errors"]]
        warnings = [html.Li(f"{w['sop_uid']}: {w['warning']}") for w in job.get("warnings", [])]  # lossy copies that missed their target
        action = (dbc.Button("Cancel", id={"type": CANCEL, "job": job["id"]}, size="sm", color="danger", outline=True)
                  if can_cancel and job["state"] in ("queued", "running") else None)
        rows.append(html.Tr([
            html.Td(job["id"]),
            _study_cell(job),
            html.Td(dbc.Badge(job["state"], color={"done": "success", "failed": "danger", "running": "info"}.get(job["state"], "secondary"),
                              className=f"job-state job-state-{job['state']}")),
            html.Td(dbc.Progress(value=percent, label=f"{finished}/{total}", style={"minWidth": "8rem"})),
            html.Td(duration(job["duration_s"]) if job.get("started") else "", className="job-duration"),
            html.Td(_speed(job), className="job-speed"),
            html.Td(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["created"]))),
            html.Td([job.get("message") or "", html.Ul(errors, className="mb-0 small text-danger") if errors else None,
                     html.Ul(warnings, className="mb-0 small text-warning job-warnings") if warnings else None]),
            html.Td(action),
        ], id=f"job-row-{job['id']}"))
    header = html.Thead(html.Tr([html.Th(h) for h in ("#", "Study", "State", "Progress", "Duration", "Throughput", "Created", "Result", "")]))
    return dbc.Table([header, html.Tbody(rows)], size="sm", hover=True, id="jobs-table")
