"""Quality lab: PSNR, SSIM and Dice against bits per pixel, latency table, recommended ratio."""

import math

import dash
import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html, no_update
from plotly.subplots import make_subplots

from core.auth import current_user
from core.context import open_store
from core.errors import RadPressError
from core.lab import apply_choice
from core.labjobs import cancel_lab, lab_result, lab_state, start_lab
from core.studylist import list_filters, study_page
from core.users import allowed, authorize

dash.register_page(__name__, path="/lab", title="Quality lab — RadPress", name="Quality lab")


RECENT = 50  # the picker offers the newest studies and finds any other by patient name (never the whole archive)


def _option(row: dict) -> dict:
    details = " ".join(v for v in (row["modalities"], row["description"], row["date"]) if v)
    return {"label": f"{row['patient']} — {details}", "value": row["uid"]}


def _study_options(store, user, uid: str | None, name: str = "") -> list[dict]:
    """The newest studies (or those whose patient name starts with *name*), with the chosen one kept first."""
    rows = study_page(store, user, list_filters(name=name), page_size=RECENT).rows
    if uid and all(r["uid"] != uid for r in rows):
        rows = study_page(store, user, {"StudyInstanceUID": uid}, page_size=1).rows + rows
    return [_option(r) for r in rows]


def layout(uid: str = "", **_query):
    store, user = open_store(), current_user()
    if uid:
        try:
            authorize(store, user, "view", study_uid=uid)
        except RadPressError:
            uid = ""
    studies = _study_options(store, user, uid)
    if not studies:
        return dbc.Alert("No studies yet: upload one on the Studies page.", color="secondary")
    uid = uid or studies[0]["value"]
    return html.Div([
        html.H2("Quality lab"),
        html.P("Choose a lossy ratio from evidence on your own images: every codec and ratio is encoded, measured, "
               "and a segmentation is run on the original and on the decoded image (Dice = task agreement).", className="text-muted"),
        dbc.Row([
            dbc.Col(dcc.Dropdown(id="lab-study", value=uid, clearable=False, options=studies,
                                 placeholder="Type a patient name to find a study"), md=6),
            dbc.Col(dbc.Button("Run the sweep", id="lab-run", color="primary"), width="auto"),
            dbc.Col(dbc.Button("Cancel", id="lab-cancel", color="danger", outline=True, disabled=True), width="auto"),
            dbc.Col(dbc.Button("Export CSV", id="lab-csv", color="secondary", outline=True), width="auto"),
        ], className="mb-2"),
        dbc.Progress(id="lab-progress", value=0, className="mb-2", style={"height": "1.2rem"}),
        dcc.Store(id="lab-key"),  # the study whose finished sweep is shown
        dcc.Store(id="lab-running"),  # the study whose sweep job is followed
        dcc.Interval(id="lab-poll", interval=1000, disabled=True),
        dcc.Download(id="lab-download"),
        html.Div(id="lab-error"),
        html.Div(id="lab-recommendation"),
        dcc.Graph(id="lab-curves", style={"height": "420px"}),
        html.H4("Latency (transmission dominates a remote service)"),
        html.Div(id="lab-latency"),
    ])


def _archive():
    from core.routes import archive

    return archive()


@callback(Output("lab-study", "options"), Input("lab-study", "search_value"), State("lab-study", "value"), prevent_initial_call=True)
def find_study(name, uid):
    """Typing in the picker searches the whole archive by patient name (in SQL, as the Studies list does)."""
    if not name:
        return no_update
    try:
        return _study_options(open_store(), current_user(), uid, name)
    except RadPressError:  # a name the search refuses (control characters ...): keep the choices shown
        return no_update


@callback(Output("lab-running", "data"), Output("lab-poll", "disabled"), Output("lab-error", "children"),
          Input("lab-run", "n_clicks"), State("lab-study", "value"), prevent_initial_call=True)
def run(_clicks, uid):
    """Start (or join) the sweep's job; the sweep itself never runs inside a callback (core.labjobs)."""
    try:
        start_lab(*_archive(), current_user(), uid, again=True)
    except RadPressError as exc:
        return no_update, True, dbc.Alert(str(exc), color="danger")
    return uid, False, None


