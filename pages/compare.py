"""Compare: lossless on the left, lossy on the right, with the disclosure banner and the numbers."""

import dash
import dash_bootstrap_components as dbc
import diskcache
import numpy as np
from dash import Input, Output, State, callback, dcc, html, no_update

from components import make_difference_figure, make_image_figure, make_lossy_banner, make_metrics_card
from core.auth import current_user
from core.codecs import CODECS, MIN_RATIO
from core.comparison import compare_frame, difference_map, lossless_header, lossy_banner
from core.context import open_store
from core.derive import LossyHistory
from core.users import authorize, record_access, visible_instances, visible_studies
from core.errors import RadPressError
from core.pixels import read_dataset
from core.policy import ratio_for
from core.preview import decode_level, supports_levels
from core.render import IMAGE_DEFAULT, modality_values, preset_window, to_display, window_presets

dash.register_page(__name__, path="/compare", title="Compare — RadPress", name="Compare")

LOSSY_CODECS = [c for c in CODECS if c.lossy and c.writes and c.is_available]
PREVIEW_LEVEL = 2
DIFF_GAIN = 8


def _cache() -> diskcache.Cache:
    return diskcache.Cache(str(open_store().root / "cache" / "compare"), size_limit=1 << 30)


def _instances(store, user):
    options = []
    for study in visible_studies(store, user):
        for row in visible_instances(store, user, study["study_uid"]):
            options.append({"label": f"{row['patient_name']} — {row['modality']} {row['series_description'] or row['study_description'] or ''} #{row['number'] or ''}",
                            "value": row["sop_uid"]})
    return options


def _empty(title):
    return make_image_figure(np.zeros((8, 8), np.uint8), title)


def layout(sop: str = "", **_query):
    store, user = open_store(), current_user()
    options = _instances(store, user)
    if not options:
        return dbc.Alert("No studies yet: upload one on the Studies page.", color="secondary")
    sop = sop if any(o["value"] == sop for o in options) else options[0]["value"]
    record_access(store, user, "view", store.instance(sop)["study_uid"], sop)
    history = LossyHistory.from_index(store.instance(sop))
    controls = dbc.Row([
        dbc.Col([dbc.Label("Image"), dcc.Dropdown(id="compare-sop", options=options, value=sop, clearable=False)], md=4),
        dbc.Col([dbc.Label("Codec"), dcc.Dropdown(id="compare-codec", clearable=False, value=store.policy().lossy_codec,
                                                 options=[{"label": c.label, "value": c.name} for c in LOSSY_CODECS])], md=2),
        dbc.Col([dbc.Label("Lossy ratio", id="compare-ratio-label"),
                 dcc.Slider(id="compare-ratio", min=MIN_RATIO, max=100, step=1, value=10,
                            marks={v: f"{v}:1" for v in (2, 10, 20, 30, 50, 75, 100)}, tooltip={"placement": "bottom"})], md=4),
        dbc.Col([dbc.Label("Show"), dbc.Switch(id="compare-diff", label="difference map", value=False)], md=2),
    ], className="mb-2")
    viewing = dbc.Row([
        dbc.Col([dbc.Label("Frame"), dcc.Slider(id="compare-frame", min=0, max=0, step=1, value=0)], md=4, id="compare-frame-col"),
        dbc.Col([dbc.Label("Window preset"), dcc.Dropdown(id="compare-preset", clearable=False, value=IMAGE_DEFAULT)], md=3),
        dbc.Col([dbc.Label("Center"), dbc.Input(id="compare-center", type="number", debounce=True)], md=2),
        dbc.Col([dbc.Label("Width"), dbc.Input(id="compare-width", type="number", min=1, debounce=True)], md=2),
    ], className="mb-2")
    return html.Div([
        html.H2("Compare lossless and lossy"),
        controls,
        viewing,
        dbc.Row([
            dbc.Col(dbc.Progress(id="compare-progress", value=0, striped=True, animated=True, style={"height": "1.2rem"}), md=10),
            dbc.Col(dbc.Button("Cancel", id="compare-cancel", size="sm", color="danger", outline=True, disabled=True), md=2),
        ], className="mb-2"),
        html.Div(id="compare-error"),
        dcc.Store(id="compare-key"),
        dbc.Row([
            dbc.Col([
                html.Div(lossless_header(history), id="lossless-header",
                         className="lossless-header lossy-original" if history.lossy else "lossless-header"),
                dcc.Graph(id="pane-lossless", figure=_empty("lossless"), config={"scrollZoom": True, "displaylogo": False},
                          className="pane"),
                html.Div(id="metrics-lossless"),
            ], md=6),
            dbc.Col([
                make_lossy_banner("LOSSY — preparing the lossy image…"),
                dcc.Graph(id="pane-lossy", figure=_empty("lossy"), config={"scrollZoom": True, "displaylogo": False},
                          className="pane"),
                html.Div(id="metrics-lossy"),
            ], md=6),
        ]),
    ])


@callback(Output("compare-frame", "max"), Output("compare-frame", "marks"), Output("compare-frame-col", "style"),
          Output("compare-preset", "options"), Output("compare-ratio", "value"), Input("compare-sop", "value"))
