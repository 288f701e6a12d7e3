"""Policy (admin only): strategies with their cost here, the clinic default and one per modality, lossless codec,
lossy on/off, ratios per modality (checked as they are typed), audit log.

Every list on the page comes from core (STRATEGIES, LOSSLESS_CHOICES, the ratio tables), so a new strategy or
codec choice appears without a page edit.  A save is all or nothing: one bad field and nothing is saved; which
studies' copies change is worked out by a job (core.policyjobs), not in the request.
"""

import json
import time
from dataclasses import replace

import dash
import dash_bootstrap_components as dbc
from dash import ALL, MATCH, Input, Output, State, callback, dcc, html

from components import make_strategy_card
from core.archive import save_policy, storage_report
from core.auth import current_user
from core.codecs import get_rule
from core.context import open_store
from core.errors import InvalidOptionError, RadPressError
from core.policy import (LOSSLESS_CHOICES, MODALITIES, RECOMMENDED_RATIOS, STRATEGIES, UPPER_BOUNDS, Policy, check_bound,
                         parse_ratio, ratio_fallback, ratio_for, ratio_warning)
from core.policyjobs import comparison_stalled
from core.present import human_size
from core.users import allowed, authorize

dash.register_page(__name__, path="/policy", title="Policy — RadPress", name="Policy")

RATIO = "policy-ratio"  # id {"type": RATIO, "key": "CT" | "CT BRAIN" | ...}
DEFAULT_RATIO = "policy-default-ratio"
RATIO_MSG = "policy-ratio-msg"  # why the field is invalid
RATIO_WARN = "policy-ratio-warn"  # the CAR upper-bound warning, before saving
MOD_STRATEGY = "policy-modality-strategy"  # id {"type": MOD_STRATEGY, "modality": "CT"}
MOD_LOSSLESS = "policy-modality-lossless"
DEFAULT = "default"
FOLLOW = "clinic"  # a modality's select left at "Clinic default"


def _label(key: str) -> str:
    return DEFAULT if key == DEFAULT else " ".join([key.split()[0], *[w.lower() for w in key.split()[1:]]])


def _check(key: str, value) -> tuple[bool, str, str]:
    """(invalid, why, CAR warning) for a ratio field as typed."""
    try:
        ratio = parse_ratio(value, _label(key))
    except InvalidOptionError as exc:
        return True, str(exc), ""
    if ratio is None:
        return (True, "The default ratio is needed: copies of modalities without their own ratio use it.", "") if key == DEFAULT \
            else (False, "", "")
    if key == DEFAULT:
        return False, "", ""
    modality, *anatomy = key.split()
    return False, "", ratio_warning(modality, ratio, *anatomy[:1]) or ""


def _ratio_field(key: str, value, placeholder: str = ""):
    invalid, why, warning = _check(key, value)
    ids = ((DEFAULT_RATIO, f"{DEFAULT_RATIO}-msg", f"{DEFAULT_RATIO}-warn") if key == DEFAULT else
           ({"type": RATIO, "key": key}, {"type": RATIO_MSG, "key": key}, {"type": RATIO_WARN, "key": key}))
    return [dbc.Input(id=ids[0], type="text", inputMode="decimal", size="sm", value=value, placeholder=placeholder,
                      invalid=invalid),
            dbc.FormFeedback(why, id=ids[1], type="invalid"),
            html.Div(warning, id=ids[2], className="small text-warning-emphasis")]


def _text(value) -> str:
    return "" if value is None else f"{float(value):g}"


def _placeholder(policy: Policy, key: str) -> str:
    """What an empty ratio field means: the ratio it follows, and the CAR cap where that ratio is above the bound."""
    follows, source = ratio_fallback(policy, key)
    modality, *anatomy = key.split()
    capped = check_bound(follows, modality, *anatomy[:1], cap=True)[0]
    return f"empty: as {source} ({follows:g}:1" + (f", capped at {capped:g}:1 by CAR)" if capped < follows else ")")


def _ratio_rows(policy: Policy):
    keys = sorted({f"{m} {a}".strip() for m, a in set(RECOMMENDED_RATIOS) | set(UPPER_BOUNDS)} | set(policy.ratios))
    rows = []
    for key in keys:
        modality, *anatomy = key.split()
        recommended = RECOMMENDED_RATIOS.get((modality, " ".join(anatomy)))
        bound = UPPER_BOUNDS.get((modality, " ".join(anatomy)))
        rows.append(html.Tr([
            html.Td(_label(key)),
            html.Td(_ratio_field(key, _text(policy.ratios.get(key)), _placeholder(policy, key))),
            html.Td(f"{recommended:g}:1" if recommended else "—"),
            html.Td(f"{bound:g}:1" if bound else "—"),
        ]))
    return rows