@callback(Output("lab-progress", "value"), Output("lab-progress", "label"), Output("lab-key", "data"),
          Output("lab-poll", "disabled", allow_duplicate=True), Output("lab-run", "disabled"), Output("lab-cancel", "disabled"),
          Output("lab-error", "children", allow_duplicate=True), Input("lab-poll", "n_intervals"), State("lab-running", "data"),
          prevent_initial_call=True)
def follow(_ticks, uid):
    """The job's progress each second; the result is shown once it is done."""
    state = lab_state(*_archive(), current_user(), uid)
    if state.state == "done":
        return 100, "done", uid, True, False, True, None
    job = state.job or {}
    if state.state in ("queued", "running"):
        total = job.get("total") or 0
        label = f"{job['done']}/{total} encodings" if total else "waiting for the lab's runner"
        return (100 * job["done"] / total if total else 0), label, no_update, False, True, False, None
    message = f"The sweep {state.state}: {job.get('message') or 'not started'}."
    return 0, "", no_update, True, False, True, dbc.Alert(message, color="warning", id="lab-stopped")


@callback(Output("lab-cancel", "disabled", allow_duplicate=True), Input("lab-cancel", "n_clicks"), State("lab-running", "data"),
          prevent_initial_call=True)
def cancel(_clicks, uid):
    cancel_lab(*_archive(), current_user(), uid)
    return True


def _result(uid):
    return lab_result(*_archive(), current_user(), uid)  # made by the job; never computed here


@callback(Output("lab-curves", "figure"), Output("lab-latency", "children"), Output("lab-recommendation", "children"),
          Input("lab-key", "data"), prevent_initial_call=True)