def pick_instance(sop):
    store = open_store()
    authorize(store, current_user(), "view", sop_uid=sop)
    row = store.instance(sop)
    frames = row["frames"]
    presets = [{"label": name, "value": name} for name in window_presets(row["modality"] or "")]
    ratio = ratio_for(store.policy(), row["modality"] or "", row["body_part"] or "", row["study_description"] or "")
    marks = {0: "1", frames - 1: str(frames)} if frames > 1 else {}
    return frames - 1, marks, ({} if frames > 1 else {"display": "none"}), presets, ratio


@callback(Output("compare-center", "value"), Output("compare-width", "value"),
          Input("compare-preset", "value"), Input("compare-sop", "value"), State("compare-frame", "value"))
def pick_window(preset, sop, frame):
    """The image's own window (or VOI LUT: empty fields), else its central percentiles, or a named preset."""
    from core.pixels import decode_frame

    store = open_store()
    authorize(store, current_user(), "view", sop_uid=sop)
    if store.instance(sop)["samples"] == 3:
        return None, None
    ds = read_dataset(store.artifact(sop, "original").path)
    index = frame or 0
    values = modality_values(decode_frame(ds, index), ds, index)
    try:
        window = preset_window(preset or IMAGE_DEFAULT, ds, values, index)
    except RadPressError:  # a preset of the previous image's modality: start from this image's default
        window = preset_window(IMAGE_DEFAULT, ds, values, index)
    return (None, None) if window is None else (round(float(window[0]), 2), round(float(window[1]), 2))


@callback(
    Output("compare-key", "data"),
    Output("metrics-lossless", "children"),
    Output("metrics-lossy", "children"),
    Output("lossy-banner", "children"),
    Output("lossless-header", "children"),
    Output("lossless-header", "className"),
    Output("compare-error", "children"),
    Input("compare-sop", "value"),
    Input("compare-frame", "value"),
    Input("compare-codec", "value"),
    Input("compare-ratio", "value"),
    background=True,
    running=[(Output("compare-cancel", "disabled"), False, True)],
    cancel=[Input("compare-cancel", "n_clicks")],
    progress=[Output("compare-progress", "value"), Output("compare-progress", "label"),
              Output("pane-lossy", "figure", allow_duplicate=True)],
    prevent_initial_call="initial_duplicate",
)
def encode(set_progress, sop, frame, codec, ratio):
    """Re-encode in a background worker; shows a reduced-resolution lossy preview first."""
    store = open_store()
    authorize(store, current_user(dash.ctx), "view", sop_uid=sop)
    set_progress((10, "encoding…", no_update))
    try:
        ds = read_dataset(store.artifact(sop, "original").path)
        result = compare_frame(ds, frame or 0, codec, float(ratio), store.policy().lossless_codec)
    except RadPressError as exc:
        return no_update, no_update, no_update, no_update, no_update, no_update, dbc.Alert(str(exc), color="danger")
    banner = lossy_banner(result.lossy_metrics.ratio, result.lossy_codec, store.policy().lossy_banner, result.history)
    if supports_levels(codec) and min(result.spec.rows, result.spec.columns) >= 256:
        coarse = decode_level(codec, result.lossy_codestream, result.spec, PREVIEW_LEVEL)
        preview = make_image_figure(to_display(coarse, ds, index=frame or 0), f"{banner} (preview, 1/{1 << PREVIEW_LEVEL} resolution)",
                                    (result.spec.rows, result.spec.columns))
        set_progress((60, "preview shown, decoding full resolution…", preview))
    key = f"{sop}:{frame or 0}:{codec}:{float(ratio):g}"
    _cache().set(key, {"original": result.original, "lossless": result.lossless, "lossy": result.lossy, "banner": banner,
                       "frame": frame or 0})
    set_progress((100, "done", no_update))
    header = lossless_header(result.history, result.lossless_codec, result.lossless_metrics.ratio)
    left_title = "Lossless copy of a lossy original" if result.history.lossy else "Lossless"
    return (key,
            make_metrics_card(left_title, result.lossless_metrics, len(result.lossless_codestream), "card-lossless"),
            make_metrics_card("Lossy", result.lossy_metrics, len(result.lossy_codestream), "card-lossy"),
            [html.Strong("⚠ "), html.Span(banner, id="lossy-banner-text")], header,
            "lossless-header lossy-original" if result.history.lossy else "lossless-header", None)


@callback(Output("pane-lossless", "figure"), Output("pane-lossy", "figure", allow_duplicate=True),
          Input("compare-key", "data"), Input("compare-center", "value"), Input("compare-width", "value"),
          Input("compare-diff", "value"), State("compare-sop", "value"), prevent_initial_call=True)
def render(key, center, width, diff, sop):
    store = open_store()
    for uid in {sop, str(key or "").split(":")[0]} - {""}:
        authorize(store, current_user(), "view", sop_uid=uid)
    entry = _cache().get(key) if key else None
    if entry is None:
        return no_update, no_update
    ds = read_dataset(store.artifact(sop, "original").path)
    window = (float(center), float(width)) if center is not None and width else None
    index = entry.get("frame", 0)
    left = make_image_figure(to_display(entry["lossless"], ds, window, index), "lossless")
    if diff:
        right = make_difference_figure(difference_map(entry["original"], entry["lossy"]), DIFF_GAIN, f"difference — {entry['banner']}")
    else:
        right = make_image_figure(to_display(entry["lossy"], ds, window, index), entry["banner"])
    return left, right
