"""Image panes: Plotly figures whose image travels as a compressed PNG, not a JSON array."""

import numpy as np
import plotly.express as px
import plotly.graph_objects as go


def _layout(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(
        margin=dict(l=0, r=0, t=28, b=0),
        title=dict(text=title, x=0.01, font=dict(size=13)),
        dragmode="pan",
        uirevision="compare",  # keeps zoom and pan when the image is replaced
        paper_bgcolor="#111",
        plot_bgcolor="#111",
        font=dict(color="#eee"),
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return fig


def make_image_figure(pixels: np.ndarray, title: str, full_shape: tuple[int, int] | None = None) -> go.Figure:
    """An 8-bit grey or RGB frame; *full_shape* stretches a reduced-resolution preview to full size."""
    rows, cols = full_shape or pixels.shape[:2]
    fig = px.imshow(pixels, binary_string=True, binary_format="png", origin="upper",
                    x=np.linspace(0, cols - 1, pixels.shape[1]), y=np.linspace(0, rows - 1, pixels.shape[0]))
    return _layout(fig, title)


def make_difference_figure(diff: np.ndarray, gain: int, title: str) -> go.Figure:
    """|original − lossy| × gain through the Inferno colour scale, with its colour bar."""
    amplified = np.clip(diff.astype(np.float64) * gain, 0, 255).astype(np.uint8)
    scale = px.colors.sample_colorscale("Inferno", np.linspace(0, 1, 256))
    lut = np.array([[int(v) for v in c[c.index("(") + 1 : -1].split(",")] for c in scale], dtype=np.uint8)
    fig = px.imshow(lut[amplified], binary_string=True, binary_format="png", origin="upper")
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
                             marker=dict(colorscale="Inferno", cmin=0, cmax=255 / gain, showscale=True,
                                         colorbar=dict(title=dict(text=f"|error| (×{gain})"), thickness=12))))
    return _layout(fig, title)
