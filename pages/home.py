"""Landing page: what this installation can do."""

import dash
from dash import html

from components import make_codec_table

dash.register_page(__name__, path="/", title="RadPress")


def layout(**_query):
    return html.Div([html.H2("Codecs"), make_codec_table()])
