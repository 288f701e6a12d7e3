"""The numbers next to each image."""

import math

import dash_bootstrap_components as dbc
from dash import html


def _fmt(value, unit="", digits=2):
    if value is None:
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞ (identical)"
    return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def make_metrics_card(title: str, metrics, size_bytes: int, element_id: str) -> dbc.Card:
    rows = [
        ("Achieved ratio", f"{metrics.ratio:.2f}:1" if metrics.ratio else "—"),
        ("Bits per pixel", _fmt(metrics.bpp, "", 3)),
        ("PSNR", _fmt(metrics.psnr, " dB")),
        ("SSIM", _fmt(metrics.ssim, "", 5)),
        ("Max error", _fmt(metrics.max_error)),
        ("Size", f"{size_bytes / 1024:.1f} KB"),
    ]
    body = html.Table([html.Tbody([html.Tr([html.Th(k), html.Td(v, className=f"metric-{k.lower().replace(' ', '-')}")]) for k, v in rows])],
                      className="table table-sm mb-0")
    return dbc.Card([dbc.CardHeader(title), dbc.CardBody(body, className="p-1")], id=element_id, className="metrics-card")
