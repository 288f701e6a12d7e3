"""Users (admin only): add and remove users, choose their role; who viewed or downloaded which study."""

import time

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, ctx, html

from core.auth import current_user
from core.context import open_store
from core.errors import RadPressError
from core.users import ROLES, Users, access_log, allowed, authorize

dash.register_page(__name__, path="/users", title="Users — RadPress", name="Users")

REMOVE = "user-remove"


def _table(users: Users, me: str):
    rows = [html.Tr([html.Td(u.name), html.Td(u.role),
                     html.Td(dbc.Button("Remove", id={"type": REMOVE, "name": u.name}, size="sm", color="danger", outline=True)
                             if u.name != me else html.Span("you", className="text-muted"))]) for u in users.list()]
    return dbc.Table([html.Thead(html.Tr([html.Th("User"), html.Th("Role"), html.Th("")])), html.Tbody(rows)], size="sm", id="users-table")


def layout(**_query):
    user = current_user()
    if not allowed(user, "users"):
        return dbc.Alert(f"The Users page is for administrators; you are logged in as {user.role}.", color="danger")
    return html.Div([
        html.H2("Users"),
        html.Div(_table(Users(open_store()), user.name), id="users-body"),
        dbc.Card([dbc.CardHeader("Add a user"), dbc.CardBody(dbc.Row([
            dbc.Col(dbc.Input(id="new-user-name", placeholder="user name"), md=3),
            dbc.Col(dbc.Input(id="new-user-password", placeholder="password (8+ characters)", type="password"), md=3),
            dbc.Col(dbc.Select(id="new-user-role", value="radiologist", options=[{"label": r, "value": r} for r in ROLES]), md=2),
            dbc.Col(dbc.Button("Add", id="new-user-add", color="primary"), md=2),
        ]))], className="mt-3"),
        html.Div(id="users-result", className="mt-2"),
        html.H4("Access log", className="mt-4"),
        _access_table(open_store()),
    ])


def _access_table(store):
    rows = [html.Tr([html.Td(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["at"]))), html.Td(a["user"]), html.Td(a["role"]),
                     html.Td(a["action"]), html.Td(a["study_uid"], className="small"), html.Td(a["sop_uid"] or "", className="small"),
                     html.Td(a["address"])]) for a in access_log(store, limit=100)]
    head = html.Thead(html.Tr([html.Th(h) for h in ("When", "Who", "Role", "What", "Study", "Instance", "From")]))
    return dbc.Table([head, html.Tbody(rows)], size="sm", id="access-log")


@callback(Output("users-body", "children"), Output("users-result", "children"), Output("new-user-password", "value"),
          Input("new-user-add", "n_clicks"), Input({"type": REMOVE, "name": ALL}, "n_clicks"),
          State("new-user-name", "value"), State("new-user-password", "value"), State("new-user-role", "value"),
          prevent_initial_call=True)
def change(_add, removes, name, password, role):
    user = current_user()
    if not allowed(user, "users"):
        return dash.no_update, dbc.Alert("Only an administrator can manage users.", color="danger"), ""
    store = open_store()
    authorize(store, user, "users")
    users = Users(store)
    message = None
    try:
        if ctx.triggered_id == "new-user-add":
            added = users.add(name or "", password or "", role)
            message = dbc.Alert(f"Added {added.name} ({added.role}).", color="success")
        elif isinstance(ctx.triggered_id, dict) and any(removes or []):
            users.remove(ctx.triggered_id["name"])
            message = dbc.Alert(f"Removed {ctx.triggered_id['name']}.", color="secondary")
    except RadPressError as exc:
        message = dbc.Alert(str(exc), color="danger")
    # A typed password never stays in the form after Add, whether or not the user was added.
    return _table(users, user.name), message, "" if ctx.triggered_id == "new-user-add" else dash.no_update
