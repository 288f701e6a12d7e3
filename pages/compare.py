"""Compare: lossless on the left, lossy on the right, with the disclosure banner and the numbers."""

import dash
import dash_bootstrap_components as dbc
import diskcache
import numpy as np
from dash import Input, Output, State, callback, clientside_callback, dcc, html, no_update

from components import make_difference_figure, make_image_figure, make_lossy_banner, make_metrics_card
from core.auth import current_user
from core.codecs import CODECS, MAX_RATIO, MIN_RATIO, check_ratio
from core.comparison import compare_frame, difference_map, lossless_header, lossy_banner
from core.context import open_store
from core.derive import LossyHistory
from core.studylist import study_page
from core.users import authorize, record_access, visible_instances
from core.errors import InvalidOptionError, RadPressError
from core.pixels import read_dataset
from core.policy import lossless_codec_for, ratio_for
from core.present import person_name
from core.preview import decode_level, supports_levels
from core.render import IMAGE_DEFAULT, modality_values, preset_window, to_display, window_presets

dash.register_page(__name__, path="/compare", title="Compare — RadPress", name="Compare")

LOSSY_CODECS = [c for c in CODECS if c.lossy and c.writes and c.is_available]
PREVIEW_LEVEL = 2
DIFF_GAIN = 8
NO_IMAGE = "no image — see the message above"
FAILED = "failed"  # the key of an encoding that failed
# the banner stays on screen while the lossy pane and its metrics scroll by (never read without it)
STICKY = {"position": "sticky", "top": 0, "zIndex": 1020}


def _cache() -> diskcache.Cache:
    return diskcache.Cache(str(open_store().root / "cache" / "compare"), size_limit=1 << 30)


def _study_of(store, user, sop: str) -> str | None:
    """The study whose images the picker lists: that of *sop* when the user may open it, else the newest they may."""
    if sop:
        try:
            authorize(store, user, "view", sop_uid=sop)
            return store.instance(sop)["study_uid"]
        except RadPressError:
            pass
    newest = study_page(store, user, page_size=1).rows
    return newest[0]["uid"] if newest else None


def _instances(store, user, study_uid: str) -> list[dict]:
    """The images of one study (an archive of 10,000 studies is never listed whole; other studies open from the list)."""
    return [{"label": f"{person_name(row['patient_name'])} — {row['modality']} "
                      f"{row['series_description'] or row['study_description'] or ''} #{row['number'] or ''}",
             "value": row["sop_uid"]} for row in visible_instances(store, user, study_uid) if row["rows"]]  # images only


def _empty(title):
    return make_image_figure(np.zeros((8, 8), np.uint8), title)


def layout(sop: str = "", **_query):
    store, user = open_store(), current_user()
    study_uid = _study_of(store, user, sop)
    if study_uid is None:
        return dbc.Alert("No studies yet: upload one on the Studies page.", color="secondary")
    options = _instances(store, user, study_uid)
    if not options:  # a report, a plan, a PDF: nothing to compress
        return dbc.Alert("This study holds no images to compare; open another from the Studies list.", color="secondary",
                         id="compare-no-images")
    sop = sop if any(o["value"] == sop for o in options) else options[0]["value"]
    record_access(store, user, "view", store.instance(sop)["study_uid"], sop)
    history = LossyHistory.from_index(store.instance(sop))
    controls = dbc.Row([
        dbc.Col([dbc.Label("Image"), dcc.Dropdown(id="compare-sop", options=options, value=sop, clearable=False)], md=4),
        dbc.Col([dbc.Label("Codec"), dcc.Dropdown(id="compare-codec", clearable=False, value=store.policy().lossy_codec,
                                                 options=[{"label": c.label, "value": c.name} for c in LOSSY_CODECS])], md=2),
        dbc.Col([dbc.Label("Lossy ratio", id="compare-ratio-label"),
                 dbc.Row([
                     dbc.Col(dcc.Slider(id="compare-ratio", min=MIN_RATIO, max=MAX_RATIO, step=1, value=10, allow_direct_input=False,
                                        marks={v: f"{v}:1" for v in (2, 50, 100, 150, 200)}), width=9),
                     # Enter or Tab applies the value (debounce); one outside 2–200 is refused with a message
                     dbc.Col(dbc.Input(id="compare-ratio-box", type="number", step="any", value=10,
                                       debounce=True, size="sm"), width=3),
                 ], className="g-1"),
                 html.Div(id="compare-ratio-message")], md=4),
        dbc.Col([dbc.Label("Show"), dbc.Switch(id="compare-diff", label="difference map", value=False)], md=2),
    ], className="mb-2")
    viewing = dbc.Row([
        dbc.Col([dbc.Label("Frame"),
                 dbc.Row([  # frames are numbered from 1 on the slider and in its box alike
                     dbc.Col(dcc.Slider(id="compare-frame", min=1, max=1, step=1, value=1, allow_direct_input=False), width=9),
                     dbc.Col(dbc.Input(id="compare-frame-box", type="number", step=1, value=1, debounce=True,
                                       size="sm"), width=3),
                 ], className="g-1"),
                 html.Div(id="compare-frame-message")], md=4, id="compare-frame-col"),
        dbc.Col([dbc.Label("Window preset"), dcc.Dropdown(id="compare-preset", clearable=False, value=IMAGE_DEFAULT)], md=3),
        dbc.Col([dbc.Label("Center"), dbc.Input(id="compare-center", type="number", debounce=True)], md=2),
        dbc.Col([dbc.Label("Width"), dbc.Input(id="compare-width", type="number", min=1, debounce=True)], md=2),
    ], className="mb-2")
    return html.Div([
        html.H2("Compare lossless and lossy"),
        html.P(["The images of one study; open another from the ", html.A("Studies", href="/"), " list (Compare on its page)."],
               className="small text-muted mb-1", id="compare-scope"),
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
                html.Div(make_lossy_banner("LOSSY — preparing the lossy image…"), style=STICKY),
                dcc.Graph(id="pane-lossy", figure=_empty("lossy"), config={"scrollZoom": True, "displaylogo": False},
                          className="pane"),
                html.Div(id="metrics-lossy"),
            ], md=6),
        ]),
    ])


