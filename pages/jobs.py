"""Jobs: running and finished, with progress, throughput, errors per instance and cancel."""

import dash
from dash import ALL, Input, Output, callback, ctx, dcc, html

from components import make_job_table
from components.job_progress import CANCEL
from core.auth import current_user
from core.users import allowed, authorize, visible_jobs

dash.register_page(__name__, path="/jobs", title="Jobs — RadPress", name="Jobs")


def layout(**_query):
    return html.Div([html.H2("Jobs"), html.Div(id="jobs-body"), dcc.Interval(id="jobs-refresh", interval=1500)])


@callback(Output("jobs-body", "children"), Input("jobs-refresh", "n_intervals"), Input({"type": CANCEL, "job": ALL}, "n_clicks"))
def refresh(_n, _clicks):
    from core.routes import archive

    store, jobs = archive()
    user = current_user()
    trigger = ctx.triggered_id
    if (isinstance(trigger, dict) and trigger.get("type") == CANCEL and allowed(user, "jobs") and any(_clicks or [])
            and isinstance(trigger.get("job"), int) and 0 < trigger["job"] < 1 << 63):
        job = jobs.get(trigger["job"])
        authorize(store, user, "jobs", study_uid=job["study_uid"])
        jobs.cancel(job["id"])
    return make_job_table(visible_jobs(store, user, jobs.list()), allowed(user, "jobs"))
