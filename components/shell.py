"""The page frame shared by every page: navigation, who is logged in, the page itself."""

import dash
import dash_bootstrap_components as dbc
from dash import dcc, html

NAV = [("Studies", "/"), ("Compare", "/compare"), ("Viewer", "/viewer"), ("Lab", "/lab"), ("Policy", "/policy"), ("Jobs", "/jobs"),
       ("Users", "/users"),
       ("Conflicts", "/conflicts")]


def make_shell() -> html.Div:
    return html.Div([
        dcc.Location(id="url"),
        dbc.Navbar(
            dbc.Container([
                dbc.NavbarBrand("RadPress", href="/"),
                dbc.Nav([dbc.NavItem(dbc.NavLink(label, href=href, active="exact", id=f"nav-{label.lower()}")) for label, href in NAV],
                        navbar=True),
                html.Div([html.Span(id="whoami", className="text-light me-3 small"),
                          dbc.Button("Log out", href="/logout", external_link=True, size="sm", color="light", outline=True)],
                         className="d-flex align-items-center"),
            ], fluid=True),
            color="dark", dark=True, className="mb-3",
        ),
        dbc.Container(dash.page_container, fluid=True),
    ])
