"""Jobs: running and finished, newest first, 50 a page, with the study's patient, progress, duration, throughput,
errors per instance and cancel; above them, a warning when jobs wait for a Celery worker and none runs."""

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, ctx, dcc, html

from components import make_job_table
from components.job_progress import CANCEL
from core.auth import current_user
from core.joblist import MAX_PAGE, job_page, missing_worker
from core.users import allowed, authorize

dash.register_page(__name__, path="/jobs", title="Jobs — RadPress", name="Jobs")


def _page_number(value) -> int:
    """A page number from the URL or a store: a positive integer, else the first page."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 1
    return number if 0 < number < MAX_PAGE else 1


def layout(page=None, **_query):
    pager = html.Div([
        dbc.Button("‹ Newer", id="jobs-prev", size="sm", color="secondary", outline=True, className="me-2"),
        html.Span(id="jobs-page-label", className="me-2"),
        dbc.Button("Older ›", id="jobs-next", size="sm", color="secondary", outline=True),
    ], className="mb-2 d-flex align-items-center")
    return html.Div([html.H2("Jobs"), html.Div(id="jobs-worker"), dcc.Interval(id="jobs-worker-refresh", interval=5000),
                     pager, html.Div(id="jobs-body"), dcc.Store(id="jobs-page", data=_page_number(page)),
                     dcc.Store(id="jobs-pages", data=1),
                     dcc.Interval(id="jobs-refresh", interval=1500)])


@callback(Output("jobs-page", "data"), Input("jobs-prev", "n_clicks"), Input("jobs-next", "n_clicks"), State("jobs-page", "data"),
          State("jobs-pages", "data"), prevent_initial_call=True)
def turn(_prev, _next, page, pages):
    """One page newer or older, within the pages there are."""
    return max(1, min(_page_number(pages), _page_number(page) + (-1 if ctx.triggered_id == "jobs-prev" else 1)))


@callback(Output("jobs-body", "children"), Output("jobs-page-label", "children"), Output("jobs-prev", "disabled"),
          Output("jobs-next", "disabled"), Output("jobs-pages", "data"),
          Input("jobs-refresh", "n_intervals"), Input({"type": CANCEL, "job": ALL}, "n_clicks"), Input("jobs-page", "data"))
def refresh(_n, _clicks, page):
    from core.routes import archive

    store, jobs = archive()
    user = current_user()
    trigger = ctx.triggered_id
    if (isinstance(trigger, dict) and trigger.get("type") == CANCEL and allowed(user, "jobs") and any(_clicks or [])
            and isinstance(trigger.get("job"), int) and 0 < trigger["job"] < 1 << 63):
        job = jobs.get(trigger["job"])
        authorize(store, user, "jobs", study_uid=job["study_uid"])
        jobs.cancel(job["id"])
    shown = job_page(jobs, user, _page_number(page))
    label = f"Page {shown.page} of {shown.pages} ({shown.total} job{'s' if shown.total != 1 else ''})"
    return make_job_table(shown.jobs, allowed(user, "jobs")), label, shown.page <= 1, shown.page >= shown.pages, shown.pages


@callback(Output("jobs-worker", "children"), Input("jobs-worker-refresh", "n_intervals"))
def worker_warning(_n):
    """'No job worker is running' while jobs wait for a Celery worker and none answers (core.joblist.missing_worker)."""
    from core.routes import archive

    store, _ = archive()
    missing = missing_worker(store)
    return dbc.Alert(dcc.Markdown(missing, className="mb-0"), color="danger", id="jobs-no-worker") if missing else None  # `make worker` as code
