"""Jobs with progress, throughput, errors and a cancel button."""

import time

import dash_bootstrap_components as dbc
from dash import html

CANCEL = "job-cancel"


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
            html.Td(job["study_uid"][-20:], title=job["study_uid"]),
            html.Td(dbc.Badge(job["state"], color={"done": "success", "failed": "danger", "running": "info"}.get(job["state"], "secondary"),
                              className=f"job-state job-state-{job['state']}")),
            html.Td(dbc.Progress(value=percent, label=f"{finished}/{total}", style={"minWidth": "8rem"})),
            html.Td(f"{job['mb_per_s']:.1f} MB/s"),
            html.Td(time.strftime("%H:%M:%S", time.localtime(job["created"]))),
            html.Td([job.get("message") or "", html.Ul(errors, className="mb-0 small text-danger") if errors else None,
                     html.Ul(warnings, className="mb-0 small text-warning job-warnings") if warnings else None]),
            html.Td(action),
        ], id=f"job-row-{job['id']}"))
    header = html.Thead(html.Tr([html.Th(h) for h in ("#", "Study", "State", "Progress", "Throughput", "Created", "Result", "")]))
    return dbc.Table([header, html.Tbody(rows)], size="sm", hover=True, id="jobs-table")
