"""Studies: upload with per-file progress and results, and the list of studies (searched, sorted and paged in SQL)."""

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dash_table, dcc, html

from core.auth import current_user
from core.context import open_store
from core.errors import InvalidOptionError
from core.ohif import viewer_url
from core.studylist import PAGE_SIZE, SORTABLE, list_filters, study_page, visible_modalities
from core.users import allowed

dash.register_page(__name__, path="/", title="Studies — RadPress", name="Studies")

TABLE = "studies-table"
REFRESH = "studies-refresh"
NAME, PATIENT_ID, ACCESSION = "studies-name", "studies-patient-id", "studies-accession"
MODALITY, DATES = "studies-modality", "studies-dates"
COUNT, ERROR = "studies-count", "studies-error"
DEBOUNCE_MS = 400  # search as one types, once a pause says the word is done
COLUMNS = (("", "open"), ("Patient", "patient"), ("Patient ID", "patient_id"), ("Birth date", "birth_date"),
           ("Sex", "sex"), ("Study date", "date"), ("Accession", "accession"),
           ("Description", "description"), ("Modality", "modalities"), ("Series", "series"),
           ("Instances", "instances"), ("Strategy", "strategy"), ("Originals", "originals"),
           ("Stored (all copies)", "stored"), ("Copies vs originals", "saving"), ("Lossy ratio (achieved)", "lossy_ratio"),
           ("Already lossy originals", "lossy_originals"))


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
            dbc.Col(dbc.Input(id=NAME, placeholder="Patient name (Doe, Ja… or * ? wildcards)", type="search", debounce=DEBOUNCE_MS), md=3),
            dbc.Col(dbc.Input(id=PATIENT_ID, placeholder="Patient ID (* ? wildcards)", type="search", debounce=DEBOUNCE_MS), md=2),
            dbc.Col(dbc.Input(id=ACCESSION, placeholder="Accession (* ? wildcards)", type="search", debounce=DEBOUNCE_MS), md=2),
            dbc.Col(dcc.Dropdown(id=MODALITY, placeholder="Modality", multi=True), md=2),
            dbc.Col(dcc.DatePickerRange(id=DATES, start_date_placeholder_text="Study date from", end_date_placeholder_text="to",
                                        display_format="YYYY-MM-DD", clearable=True, first_day_of_week=1), md=3),
        ], className="mb-2 g-2"),
        html.Div(id=COUNT, className="small text-muted mb-1"),
        html.Div(id=ERROR),
        dash_table.DataTable(
            id=TABLE,
            columns=[{"name": n, "id": i, "presentation": "markdown"} if i == "open" else {"name": n, "id": i}
                     for n, i in COLUMNS],
            page_action="custom", page_current=0, page_size=PAGE_SIZE, page_count=1,
            sort_action="custom", sort_mode="single", sort_by=[{"column_id": "date", "direction": "desc"}],
            markdown_options={"link_target": "_self"},
            style_cell={"fontFamily": "system-ui", "fontSize": "0.9rem", "textAlign": "left"},
            style_table={"overflowX": "auto"},
            # only indexed columns sort (server-side ORDER BY); the others show no sort button
            css=[{"selector": f'th[data-dash-column="{i}"] .column-header--sort', "rule": "display: none"}
                 for _n, i in COLUMNS if i not in SORTABLE],
        ),
        dcc.Interval(id=REFRESH, interval=3000),
    ])


@callback(Output(TABLE, "data"), Output(TABLE, "page_count"), Output(TABLE, "page_current"), Output(COUNT, "children"),
          Output(ERROR, "children"),
          Input(REFRESH, "n_intervals"), Input(NAME, "value"), Input(PATIENT_ID, "value"),
          Input(ACCESSION, "value"), Input(MODALITY, "value"), Input(DATES, "start_date"), Input(DATES, "end_date"),
          Input(TABLE, "page_current"), Input(TABLE, "sort_by"))
def refresh(_n, name, patient_id, accession, modalities, date_from, date_to, page, sort_by):
    """One page of the search, sorted in SQL; a new search or sort starts again at the first page."""
    if dash.ctx.triggered_id in (NAME, PATIENT_ID, ACCESSION, MODALITY, DATES) or "sort_by" in str(dash.ctx.triggered_prop_ids):
        page = 0
    sort = sort_by[0] if isinstance(sort_by, list) and sort_by and isinstance(sort_by[0], dict) else {}
    try:
        result = study_page(open_store(), current_user(),
                            list_filters(patient_id, name, accession, modalities, date_from, date_to),
                            sort.get("column_id", "date"), sort.get("direction", "desc") == "desc",
                            page if isinstance(page, int) else 0, PAGE_SIZE)
    except InvalidOptionError as exc:
        return [], 1, 0, "", dbc.Alert(str(exc), color="warning", className="py-1")
    rows = [{**r, "open": f"[Open](/study?uid={r['uid']}) · [Open in OHIF]({viewer_url(r['uid'])})"} for r in result.rows]
    count = f"{result.total} {'study' if result.total == 1 else 'studies'}" + (
        f" · page {result.page + 1} of {result.pages}" if result.pages > 1 else "")
    return rows, result.pages, result.page, count, None


@callback(Output(MODALITY, "options"), Input(REFRESH, "n_intervals"))
def modalities(_n):
    return visible_modalities(open_store(), current_user())