def show(uid):
    result = _result(uid)
    fig = make_subplots(rows=1, cols=3, subplot_titles=("PSNR (dB)", "SSIM", "worst Dice (task agreement)"))
    current = result.get("current") or {}
    palette = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
    for index, codec in enumerate(dict.fromkeys(r["codec"] for r in result["sweep"])):
        color = palette[index % len(palette)]
        rows = sorted((r for r in result["sweep"] if r["codec"] == codec and r["mode"] == "lossy"), key=lambda r: r["bpp"])
        x = [r["bpp"] for r in rows]
        for col, ys in enumerate(([r["psnr_min"] for r in rows], [r["ssim_mean"] for r in rows],
                                  [min(r["dice_min"].values(), default=1) for r in rows]), start=1):
            fig.add_trace(go.Scatter(x=x, y=ys, mode="lines+markers", name=codec, legendgroup=codec, showlegend=col == 1, line_color=color,
                                     text=[f"{r['target_ratio']:g}:1, achieved {r['achieved_ratio']:.1f}:1"
                                           + ("" if r.get("target_reached", True) else " (target not reached)") for r in rows]),
                          row=1, col=col)
    mark = next((r for r in result["sweep"] if r["codec"] == current.get("codec") and r["target_ratio"] == current.get("ratio")), None)
    if mark:
        for col in (1, 2, 3):
            fig.add_vline(x=mark["bpp"], line_dash="dash", line_color="red", row=1, col=col)
        # an annotation on a log axis is placed by log10 of its value (shapes take the value itself): placed at the
        # raw bpp it sat at 10^bpp and stretched the axis far past the data
        fig.add_annotation(x=math.log10(mark["bpp"]), y=1, yref="paper", text=f"current {current['ratio']:g}:1", showarrow=False,
                           font_color="red")
    fig.add_hline(y=0.98, line_dash="dot", line_color="grey", row=1, col=3)
    fig.update_xaxes(title_text="bits per pixel", type="log", range=_log_range([r["bpp"] for r in result["sweep"] if r["mode"] == "lossy"]))
    fig.update_layout(margin=dict(l=40, r=10, t=40, b=40))
    keep = {"uncompressed"} | {f"{c} lossless" for c in result["recommendation"]}
    if current:
        keep |= {f"{c} {current['ratio']:g}:1" for c in result["recommendation"]}
    latency = dbc.Table(
        [html.Thead(html.Tr([html.Th(h) for h in ("Variant", "Link (Mbit/s)", "Volume (MB)", "Transmission (s)", "Compression (s)",
                                                    "Decompression (s)", "Total (s)")]))] +
        [html.Tbody([html.Tr([html.Td(t["variant"]), html.Td(f"{t['link_mbit_s']:g}"), html.Td(f"{t['volume_mb']:.3f}"),
                              html.Td(f"{t['transmission_s']:.3f}"), html.Td(f"{t['compression_s']:.3f}"),
                              html.Td(f"{t['decompression_s']:.3f}"), html.Td(f"{t['total_s']:.3f}")])
                     for t in result["transmission"] if t["variant"] in keep])], size="sm", id="lab-latency-table")
    items = []
    admin = allowed(current_user(), "policy")
    for codec, rec in result["recommendation"].items():
        text = f"{codec}: highest ratio keeping Dice ≥ 0.98 and the PSNR threshold on every instance: "
        text += (f"{rec['ratio']:g}:1 (achieved {rec['achieved_ratio']:.1f}:1, {rec['bpp']:.3f} bpp)" if rec["ratio"]
                 else "none of the ratios tried")
        # codec and ratio travel together: a ratio is evidence only for the codec it was measured with
        buttons = [dbc.Button(f"Apply {codec} {rec['ratio']:g}:1 to this study", size="sm", color="primary", outline=True, className="ms-2",
                              id={"type": "lab-apply", "codec": codec, "ratio": rec["ratio"], "scope": "study"}),
                   dbc.Button(f"Apply {codec} {rec['ratio']:g}:1 to the clinic's {'/'.join(result['modalities'])} images", size="sm",
                              color="primary", outline=True, className="ms-1",
                              id={"type": "lab-apply", "codec": codec, "ratio": rec["ratio"], "scope": "clinic"})] if admin and rec["ratio"] else []
        items.append(html.Li([text, *buttons], className="mb-1"))
    verdict = None
    if current:
        verdict = dbc.Alert(f"The current ratio {current['ratio']:g}:1 ({current['codec']}) "
                            + ("passes the criteria." if current["passes"] else "FAILS the criteria on these images."),
                            color="success" if current["passes"] else "warning", id="lab-current")
    return fig, latency, html.Div([verdict, html.Ul(items, id="lab-recommended"), html.Div(id="lab-applied")])


@callback(Output("lab-applied", "children"), Input({"type": "lab-apply", "codec": dash.ALL, "ratio": dash.ALL, "scope": dash.ALL}, "n_clicks"),
          State("lab-key", "data"), prevent_initial_call=True)
def apply(clicks, uid):
    trigger = dash.ctx.triggered_id
    user = current_user()
    if not trigger or not any(clicks) or not allowed(user, "policy"):
        return no_update
    store, jobs = _archive()
    authorize(store, user, "policy", study_uid=uid)
    scope = trigger["scope"]
    try:
        message = apply_choice(store, _result(uid), trigger["codec"], trigger["ratio"], scope, user.name)
    except RadPressError as exc:
        return dbc.Alert(str(exc), color="danger", id="lab-applied-refused")
    for study in [uid] if scope == "study" else [s["study_uid"] for s in store.studies()]:
        jobs.submit(study)
    return dbc.Alert(message, color="success", id=f"lab-applied-{scope}")


@callback(Output("lab-download", "data"), Input("lab-csv", "n_clicks"), State("lab-key", "data"), prevent_initial_call=True)
def export(_clicks, uid):
    from core.lab import to_csv

    if not uid:
        return no_update
    return dict(content=to_csv(_result(uid)), filename=f"quality-lab-{uid[-12:]}.csv")


def _log_range(bpps: list[float]) -> list[float] | None:
    """The bits-per-pixel axis (log scale) spanning the sweep's points with a small margin, so the curves fill the plot."""
    values = [b for b in bpps if b and b > 0]
    if not values:
        return None
    low, high = math.log10(min(values)), math.log10(max(values))
    margin = max(0.05, 0.05 * (high - low))
    return [low - margin, high + margin]