def _modality_rows(policy: Policy, present: set[str]):
    strategies = [{"label": "Clinic default", "value": FOLLOW}] + [{"label": f"{s.number}. {s.name}", "value": str(s.number)}
                                                               for s in STRATEGIES]
    choices = [{"label": "Clinic default", "value": FOLLOW}] + [{"label": label, "value": name} for name, label in LOSSLESS_CHOICES]
    modalities = list(MODALITIES) + sorted((present | set(policy.strategies) | set(policy.lossless_codecs)) - set(MODALITIES))
    return [html.Tr([
        html.Td(m + (" (in the archive)" if m in present else "")),
        html.Td(dbc.Select(id={"type": MOD_STRATEGY, "modality": m}, options=strategies, size="sm",
                           value=str(policy.strategies[m]) if m in policy.strategies else FOLLOW)),
        html.Td(dbc.Select(id={"type": MOD_LOSSLESS, "modality": m}, options=choices, size="sm",
                           value=get_rule(policy.lossless_codecs[m]).name if m in policy.lossless_codecs else FOLLOW)),
    ]) for m in modalities]


def _cards(policy: Policy, report: dict):
    costs = {c["strategy"]: c for c in report["strategies"]}
    return dbc.Row([dbc.Col(make_strategy_card(s, costs.get(s.number), s.number == policy.strategy,
                                               tuple(sorted(m for m, n in policy.strategies.items() if n == s.number))),
                            className="mb-3")
                    for s in STRATEGIES], className=f"row-cols-1 row-cols-md-3 row-cols-xl-{len(STRATEGIES)}")


def _projection(report: dict):
    """What the policy as saved costs: each study under the strategy it follows."""
    followed = report["policy"]
    per = ", ".join(f"{n} on strategy {s}" for s, n in sorted(followed["studies_per_strategy"].items()))
    ratio = f" ({followed['vs_originals']:.2f}× the originals)" if followed.get("vs_originals") else ""
    return [html.Strong(human_size(followed["bytes"])), f" {'projected' if followed['estimated'] else 'measured'}{ratio}",
            f" under this policy{': ' + per if per else ''}."]


def _audit(store):
    audit = store.query("SELECT * FROM audit ORDER BY id DESC LIMIT 20")
    return [html.Thead(html.Tr([html.Th("When"), html.Th("Who"), html.Th("What"), html.Th("Old → new")])),
            html.Tbody([html.Tr([html.Td(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["at"]))), html.Td(a["user"]),
                                 html.Td(a["what"]), html.Td(_change(a["old"], a["new"]), className="small")]) for a in audit])]


