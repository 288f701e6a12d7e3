"""Users: everyone changes their own password; administrators add users, change roles, remove users (confirmed)
and read who viewed or downloaded which study."""

import time

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, ctx, html
from flask import session

from components.housekeeping import make_confirm_dialog
from core.auth import current_user
from core.context import open_store
from core.errors import RadPressError
from core.users import ROLES, Users, access_log, allowed, authorize

dash.register_page(__name__, path="/users", title="Users — RadPress", name="Users")

REMOVE, ROLE = "user-remove", "user-role"


def _table(users: Users, me: str):
    rows = [html.Tr([
        html.Td(u.name),
        html.Td(dbc.Select(id={"type": ROLE, "name": u.name}, value=u.role, size="sm", options=[{"label": r, "value": r} for r in ROLES],
                           style={"maxWidth": "12rem"})),
        html.Td(dbc.Button("Remove…", id={"type": REMOVE, "name": u.name}, size="sm", color="danger", outline=True)
                if u.name != me else html.Span("you", className="text-muted")),
    ]) for u in users.list()]
    return dbc.Table([html.Thead(html.Tr([html.Th("User"), html.Th("Role"), html.Th("")])), html.Tbody(rows)], size="sm", id="users-table")


def _password_card():
    return dbc.Card([dbc.CardHeader("Change your password"), dbc.CardBody([dbc.Row([
        dbc.Col(dbc.Input(id="own-password-old", placeholder="current password", type="password", autocomplete="current-password"), md=3),
        dbc.Col(dbc.Input(id="own-password-new", placeholder="new password (8+ characters)", type="password",
                          autocomplete="new-password"), md=3),
        dbc.Col(dbc.Input(id="own-password-again", placeholder="new password again", type="password", autocomplete="new-password"), md=3),
        dbc.Col(dbc.Button("Change", id="own-password-change", color="primary"), md=2),
    ]), html.Div(id="own-password-result", className="mt-2")])], className="mb-3")


def layout(**_query):
    user = current_user()
    own = [_password_card()] if user.role != "demo" else []
    if not allowed(user, "users"):
        return html.Div([html.H2("Users"), *own,
                         dbc.Alert(f"Managing users is for administrators; you are logged in as {user.role}.", color="secondary")])
    return html.Div([
        html.H2("Users"),
        *own,
        html.Div(_table(Users(open_store()), user.name), id="users-body"),
        dbc.Card([dbc.CardHeader("Add a user"), dbc.CardBody(dbc.Row([
            dbc.Col(dbc.Input(id="new-user-name", placeholder="user name"), md=3),
            dbc.Col(dbc.Input(id="new-user-password", placeholder="password (8+ characters)", type="password", autocomplete="new-password"), md=3),
            dbc.Col(dbc.Select(id="new-user-role", value="radiologist", options=[{"label": r, "value": r} for r in ROLES]), md=2),
            dbc.Col(dbc.Button("Add", id="new-user-add", color="primary"), md=2),
        ]))], className="mt-3"),
        html.Div(id="users-result", className="mt-2"),
        make_confirm_dialog("remove-user", "Remove this user?", "Remove"),
        html.H4("Access log", className="mt-4"),
        _access_table(open_store()),
    ])


def _access_table(store):
    rows = [html.Tr([html.Td(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["at"]))), html.Td(a["user"]), html.Td(a["role"]),
                     html.Td(a["action"]), html.Td(a["study_uid"], className="small"), html.Td(a["sop_uid"] or "", className="small"),
                     html.Td(a["address"])]) for a in access_log(store, limit=100)]
    head = html.Thead(html.Tr([html.Th(h) for h in ("When", "Who", "Role", "What", "Study", "Instance", "From")]))
    return dbc.Table([head, html.Tbody(rows)], size="sm", id="access-log")


@callback(Output("own-password-result", "children"), Output("own-password-old", "value"), Output("own-password-new", "value"),
          Output("own-password-again", "value"), Input("own-password-change", "n_clicks"),
          State("own-password-old", "value"), State("own-password-new", "value"), State("own-password-again", "value"),
          prevent_initial_call=True)
def change_password(_n, old, new, again):
    """The current password is asked for; the fields are emptied whatever the outcome."""
    user = current_user()
    try:
        if (new or "") != (again or ""):
            raise RadPressError("The two new passwords differ; the password was not changed.")
        Users(open_store()).change_password(user.name, old or "", new or "", keep_session=session.get("sid"))
        message = dbc.Alert("Your password was changed.", color="success", id="own-password-changed")
    except RadPressError as exc:
        message = dbc.Alert(str(exc), color="danger", id="own-password-error")
    return message, "", "", ""


@callback(Output("remove-user-dialog", "is_open"), Output("remove-user-dialog-body", "children"), Output("remove-user-target", "data"),
          Input({"type": REMOVE, "name": ALL}, "n_clicks"), Input("remove-user-cancel", "n_clicks"), prevent_initial_call=True)
def ask_remove(clicks, _cancel):
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not any(clicks or []):
        return False, dash.no_update, None
    name = trigger["name"]
    return True, html.P(f"Remove {name}? Their sessions end now and they can no longer log in.", id="remove-user-dialog-text"), name


@callback(Output("users-body", "children"), Output("users-result", "children"), Output("new-user-password", "value"),
          Output("remove-user-dialog", "is_open", allow_duplicate=True),
          Input("new-user-add", "n_clicks"), Input("remove-user-confirm", "n_clicks"), Input({"type": ROLE, "name": ALL}, "value"),
          State("new-user-name", "value"), State("new-user-password", "value"), State("new-user-role", "value"),
          State("remove-user-target", "data"), prevent_initial_call=True)
def change(_add, _remove, _roles, name, password, role, target):
    user = current_user()
    if not allowed(user, "users"):
        return dash.no_update, dbc.Alert("Only an administrator can manage users.", color="danger"), "", False
    store = open_store()
    authorize(store, user, "users")
    users = Users(store)
    trigger = ctx.triggered_id
    message = None
    try:
        if trigger == "new-user-add":
            added = users.add(name or "", password or "", role)
            message = dbc.Alert(f"Added {added.name} ({added.role}).", color="success")
        elif trigger == "remove-user-confirm" and isinstance(target, str):
            users.remove(target, by=user.name)
            message = dbc.Alert(f"Removed {target}.", color="secondary", id="user-removed")
        elif isinstance(trigger, dict) and trigger.get("type") == ROLE:
            new_role = ctx.triggered[0]["value"]
            current = users.get(trigger["name"])
            if current is not None and current.role != new_role:
                users.set_role(trigger["name"], new_role, by=user.name)
                message = dbc.Alert(f"{trigger['name']} is now {new_role}.", color="success", id="role-changed")
    except RadPressError as exc:
        message = dbc.Alert(str(exc), color="danger", id="users-error")
    # A typed password never stays in the form after Add, whether or not the user was added.
    return _table(users, user.name), message, "" if trigger == "new-user-add" else dash.no_update, False
