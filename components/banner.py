"""The disclosure on every lossy image: text, not only colour, and no close button."""

from dash import html

LOSSY_BANNER = "lossy-banner"


def make_lossy_banner(text: str, element_id: str = LOSSY_BANNER) -> html.Div:
    return html.Div([html.Strong("⚠ "), html.Span(text)], id=element_id, className="lossy-banner", role="alert")