def layout(**_query):
    user = current_user()
    if not allowed(user, "policy"):
        return dbc.Alert(f"The Policy page is for administrators; you are logged in as {user.role}.", color="danger", id="policy-forbidden")
    store = open_store()
    policy = store.policy()
    report = storage_report(store)
    present = {r["modality"] for r in store.query(  # modalities with images: a report's SR has no copies to set
        "SELECT DISTINCT s.modality FROM series s JOIN instances i USING (series_uid) WHERE i.rows > 0") if r["modality"]}
    return html.Div([
        html.H2("Storage policy"),
        html.P(f"{report['studies']} studies, {report['bytes_total'] / 1e6:.1f} MB stored now.", className="text-muted"),
        html.P(_projection(report), id="policy-projection"),
        dbc.Alert("The last saved policy was never compared with the one before it (its job was cancelled or failed): "
                  "some studies may still have the earlier policy's copies. Save the policy again to compare.",
                  color="warning", id="policy-stalled") if comparison_stalled(store) else None,
        html.Div(_cards(policy, report), id="policy-cards"),
        dbc.Card([dbc.CardHeader("Clinic settings"), dbc.CardBody([
            dbc.Row([
                dbc.Col([dbc.Label("Default strategy"), dbc.Select(id="policy-strategy", value=str(policy.strategy),
                         options=[{"label": f"{s.number}. {s.name}", "value": str(s.number)} for s in STRATEGIES])], md=3),
                dbc.Col([dbc.Label("Lossy images"), dbc.Switch(id="policy-lossy", value=policy.lossy_enabled,
                                                               label="allowed (stored and served)")], md=2),
                dbc.Col([dbc.Label("Default ratio"), *_ratio_field(DEFAULT, _text(policy.default_ratio))], md=2),
                dbc.Col([dbc.Label("Banner wording"), dbc.Input(id="policy-banner", value=policy.lossy_banner),
                         dbc.FormFeedback(id="policy-banner-msg", type="invalid")], md=5),
            ], className="mb-3"),
            dbc.Row([dbc.Col([dbc.Label("Lossless copies"), dbc.Select(
                id="policy-lossless", value=get_rule(policy.lossless_codec).name,  # an older policy's "auto" is "smallest"
                options=[{"label": label, "value": name} for name, label in LOSSLESS_CHOICES])], md=6)], className="mb-3"),
            html.H6("Per modality (a study follows its most frequent image modality; its own strategy wins)"),
            dbc.Table([html.Thead(html.Tr([html.Th("Modality"), html.Th("Strategy"), html.Th("Lossless copies")])),
                       html.Tbody(_modality_rows(policy, present))], size="sm", id="policy-modalities"),
            html.H6("Lossy ratio per modality"),
            dbc.Table([html.Thead(html.Tr([html.Th("Images"), html.Th("Ratio (2–200, empty: follows the next)"),
                                           html.Th("Recommended (German consensus 2009)"), html.Th("Upper bound (CAR 2008)")])),
                       html.Tbody(_ratio_rows(policy))], size="sm"),
            dbc.Button("Save policy", id="policy-save", color="primary"),
            html.Div(id="policy-result", className="mt-2"),
            html.Div(id="policy-job-status", className="small"),
            dcc.Store(id="policy-job"), dcc.Interval(id="policy-job-poll", interval=500, disabled=True),
        ])], className="mb-3"),
        _dicom_card(store),
        html.H4("Audit log"),
        dbc.Table(_audit(store), size="sm", id="audit-log"),
    ])


@callback(Output({"type": RATIO, "key": MATCH}, "invalid"), Output({"type": RATIO_MSG, "key": MATCH}, "children"),
          Output({"type": RATIO_WARN, "key": MATCH}, "children"), Input({"type": RATIO, "key": MATCH}, "value"),
          State({"type": RATIO, "key": MATCH}, "id"), prevent_initial_call=True)
def check_ratio(value, ident):
    """Each ratio is checked as it is typed: out of 2–200 or not a number is marked with the reason, above the CAR bound warned."""
    return _check(ident["key"], value)


@callback(Output({"type": RATIO, "key": ALL}, "placeholder"), Input(DEFAULT_RATIO, "value"),
          Input({"type": RATIO, "key": ALL}, "value"), State({"type": RATIO, "key": ALL}, "id"), prevent_initial_call=True)
def follow_placeholders(default, values, ids):
    """An empty field says what it follows as the ratios it follows are typed (valid values only)."""
    ratios = {}
    for ident, text in [(DEFAULT, default), *((i["key"], v) for i, v in zip(ids, values))]:
        try:
            if (value := parse_ratio(text, _label(ident))) is not None:
                ratios[ident] = value
        except InvalidOptionError:
            pass
    if DEFAULT not in ratios:
        return ["empty: as the default (not valid yet)" for _ in ids]
    typed = replace(Policy(), default_ratio=ratios.pop(DEFAULT), ratios=ratios)
    return [_placeholder(typed, i["key"]) for i in ids]


@callback(Output("policy-banner", "invalid"), Output("policy-banner-msg", "children"), Input("policy-banner", "value"),
          prevent_initial_call=True)
def check_banner(text):
    """The banner wording is checked as it is typed, by the rule the save applies (Policy.validated)."""
    try:
        Policy(lossy_banner=text).validated()
    except InvalidOptionError as exc:
        return True, str(exc)
    return False, ""


@callback(Output(DEFAULT_RATIO, "invalid"), Output(f"{DEFAULT_RATIO}-msg", "children"), Output(f"{DEFAULT_RATIO}-warn", "children"),
          Input(DEFAULT_RATIO, "value"), prevent_initial_call=True)
def check_default_ratio(value):
    return _check(DEFAULT, value)


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


