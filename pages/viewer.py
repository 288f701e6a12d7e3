"""Viewer for very large images: OpenSeadragon over the DeepZoom tiles."""

import dash
import dash_bootstrap_components as dbc
from dash import html

from core.auth import current_user
from core.context import open_store
from core.errors import RadPressError
from core.users import authorize, record_access

dash.register_page(__name__, path="/viewer", title="Viewer — RadPress", name="Viewer")


def layout(sop: str = "", **_query):
    store, user = open_store(), current_user()
    try:
        authorize(store, user, "view", sop_uid=sop)
        row = store.instance(sop)
    except RadPressError as exc:
        return dbc.Alert(str(exc), color="warning")
    record_access(store, user, "view", row["study_uid"], sop)
    return html.Div([
        html.H2(f"{row['modality']} {row['series_description'] or ''} — {row['columns']} × {row['rows']} px"),
        html.P("Lossless pixels, decoded tile by tile from the JPEG 2000 resolution levels. Scroll to zoom, drag to pan.",
               className="text-muted"),
        # assets/viewer.js starts OpenSeadragon on this element.
        html.Div(id="osd-viewer", className="osd-viewer", **{"data-dzi": f"/deepzoom/{sop}.dzi"}),
    ])
