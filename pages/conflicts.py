"""Conflicts (admin): one SOP Instance UID received twice with different content — what differs, both side by side, keep one."""

import time

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, ctx, dcc, html

from components.housekeeping import make_confirm_dialog
from core.auth import current_user
from core.context import open_store
from core.errors import RadPressError
from core.housekeeping import conflict_detail, conflicts, resolve_conflict
from core.present import human_size
from core.users import allowed

dash.register_page(__name__, path="/conflicts", title="Conflicts — RadPress", name="Conflicts")

SHOW, KEEP = "conflict-show", "conflict-keep"


def _when(at) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "?"


def _listing(user, study: str):
    try:
        return _table(conflicts(open_store(), user, study or None))
    except RadPressError as exc:
        return dbc.Alert(str(exc), color="warning")


def _table(items: list[dict]):
    if not items:
        return html.P("No conflicts: every SOP Instance UID in the archive has one content.", id="conflicts-none")
    head = html.Thead(html.Tr([html.Th(h) for h in ("Received", "From", "Patient", "Instance", "What differs", "")]))
    rows = [html.Tr([html.Td(_when(c["received"])), html.Td(c["source"], className="small"),
                     html.Td(f"{c['patient_name'] or '(no name)'} {c['patient_id'] or ''}"),
                     html.Td(c["sop_uid"], className="small"), html.Td(c["reason"], className="small conflict-reason"),
                     html.Td(dbc.Button("Show both", id={"type": SHOW, "sop": c["sop_uid"], "checksum": c["checksum"]},
                                        size="sm", color="primary", outline=True))]) for c in items]
    return dbc.Table([head, html.Tbody(rows)], size="sm", id="conflicts-table", responsive=True)


def layout(study: str = "", **_query):
    user = current_user()
    if not allowed(user, "housekeeping"):
        return dbc.Alert(f"The Conflicts page is for administrators; you are logged in as {user.role}.", color="danger",
                         id="conflicts-forbidden")
    return html.Div([
        html.H2("Conflicts"),
        html.P("A conflict is a file with the SOP Instance UID of a stored instance but other content. The stored original "
               "stays in use until you keep one of the two; the other is removed (audited).", className="text-muted"),
        *([html.P(["Conflicts of study ", html.Code(study), " only. ", html.A("Show all", href="/conflicts")], id="conflicts-filter")]
          if study else []),
        dcc.Store(id="conflicts-study", data=study),
        html.Div(_listing(user, study), id="conflicts-body"),
        html.Div(id="conflict-detail"),
        html.Div(id="conflict-result", className="mt-2"),
        make_confirm_dialog("keep", "Keep one copy?", "Keep it and remove the other"),
    ])


def _side(title: str, src: str | None, facts: list[str], button_id: dict, label: str, css: str):
    picture = (html.Img(src=src, className="card-img-top conflict-preview", alt=title, style={"maxHeight": "256px", "objectFit": "contain"})
               if src else html.Div("No preview (no image, or one too large to draw here).", className="small text-muted p-2"))
    return dbc.Card([
        dbc.CardHeader(title),
        picture,
        dbc.CardBody([*[html.Div(f, className="small") for f in facts],
                      dbc.Button(label, id=button_id, color="warning", size="sm", className="mt-2")]),
    ], className=f"h-100 {css}")


