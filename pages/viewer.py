"""Viewer for very large images: OpenSeadragon over the DeepZoom tiles."""

from urllib.parse import urlencode

import dash
import dash_bootstrap_components as dbc
from dash import html

from core.auth import current_user
from components import make_lossy_banner
from core.comparison import lossless_header
from core.context import open_store
from core.derive import LossyHistory
from core.errors import RadPressError
from core.present import dimensions
from core.render import IMAGE_DEFAULT, render_version, window_presets
from core.users import authorize, record_access

dash.register_page(__name__, path="/viewer", title="Viewer — RadPress", name="Viewer")


def layout(sop: str = "", preset: str = IMAGE_DEFAULT, **_query):
    store, user = open_store(), current_user()
    if not sop:  # opened from the top menu: the image is chosen on a study's page
        return dbc.Alert(["The Viewer shows one image at full resolution. Open a study from the ",
                          html.A("Studies", href="/"), " list and press Zoom on one of its images."],
                         color="info", id="viewer-choose")
    try:
        authorize(store, user, "view", sop_uid=sop)
        row = store.instance(sop)
    except RadPressError as exc:
        return dbc.Alert(str(exc), color="warning")
    record_access(store, user, "view", row["study_uid"], sop)
    history = LossyHistory.from_index(row)
    presets = window_presets(row["modality"] or "")
    preset = preset if preset in presets else IMAGE_DEFAULT
    return html.Div([
        html.H2(f"{row['modality']} {row['series_description'] or ''} — {dimensions(row['columns'], row['rows'])} px"),
        # an already-lossy original is said so before any tile is seen
        *([make_lossy_banner(lossless_header(history), "viewer-lossy-original")] if history.lossy else []),
        html.P("The original's pixels, decoded tile by tile from lossless JPEG 2000 resolution levels, at the image's own "
               "window (else its central 0.5–99.5 % of values). Scroll to zoom, drag to pan.", className="text-muted"),
        dbc.ButtonGroup([dbc.Button(name, href=f"/viewer?{urlencode({'sop': sop, 'preset': name})}", size="sm",
                                    color="secondary", outline=name != preset, active=name == preset) for name in presets],
                        id="viewer-presets", className="mb-2"),
        # assets/viewer.js starts OpenSeadragon on this element; it repeats the .dzi query on every tile, so v (the
        # original's checksum and the renderer's version) makes every tile URL name its content: the browser keeps
        # them (core.serving.versioned) until the file or the renderer changes.
        html.Div(id="osd-viewer", className="osd-viewer", **{"data-dzi": f"/deepzoom/{sop}.dzi?" + urlencode(
            {'preset': preset, 'v': render_version(store.artifact(sop, "original").checksum[:32])})}),
    ])
