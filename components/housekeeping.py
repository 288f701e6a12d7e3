"""Confirmation dialogs for what cannot be undone (deleting, keeping one side of a conflict, removing a user)."""

import dash_bootstrap_components as dbc
from dash import dcc, html

DELETE_OPEN = "delete-open"  # pattern id type: {"type": DELETE_OPEN, "kind": "study" | "series", "uid": UID}


def make_delete_button(kind: str, uid: str, label: str) -> dbc.Button:
    return dbc.Button(label, id={"type": DELETE_OPEN, "kind": kind, "uid": uid}, color="danger", outline=True, size="sm",
                      className="ms-2 delete-open")


def make_confirm_dialog(prefix: str, title: str, action: str) -> html.Div:
    """A modal with a body filled in by a callback, a danger button ``{prefix}-confirm`` and a target store."""
    return html.Div([
        dcc.Store(id=f"{prefix}-target"),
        dbc.Modal([
            dbc.ModalHeader(dbc.ModalTitle(title)),
            dbc.ModalBody(id=f"{prefix}-dialog-body"),
            dbc.ModalFooter([
                dbc.Button("Cancel", id=f"{prefix}-cancel", color="secondary", outline=True),
                dbc.Button(action, id=f"{prefix}-confirm", color="danger"),
            ]),
        ], id=f"{prefix}-dialog", is_open=False, backdrop="static"),
    ])
