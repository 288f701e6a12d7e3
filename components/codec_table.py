"""A table of the codec registry, read from core so the UI never keeps its own list."""

from dash import html

from core import CODECS


def make_codec_table() -> html.Table:
    header = html.Tr([html.Th(h) for h in ("Codec", "Mode", "Transfer syntax", "Name", "Available")])
    rows = [
        html.Tr(
            [
                html.Td(c.name),
                html.Td(c.mode if c.writes else f"{c.mode} (read only)"),
                html.Td(html.Code(str(c.transfer_syntax))),
                html.Td(c.label),
                html.Td("yes" if c.is_available else "no"),
            ]
        )
        for c in CODECS
    ]
    return html.Table([html.Thead(header), html.Tbody(rows)], className="codec-table")
