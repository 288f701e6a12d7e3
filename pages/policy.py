"""Policy (admin only): strategies with their cost here, lossy on/off, ratios, audit log."""

import json
import time

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, html

from components import make_strategy_card
from core.archive import storage_report
from core.auth import current_user
from core.context import open_store
from core.errors import RadPressError
from core.policy import RECOMMENDED_RATIOS, STRATEGIES, UPPER_BOUNDS, Policy, ratio_warning
from core.users import allowed, authorize

dash.register_page(__name__, path="/policy", title="Policy — RadPress", name="Policy")

RATIO = "policy-ratio"


def _label(key: tuple[str, str]) -> str:
    return f"{key[0]} {key[1].lower()}".strip()


def layout(**_query):
    user = current_user()
    if not allowed(user, "policy"):
        return dbc.Alert(f"The Policy page is for administrators; you are logged in as {user.role}.", color="danger", id="policy-forbidden")
    store = open_store()
    policy = store.policy()
    report = storage_report(store)
    costs = {c["strategy"]: c for c in report["strategies"]}
    cards = dbc.Row([dbc.Col(make_strategy_card(s, costs.get(s.number), s.number == policy.strategy), md=3, className="mb-3")
                     for s in STRATEGIES])
    ratio_rows = []
    for key in sorted(set(RECOMMENDED_RATIOS) | set(UPPER_BOUNDS)):
        stored_key = f"{key[0]} {key[1]}".strip()
        recommended = RECOMMENDED_RATIOS.get(key)
        bound = UPPER_BOUNDS.get(key)
        ratio_rows.append(html.Tr([
            html.Td(_label(key)),
            html.Td(dbc.Input(id={"type": RATIO, "key": stored_key}, type="number", min=2, max=200, step=0.5, size="sm",
                              value=policy.ratios.get(stored_key, recommended or policy.default_ratio))),
            html.Td(f"{recommended:g}:1" if recommended else "—"),
            html.Td(f"{bound:g}:1" if bound else "—"),
        ]))
    audit = store.query("SELECT * FROM audit ORDER BY id DESC LIMIT 20")
    return html.Div([
        html.H2("Storage policy"),
        html.P(f"{report['studies']} studies, {report['bytes_total'] / 1e6:.1f} MB stored now.", className="text-muted"),
        cards,
        dbc.Card([dbc.CardHeader("Clinic settings"), dbc.CardBody([
            dbc.Row([
                dbc.Col([dbc.Label("Default strategy"), dbc.Select(id="policy-strategy", value=str(policy.strategy),
                         options=[{"label": f"{s.number}. {s.name}", "value": str(s.number)} for s in STRATEGIES])], md=3),
                dbc.Col([dbc.Label("Lossy images"), dbc.Switch(id="policy-lossy", value=policy.lossy_enabled,
                                                               label="allowed (stored and served)")], md=3),
                dbc.Col([dbc.Label("Default ratio"), dbc.Input(id="policy-default-ratio", type="number", min=2, max=200,
                                                               value=policy.default_ratio)], md=2),
                dbc.Col([dbc.Label("Banner wording"), dbc.Input(id="policy-banner", value=policy.lossy_banner)], md=4),
            ], className="mb-3"),
            html.H6("Lossy ratio per modality"),
            dbc.Table([html.Thead(html.Tr([html.Th("Images"), html.Th("Ratio"), html.Th("Recommended (German consensus 2009)"),
                                           html.Th("Upper bound (CAR 2008)")])), html.Tbody(ratio_rows)], size="sm"),
            dbc.Button("Save policy", id="policy-save", color="primary"),
            html.Div(id="policy-result", className="mt-2"),
        ])], className="mb-3"),
        _dicom_card(store),
        html.H4("Audit log"),
        dbc.Table([html.Thead(html.Tr([html.Th("When"), html.Th("Who"), html.Th("What"), html.Th("Old → new")])),
                   html.Tbody([html.Tr([html.Td(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["at"]))), html.Td(a["user"]),
                                        html.Td(a["what"]), html.Td(_change(a["old"], a["new"]), className="small")]) for a in audit])],
                  size="sm", id="audit-log"),
    ])