def _form_policy(old: Policy, strategy, lossy, lossless, banner, ratios: dict, strategies: dict, lossless_codecs: dict):
    """The policy the form describes, or the list of every reason it cannot be saved (nothing is saved then)."""
    errors, parsed = [], {}
    for key, text in ratios.items():
        invalid, why, _warning = _check(key, text)
        if invalid:
            errors.append(why)
        elif (value := parse_ratio(text, _label(key))) is not None:
            parsed[key] = value
    if errors:
        return None, errors
    default = parsed.pop(DEFAULT)
    try:
        return Policy.from_dict({
            **old.to_dict(), "strategy": int(strategy), "lossy_enabled": bool(lossy), "default_ratio": default,
            "lossy_banner": banner, "lossless_codec": lossless, "ratios": parsed,
            "lossy_codecs": {k: c for k, c in old.lossy_codecs.items() if k in parsed},  # a ratio keeps the codec it was chosen for
            "strategies": {m: int(v) for m, v in strategies.items() if v and v != FOLLOW},
            "lossless_codecs": {m: v for m, v in lossless_codecs.items() if v and v != FOLLOW},
        }), []
    except (RadPressError, TypeError, ValueError) as exc:
        return None, [str(exc)]


@callback(Output("policy-result", "children"), Output("policy-projection", "children"), Output("policy-cards", "children"),
          Output("audit-log", "children"), Output("policy-job", "data"), Output("policy-job-poll", "disabled"),
          Input("policy-save", "n_clicks"),
          State("policy-strategy", "value"), State("policy-lossy", "value"), State("policy-lossless", "value"),
          State("policy-banner", "value"), State(DEFAULT_RATIO, "value"), State({"type": RATIO, "key": ALL}, "value"), State({"type": RATIO, "key": ALL}, "id"),
          State({"type": MOD_STRATEGY, "modality": ALL}, "value"), State({"type": MOD_STRATEGY, "modality": ALL}, "id"),
          State({"type": MOD_LOSSLESS, "modality": ALL}, "value"), State({"type": MOD_LOSSLESS, "modality": ALL}, "id"),
          prevent_initial_call=True)
def save(_clicks, strategy, lossy, lossless, banner, default, ratios, ratio_ids, strategies, strategy_ids, codecs, codec_ids):
    """All or nothing: "Saved" only once every field is in the stored policy; jobs only for studies whose copies change."""
    from core.routes import archive

    user = current_user()
    if not allowed(user, "policy"):
        return (dbc.Alert("Only an administrator can change the policy.", color="danger"), *[dash.no_update] * 5)
    store, jobs = archive()
    authorize(store, user, "policy")
    policy, errors = _form_policy(store.policy(), strategy, lossy, lossless, banner,
                                  {DEFAULT: default, **{i["key"]: v for i, v in zip(ratio_ids, ratios)}},
                                  {i["modality"]: v for i, v in zip(strategy_ids, strategies)},
                                  {i["modality"]: v for i, v in zip(codec_ids, codecs)})
    if errors:
        refused = dbc.Alert([html.Strong("Not saved — nothing was changed. "), html.Ul([html.Li(e) for e in errors])],
                            color="danger", id="policy-not-saved")
        return (refused, *[dash.no_update] * 5)
    job = save_policy(store, jobs, policy, user.name)
    report = storage_report(store)
    done = [f"Saved. Working out which studies' copies change (job #{job}); each of those gets a job of its own — see ",
            dcc.Link("Jobs", href="/jobs"), "."]
    # every kind with a CAR bound, at the ratio it gets (its own, or the one it follows)
    warnings = [w for m, a in sorted(UPPER_BOUNDS) if (w := ratio_warning(m, ratio_for(policy, m, a), a))]
    return ([dbc.Alert(done, color="success", id="policy-saved"), *[dbc.Alert(w, color="warning") for w in warnings]],
            _projection(report), _cards(policy, report), _audit(store), job, False)


@callback(Output("policy-job-status", "children"), Output("policy-job-poll", "disabled", allow_duplicate=True),
          Input("policy-job-poll", "n_intervals"), State("policy-job", "data"), prevent_initial_call=True)
def follow(_n, job_id):
    """The saved policy's comparison as it goes, then its result (how many studies get new copies); polling stops then."""
    from core.routes import archive

    user = current_user()
    if not allowed(user, "policy") or isinstance(job_id, bool) or not isinstance(job_id, int) or not 0 < job_id < 1 << 63:
        return "", True
    store, jobs = archive()
    authorize(store, user, "policy")
    job = jobs.get(job_id)
    if job["kind"] != "policy":
        return "", True
    if job["state"] in ("queued", "running"):
        counted = f": {job['done']} of {job['total']} studies compared" if job["total"] else ""
        return html.Span(f"Job #{job_id} {job['state']}{counted}…", id="policy-job-working"), False
    return html.Span(f"Job #{job_id} {job['state']}. {job['message'] or ''}", id="policy-job-finished"), True
