"""Studies: upload with per-file progress and results, and the table of studies."""

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dash_table, dcc, html

from core.codecs.rate import RATIO_TOLERANCE
from core.auth import current_user
from core.context import open_store
from core.derive import LossyHistory
from core.ohif import viewer_url
from core.present import copies_saving, dicom_date, human_size, person_name, sex
from core.users import allowed, visible_instances, visible_studies

dash.register_page(__name__, path="/", title="Studies — RadPress", name="Studies")

TABLE = "studies-table"
REFRESH = "studies-refresh"


def layout(**_query):
    user = current_user()
    upload = (
        dbc.Card([
            dbc.CardHeader("Upload studies"),
            dbc.CardBody([
                html.P("DICOM files, a whole folder, or zip / tar archives. Each file is checked and reported.", className="small text-muted"),
                # Filled by assets/upload.js: it streams each file to /api/upload with its own progress bar.
                html.Div(id="upload-widget", className="upload-widget"),
                html.Div(id="upload-results"),
            ]),
        ], className="mb-3")
        if allowed(user, "upload") else
        dbc.Alert("Your role can look at studies but not upload them.", color="secondary", id="upload-not-allowed")
    )
    return html.Div([
        html.H2("Studies"),
        upload,
        dbc.Row([
            dbc.Col(dbc.Input(id="studies-search", placeholder="Search patient, description, UID…", type="search"), md=6),
            dbc.Col(dcc.Dropdown(id="studies-modality", placeholder="Modality", multi=True), md=3),
        ], className="mb-2"),
        dash_table.DataTable(
            id=TABLE,
            columns=[{"name": n, "id": i, "presentation": "markdown"} if i == "open" else {"name": n, "id": i}
                     for n, i in (("", "open"), ("Patient", "patient"), ("Patient ID", "patient_id"), ("Birth date", "birth_date"),
                                  ("Sex", "sex"), ("Study date", "date"), ("Accession", "accession"),
                                  ("Description", "description"), ("Modality", "modalities"), ("Series", "series"),
                                  ("Instances", "instances"), ("Strategy", "strategy"), ("Originals", "originals"),
                                  ("Stored (all copies)", "stored"), ("Copies vs originals", "saving"), ("Lossy ratio (achieved)", "lossy_ratio"),
                                  ("Already lossy originals", "lossy_originals"))],
            sort_action="native", page_size=20, markdown_options={"link_target": "_self"},
            style_cell={"fontFamily": "system-ui", "fontSize": "0.9rem", "textAlign": "left"},
            style_table={"overflowX": "auto"},
        ),
        dcc.Interval(id=REFRESH, interval=3000),
    ])


def _achieved(lossy) -> str:
    """The ratios the stored lossy copies achieved (not the ones asked for), and how many missed their target."""
    values = [a.achieved_ratio for a in lossy if a.achieved_ratio]
    if not values:
        return "—"
    low, high = min(values), max(values)
    text = f"{low:.1f}:1" if round(low, 1) == round(high, 1) else f"{low:.1f}–{high:.1f}:1"
    missed = sum(1 for a in lossy if a.achieved_ratio and abs(a.achieved_ratio / a.ratio - 1) > RATIO_TOLERANCE)
    return text + (f" ({missed} missed the target)" if missed else "")


def _lossy_originals(rows) -> str:
    """Instances that were already lossy when they came in, with their cumulative ratios."""
    if not rows:
        return ""
    ratios = sorted({LossyHistory.from_index(r).compressed for r in rows})
    return f"⚠ {len(rows)} ({'; '.join(ratios)})"


def _rows(store, user):
    rows = []
    for s in visible_studies(store, user):
        instances = visible_instances(store, user, s["study_uid"])
        visible = {r["sop_uid"] for r in instances}
        arts = [a for a in store.artifacts(study_uid=s["study_uid"]) if a.sop_uid in visible]
        stored = sum(a.bytes for a in arts)
        by_variant = {}
        for a in arts:
            by_variant[a.variant] = by_variant.get(a.variant, 0) + a.bytes
        rows.append({
            "patient": person_name(s["patient_name"]), "patient_id": s["patient_id"],
            "birth_date": dicom_date(s["birth_date"]), "sex": sex(s["sex"]),
            "date": dicom_date(s["date"]), "accession": s["accession"], "description": s["description"],
            "modalities": s["modalities"], "series": s["series"], "instances": s["instances"],
            "strategy": store.study_strategy(s["study_uid"]),
            "originals": human_size(by_variant.get("original", 0)), "stored": human_size(stored),
            "saving": copies_saving(by_variant),
            "lossy_ratio": _achieved([a for a in arts if a.variant == "lossy"]),
            "lossy_originals": _lossy_originals([r for r in instances if r["lossy"]]),
            "open": f"[Open](/study?uid={s['study_uid']}) · [Open in OHIF]({viewer_url(s['study_uid'])})",
            "uid": s["study_uid"],
        })
    return rows


@callback(Output(TABLE, "data"), Output("studies-modality", "options"),
          Input(REFRESH, "n_intervals"), Input("studies-search", "value"), Input("studies-modality", "value"))
def refresh(_n, search, modalities):
    rows = _rows(open_store(), current_user())
    options = sorted({m for r in rows for m in (r["modalities"] or "").split(",") if m})
    if search:
        needle = search.lower()
        rows = [r for r in rows if needle in " ".join(str(v) for v in r.values()).lower()]
    if modalities:
        rows = [r for r in rows if set((r["modalities"] or "").split(",")) & set(modalities)]
    return rows, options