@callback(Output("compare-frame", "max"), Output("compare-frame", "marks"), Output("compare-frame-box", "value"), Output("compare-frame-col", "style"),
          Output("compare-preset", "options"), Output("compare-ratio-box", "value"), Input("compare-sop", "value"))
def pick_instance(sop):
    """A new image starts at its first frame, with the ratio the policy gives its modality."""
    store = open_store()
    authorize(store, current_user(), "view", sop_uid=sop)
    row = store.instance(sop)
    frames = row["frames"]
    presets = [{"label": name, "value": name} for name in window_presets(row["modality"] or "")]
    ratio = ratio_for(store.policy(), row["modality"] or "", row["body_part"] or "", row["study_description"] or "")
    marks = {1: "1", frames: str(frames)} if frames > 1 else {}
    return frames, marks, 1, ({} if frames > 1 else {"display": "none"}), presets, ratio


@callback(Output("compare-ratio", "value"), Output("compare-ratio-box", "value", allow_duplicate=True),
          Output("compare-ratio-box", "invalid"), Output("compare-ratio-message", "children"),
          Input("compare-ratio", "value"), Input("compare-ratio-box", "value"), prevent_initial_call=True)
def sync_ratio(slider, box):
    """The slider and its box show one ratio; a typed one outside 2–200:1 is refused and nothing is encoded."""
    if dash.ctx.triggered_id == "compare-ratio":
        return no_update, slider, False, None
    try:
        if not isinstance(box, (int, float)) or isinstance(box, bool) or box != box:  # empty, text, NaN
            raise InvalidOptionError(f"Type a lossy ratio between {MIN_RATIO:g} and {MAX_RATIO:g} (as in 10 for 10:1).")
        ratio = check_ratio(float(box), True)
    except InvalidOptionError as exc:
        return no_update, no_update, True, html.Div(str(exc), className="small text-danger", id="compare-ratio-refused")
    return (no_update if ratio == slider else ratio), no_update, False, None  # the same ratio again encodes nothing


@callback(Output("compare-frame", "value"), Output("compare-frame-box", "value", allow_duplicate=True),
          Output("compare-frame-box", "invalid"), Output("compare-frame-message", "children"),
          Input("compare-frame", "value"), Input("compare-frame-box", "value"), State("compare-frame", "max"),
          prevent_initial_call=True)
