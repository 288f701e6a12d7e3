"""One storage strategy with what it keeps and what it would cost here."""

import dash_bootstrap_components as dbc
from dash import html

from core.present import human_size


def make_strategy_card(strategy, cost: dict | None, current: bool, modalities: tuple[str, ...] = ()) -> dbc.Card:
    """*current*: the clinic default; *modalities*: those whose own default this strategy is."""
    costs = []
    if cost:
        label = "projected" if cost["estimated"] else "measured"
        ratio = f" ({cost['vs_originals']:.2f}× the originals)" if cost.get("vs_originals") else ""
        costs = [html.P([html.Strong(human_size(cost["bytes"])), f" {label}{ratio}"], className=f"strategy-cost-{strategy.number}")]
    return dbc.Card(
        [
            dbc.CardHeader([f"{strategy.number}. {strategy.name}", dbc.Badge("clinic default", color="primary", className="ms-2") if current else None,
                            *[dbc.Badge(m, color="info", className="ms-1 modality-default") for m in modalities]]),
            dbc.CardBody([
                html.P([html.Strong("Stored: "), " + ".join(strategy.stored)]),
                html.P([html.Strong("Made on demand: "), " + ".join(strategy.on_demand) or "nothing"]),
                html.P([html.Strong("Pros: "), strategy.pros]),
                html.P([html.Strong("Cons: "), strategy.cons]),
                html.P([html.Strong("Suits: "), strategy.suits]),
                *costs,
            ]),
        ],
        className="strategy-card h-100" + (" border-primary" if current else ""),
        id=f"strategy-card-{strategy.number}",
    )