def _detail(d: dict):
    sop, checksum = d["sop_uid"], d["checksum"]
    stored, other = d["stored"], d["other"]
    diff = dbc.Table([html.Thead(html.Tr([html.Th(h) for h in ("Tag", "Attribute", "Stored original", "Conflicting copy")])),
                      html.Tbody([html.Tr([html.Td(a["tag"]), html.Td(a["keyword"]), html.Td(a["stored"]), html.Td(a["other"])])
                                  for a in d["attributes"]])], size="sm", id="conflict-attributes", className="small")
    more = d["attributes_total"] - len(d["attributes"])
    return dbc.Card(dbc.CardBody([
        html.H5(f"Instance {sop}"),
        html.P(d["summary"], id="conflict-summary"),
        dbc.Row([
            dbc.Col(_side("Stored original (in use)", f"/api/conflicts/{sop}/stored/thumbnail" if d["previews"] else None,
                          [f"received {_when(stored['received'])}", f"{human_size(stored['bytes'])} ({stored['bytes']:,} bytes)",
                           f"SHA-256 {stored['checksum'][:16]}…"],
                          {"type": KEEP, "sop": sop, "checksum": checksum, "keep": "stored"}, "Keep the stored original",
                          "conflict-stored"), md=4),
            dbc.Col(_side("Conflicting copy", f"/api/conflicts/{sop}/{checksum}/thumbnail" if d["previews"] else None,
                          [f"received {_when(other['received'])} from {other['source']}",
                           f"{human_size(other['bytes'])} ({other['bytes']:,} bytes)", f"SHA-256 {checksum[:16]}…"],
                          {"type": KEEP, "sop": sop, "checksum": checksum, "keep": "other"}, "Keep this copy instead",
                          "conflict-other"), md=4),
        ], className="mb-3"),
        *([html.P("Both previews use the stored original's window.", className="small text-muted")] if d["previews"] else []),
        html.H6(d["pixels"]["summary"].capitalize(), id="conflict-pixels"),
        html.H6(f"Attributes that differ ({d['attributes_total']})"),
        diff if d["attributes"] else html.P("none", className="small"),
        *([html.P(f"… and {more} more", className="small")] if more > 0 else []),
    ]), className="mt-3", id="conflict-view")


@callback(Output("conflict-detail", "children"), Input({"type": SHOW, "sop": ALL, "checksum": ALL}, "n_clicks"),
          prevent_initial_call=True)
def show(clicks):
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not any(clicks or []):
        return dash.no_update
    try:
        return _detail(conflict_detail(open_store(), current_user(), trigger["sop"], trigger["checksum"]))
    except RadPressError as exc:
        return dbc.Alert(str(exc), color="danger")


@callback(Output("keep-dialog", "is_open"), Output("keep-dialog-body", "children"), Output("keep-target", "data"),
          Input({"type": KEEP, "sop": ALL, "checksum": ALL, "keep": ALL}, "n_clicks"), Input("keep-cancel", "n_clicks"),
          prevent_initial_call=True)
def ask_keep(clicks, _cancel):
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not any(clicks or []):
        return False, dash.no_update, None
    if trigger["keep"] == "stored":
        text = "The conflicting copy is removed; the stored original and its copies stay as they are."
    else:
        text = ("The conflicting copy becomes this instance's original. The stored original and every copy made from it are "
                "removed, and the copies are made again from the one you keep.")
    body = html.Div([html.P(text), html.P("This cannot be undone; it is recorded in the audit log.", className="text-danger mb-0")],
                    id="keep-dialog-text")
    return True, body, {k: trigger[k] for k in ("sop", "checksum", "keep")}


@callback(Output("conflict-result", "children"), Output("conflicts-body", "children"), Output("conflict-detail", "children", allow_duplicate=True),
          Output("keep-dialog", "is_open", allow_duplicate=True),
          Input("keep-confirm", "n_clicks"), State("keep-target", "data"), State("conflicts-study", "data"), prevent_initial_call=True)
def keep(_n, target, study):
    from core.routes import archive

    store, jobs = archive()
    user = current_user()
    if not isinstance(target, dict):
        return dash.no_update, dash.no_update, dash.no_update, False
    try:
        result = resolve_conflict(store, user, target.get("sop"), target.get("checksum"), target.get("keep"))
    except RadPressError as exc:
        return dbc.Alert(str(exc), color="danger"), dash.no_update, dash.no_update, False
    if result["rebuild"]:
        job = jobs.submit(result["rebuild"])
        message = [f"Kept the conflicting copy of {result['sop_uid']}; its copies are being made (job {job}). ",
                   html.A("See Jobs", href="/jobs")]
    else:
        message = f"Kept the stored original of {result['sop_uid']}; the conflicting copy was removed."
    return dbc.Alert(message, color="success", id="conflict-resolved"), _listing(user, study if isinstance(study, str) else ""), None, False