def sync_frame(slider, box, frames):
    """The frame slider and its box, both numbered from 1; a frame the image does not have is refused."""
    if dash.ctx.triggered_id == "compare-frame":
        return no_update, slider, False, None
    if (not isinstance(box, (int, float)) or isinstance(box, bool) or not isinstance(frames, int)
            or not 1 <= box <= frames or box != int(box)):  # text, NaN, inf, a fraction, a frame the image lacks
        return (no_update, no_update, True,
                html.Div(f"Frames are numbered 1 to {frames if isinstance(frames, int) else 1}; "
                         f"{str(box)[:20] if box is not None else 'an empty box'} is not one of them.",
                         className="small text-danger"))
    return (no_update if int(box) == slider else int(box)), no_update, False, None


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
    index = _index(frame)
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
    interval=250,  # the browser asks for progress and the result 4 times a second (the default waits a whole second)
    running=[(Output("compare-cancel", "disabled"), False, True)],
    cancel=[Input("compare-cancel", "n_clicks")],
    progress=[Output("compare-progress", "value", allow_duplicate=True), Output("compare-progress", "label", allow_duplicate=True),
              Output("pane-lossy", "figure", allow_duplicate=True)],
    prevent_initial_call="initial_duplicate",
)
def encode(set_progress, sop, frame, codec, ratio):
    """Re-encode in a background worker; shows a reduced-resolution lossy preview first.

    A codec that cannot take the image leaves nothing of the previous encoding on screen
    (key, metrics, banner): :func:`render` then blanks both panes, so no stale lossy
    picture stands beside a message about another one.
    """
    store = open_store()
    authorize(store, current_user(dash.ctx), "view", sop_uid=sop)
    set_progress((10, "encoding…", no_update))
    index = _index(frame)
    try:
        ds = read_dataset(store.artifact(sop, "original").path)
        result = compare_frame(ds, index, codec, float(ratio), lossless_codec_for(store.policy(), store.instance(sop)))
    except RadPressError as exc:
        history = LossyHistory.from_index(store.instance(sop))
        return (FAILED, None, None, [html.Strong("⚠ "), html.Span("LOSSY — no lossy image: the encoding failed", id="lossy-banner-text")],
                lossless_header(history), "lossless-header lossy-original" if history.lossy else "lossless-header",
                dbc.Alert(str(exc), color="danger", id="compare-error-alert"))
    banner = lossy_banner(result.lossy_metrics.ratio, result.lossy_codec, store.policy().lossy_banner, result.history)
    if supports_levels(codec) and min(result.spec.rows, result.spec.columns) >= 256:
        coarse = decode_level(codec, result.lossy_codestream, result.spec, PREVIEW_LEVEL)
        preview = make_image_figure(to_display(coarse, ds, index=index), f"{banner} (preview, 1/{1 << PREVIEW_LEVEL} resolution)",
                                    (result.spec.rows, result.spec.columns))
        set_progress((60, "preview shown, decoding full resolution…", preview))
    key = f"{sop}:{index}:{codec}:{float(ratio):g}"
    _cache().set(key, {"original": result.original, "lossless": result.lossless, "lossy": result.lossy, "banner": banner,
                       "frame": index})
    header = lossless_header(result.history, result.lossless_codec, result.lossless_metrics.ratio)
    left_title = "Lossless copy of a lossy original" if result.history.lossy else "Lossless"
    return (key,
            make_metrics_card(left_title, result.lossless_metrics, len(result.lossless_codestream), "card-lossless"),
            make_metrics_card("Lossy", result.lossy_metrics, len(result.lossy_codestream), "card-lossy"),
            [html.Strong("⚠ "), html.Span(banner, id="lossy-banner-text")], header,
            "lossless-header lossy-original" if result.history.lossy else "lossless-header", None)


# The bar says "encoding…" as soon as anything asks for a new encoding, "cancelled" on Cancel; only render says "done".
clientside_callback(
    """function () {
        const cancelled = dash_clientside.callback_context.triggered.some(t => t.prop_id.startsWith("compare-cancel."));
        return cancelled ? [0, "cancelled", "secondary", false] : [5, "encoding…", "primary", true];
    }""",
    Output("compare-progress", "value", allow_duplicate=True), Output("compare-progress", "label", allow_duplicate=True),
    Output("compare-progress", "color", allow_duplicate=True), Output("compare-progress", "animated", allow_duplicate=True),
    Input("compare-sop", "value"), Input("compare-frame", "value"), Input("compare-codec", "value"), Input("compare-ratio", "value"),
    Input("compare-cancel", "n_clicks"), prevent_initial_call=True,
)


@callback(Output("pane-lossless", "figure"), Output("pane-lossy", "figure", allow_duplicate=True),
          Output("compare-progress", "value", allow_duplicate=True), Output("compare-progress", "label", allow_duplicate=True),
          Output("compare-progress", "color", allow_duplicate=True), Output("compare-progress", "animated", allow_duplicate=True),
          Input("compare-key", "data"), Input("compare-center", "value"), Input("compare-width", "value"),
          Input("compare-diff", "value"), State("compare-sop", "value"), prevent_initial_call=True)
def render(key, center, width, diff, sop):
    """Both panes at full resolution; the progress bar says "done" only once a new encoding is drawn (or "failed").

    A window change while another image is being encoded draws nothing: the key still
    names the previous image, whose pixels must not be shown with this image's window.
    """
    store = open_store()
    authorize(store, current_user(), "view", sop_uid=sop)
    if key == FAILED:  # its message is shown; nothing stale stays on screen
        return _empty(NO_IMAGE), _empty(NO_IMAGE), 100, "failed", "danger", False
    entry = _cache().get(key) if key and str(key).split(":")[0] == sop else None
    if entry is None:
        return (no_update,) * 6
    ds = read_dataset(store.artifact(sop, "original").path)
    window = (float(center), float(width)) if center is not None and width else None
    index = entry.get("frame", 0)
    left = make_image_figure(to_display(entry["lossless"], ds, window, index), "lossless")
    if diff:
        right = make_difference_figure(difference_map(entry["original"], entry["lossy"]), DIFF_GAIN, f"difference — {entry['banner']}")
    else:
        right = make_image_figure(to_display(entry["lossy"], ds, window, index), entry["banner"])
    if "compare-key.data" not in dash.ctx.triggered_prop_ids:
        return left, right, no_update, no_update, no_update, no_update
    return left, right, 100, "done", "success", False


def _index(frame) -> int:
    """The 0-based frame index of the 1-based number the slider and its box show."""
    return max(int(frame or 1) - 1, 0)
