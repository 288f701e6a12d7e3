"""The codec registry as a table, read from core so the UI never keeps its own list."""

import dash_bootstrap_components as dbc
from dash import html

from core import CODECS


def make_codec_table() -> dbc.Table:
    header = html.Thead(html.Tr([html.Th(h) for h in ("Codec", "Mode", "Transfer syntax", "Name")]))
    rows = [
        html.Tr([html.Td(c.name), html.Td(c.mode if c.writes else f"{c.mode} (read only)"),
                 html.Td(html.Code(str(c.transfer_syntax))), html.Td(c.label)])
        for c in CODECS
    ]
    return dbc.Table([header, html.Tbody(rows)], size="sm", striped=True, className="codec-table")