def _dicom_card(store):
    """The DICOM node's address and the C-MOVE destinations an administrator may change."""
    from flask import current_app

    from core.dimse import dicom_peers

    info = dicom_peers(store, current_app.extensions["radpress"].get("dicom"))
    node = info["node"]
    where = (f"AE title {node['ae_title']} at {node['host']}:{node['port']}" if node
             else "not running (RADPRESS_DICOM_PORT=0, or started without it)")
    return dbc.Card([dbc.CardHeader("DICOM network node"), dbc.CardBody([
        html.P(f"C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE: {where}.", className="text-muted", id="dicom-node"),
        dbc.Label("C-MOVE destinations (AE@host:port, comma-separated)"),
        dbc.Input(id="dicom-peers", value=info["peers"], placeholder="PACS@10.0.0.5:104,VIEWER@ws12:11112"),
        html.Small(f"From {'this page' if info['source'] == 'index' else 'RADPRESS_DICOM_PEERS'}; "
                   "empty the field and save to accept no C-MOVE destination.", className="text-muted"),
        html.Div(dbc.Button("Save destinations", id="dicom-peers-save", color="secondary", className="mt-2")),
        html.Div(id="dicom-peers-result", className="mt-2"),
    ])], className="mb-3")


@callback(Output("dicom-peers-result", "children"), Input("dicom-peers-save", "n_clicks"), State("dicom-peers", "value"),
          prevent_initial_call=True)
def save_peers(_clicks, text):
    from core.dimse import format_peers, set_peers
    from core.routes import archive

    user = current_user()
    store, _ = archive()
    authorize(store, user, "policy")
    try:
        peers = set_peers(store, text or "", user.name)
    except RadPressError as exc:
        return dbc.Alert(f"Not saved: {exc}", color="danger")
    return dbc.Alert(f"Saved: {format_peers(peers) or 'no destinations'}.", color="success", id="dicom-peers-saved")


def _change(old: str, new: str) -> str:
    try:
        before, after = json.loads(old), json.loads(new)
    except (TypeError, ValueError):
        return f"{old} → {new}"
    if isinstance(before, dict) and isinstance(after, dict):
        changed = [f"{k}: {before.get(k)} → {after.get(k)}" for k in after if before.get(k) != after.get(k)]
        return "; ".join(changed) or "no change"
    return f"{before} → {after}"


@callback(Output("policy-result", "children"), Input("policy-save", "n_clicks"),
          State("policy-strategy", "value"), State("policy-lossy", "value"), State("policy-default-ratio", "value"),
          State("policy-banner", "value"), State({"type": RATIO, "key": ALL}, "value"), State({"type": RATIO, "key": ALL}, "id"),
          prevent_initial_call=True)
def save(_clicks, strategy, lossy, default_ratio, banner, ratios, ids):
    from core.routes import archive

    user = current_user()
    if not allowed(user, "policy"):
        return dbc.Alert("Only an administrator can change the policy.", color="danger")
    store, jobs = archive()
    authorize(store, user, "policy")
    try:
        policy = Policy.from_dict({**store.policy().to_dict(), "strategy": int(strategy), "lossy_enabled": bool(lossy),
                                   "default_ratio": float(default_ratio), "lossy_banner": banner,
                                   "ratios": {i["key"]: float(v) for i, v in zip(ids, ratios) if v is not None}})
    except (RadPressError, TypeError, ValueError) as exc:
        return dbc.Alert(f"Not saved: {exc}", color="danger")
    store.set_policy(policy, user=user.name)
    for study in store.studies():
        jobs.submit(study["study_uid"])
    warnings = [w for k, v in policy.ratios.items() if (w := ratio_warning(k.split()[0], float(v), *k.split()[1:2]))]
    return [dbc.Alert("Saved. The archive is being brought in line with the new policy (see Jobs).", color="success", id="policy-saved"),
            *[dbc.Alert(w, color="warning") for w in warnings]]
