"""A cine (multi-frame instance as H.264 MP4) in an HTML5 video, with a trim form whose result is a shareable URL
and a button that plays the HLS playlist instead (through hls.js, vendored in assets/hls; assets/cine.js)."""

from dash import dcc, html

from core.cine import LABEL

CINE_VIDEO = "cine-video"
CINE_TRIM = "cine-trim"
CINE_HLS = "cine-hls"


def make_cine_player(sop_uid: str, poster: str) -> html.Div:
    """The video loads nothing until played (encoding is on demand); the trim form opens ``/cine/<sop>.mp4?start=&end=``.

    *poster* is the URL the page links the instance's thumbnail with (versioned: the browser fetches it once).
    """
    src, key = f"/cine/{sop_uid}.mp4", sop_uid.replace(".", "-")  # Dash IDs may not hold dots
    return html.Div([
        html.Div([html.Strong("⚠ "), html.Span(LABEL)], className="lossy-banner small", role="alert"),
        html.Video(src=src, controls=True, muted=True, preload="none", poster=poster,
                   id=f"{CINE_VIDEO}-{key}", className="w-100 cine-video", **{"data-sop": sop_uid}),
        html.Form([
            dcc.Input(name="start", type="number", min=0, step="any", placeholder="start s", className="form-control form-control-sm",
                       style={"width": "6em"}),
            dcc.Input(name="end", type="number", min=0, step="any", placeholder="end s", className="form-control form-control-sm",
                       style={"width": "6em"}),
            html.Button("Trim", type="submit", className="btn btn-sm btn-outline-secondary"),
            html.Button("Play HLS", type="button", className="btn btn-sm btn-link cine-hls-button", id=f"{CINE_HLS}-{key}",
                        **{"data-video": f"{CINE_VIDEO}-{key}", "data-hls": f"/cine/{sop_uid}.m3u8"}),
        ], action=src, method="get", target="_blank", id=f"{CINE_TRIM}-{key}", className="d-flex gap-1 mt-1"),
    ], className="cine-player mb-2")
