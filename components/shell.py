"""The page frame shared by every page."""

import dash
from dash import html


def make_shell() -> html.Div:
    return html.Div(
        [
            html.Header([html.H1("RadPress"), html.P("Store and serve medical images economically, without fooling a doctor.")]),
            html.Main(dash.page_container),
        ],
        className="shell",
    )
