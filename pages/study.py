"""One study: series with thumbnails (series paged, and cards paged per series: core.studyview), artifacts per
instance, downloads, strategy override."""

import dash
import dash_bootstrap_components as dbc
from dash import ALL, MATCH, Input, Output, State, callback, ctx, dcc, html

from components.cine_player import make_cine_player
from components.housekeeping import DELETE_OPEN, make_confirm_dialog, make_delete_button
from core.present import dimensions, human_size
from core.archive import plan
from core.auth import current_user
from core.context import open_store
from core.errors import RadPressError
from core.housekeeping import delete_series, delete_study
from core.ohif import viewer_url
from core.compress import artifact_warning
from core.derive import LossyHistory
from core.policy import STRATEGIES, lossy_setting
from core.studyview import study_view
from core.users import allowed, authorize, record_access

dash.register_page(__name__, path="/study", title="Study — RadPress", name="Study")

STRATEGY = "study-strategy"
SERIES_PAGE = "series-page"  # pattern ids {"type": ..., "series": Series Instance UID}: the pager,
SERIES_CARDS = "series-cards"  # the cards it shows
SERIES_SHOWN = "series-shown"  # and which of them ("instances 49–96 of 300")
SERIES_GROUP = "study-series-pager"  # the pager of the study's series (when more than core.studyview.SERIES_PER_PAGE),
SERIES_LIST = "study-series"  # the series it shows
SERIES_GROUP_SHOWN = "study-series-shown"  # and which of them ("series 13–24 of 300")
GRID = {"display": "grid", "gridTemplateColumns": "repeat(auto-fill, minmax(15rem, 1fr))", "gap": "1rem"}


def _downloads(href: str, label: str, lossy_enabled: bool):
    variants = ["original", "lossless"] + (["lossy"] if lossy_enabled else [])
    return dbc.ButtonGroup([dbc.Button(f"{label} {v}", href=f"{href}?variant={v}", external_link=True, size="sm",
                                       color="secondary", outline=True) for v in variants], className="me-2 mb-1")


def _artifact_text(a) -> str:
    """A stored copy as listed on its card: a lossy one by the ratio it achieved, not the one asked for."""
    if a.variant == "lossy" and a.achieved_ratio:
        return f"lossy {a.achieved_ratio:.1f}:1 achieved ({a.codec}, target {a.ratio:g}:1, {human_size(a.bytes)})"
    return f"{a.variant} ({human_size(a.bytes)})"


def _lossy_original(row, arts) -> list:
    """The flag on an instance that was already lossy when it came in: its copies are never lossless images.

    A lossy copy of it is compressed by both steps: its cumulative ratio is shown too.
    """
    if not row["lossy"]:
        return []
    history = LossyHistory.from_index(row)
    totals = [history.then(a.achieved_ratio, a.codec).compressed for a in arts if a.variant == "lossy" and a.achieved_ratio]
    text = f"⚠ Lossy original — {history.method_names}, {history.compressed}"
    return [html.Div(text + "".join(f"; its lossy copy: {t} in total" for t in totals), className="small lossy-original-badge")]


def _master_line(decided, lossy: bool) -> list:
    """Strategy 5: say that "original" is the lossless master now (or why this original was kept).

    The master of an already-lossy image holds lossy pixels: it is never called a lossless image.
    """
    if decided is None:
        return []
    if not decided.mastered:
        return [html.Div(f"Original kept as it came: {decided.reason}", className="small text-muted master-note")]
    what = "master of a LOSSY image, recompressed without further loss" if lossy else "lossless master"
    return [html.Div(f"Original = {what} ({decided.codec}, bit-exact to the file received, checked by {decided.checked_by}); "
                     f"the file received ({human_size(decided.original_bytes)}) was replaced", className="small master-note")]


def _lossy_line(policy, rows):
    """Which codec and ratio this study's lossy copies are made with, and whether the CAR bound capped it."""
    if not rows or not policy.lossy_enabled:
        return None
    setting = lossy_setting(policy, rows[0])
    text = f"Lossy copies: {setting.codec} at {setting.ratio:g}:1" + (f" — {setting.note}" if setting.note else "")
    return html.P(text, className="small", id="study-lossy-setting")


def _series_block(page, lossy_enabled: bool, housekeeping: bool) -> html.Div:
    """A series: its heading (delete for administrators), which instances are shown, a pager when they do not all fit."""
    key = {"series": page.series_uid}
    delete = [make_delete_button("series", page.series_uid, "Delete series")] if housekeeping else []
    pager = [dbc.Pagination(id={"type": SERIES_PAGE, **key}, max_value=page.pages, active_page=page.number, first_last=True,
                            previous_next=True, fully_expanded=False, size="sm", className="mb-2 series-pager")] if page.pages > 1 else []
    lossy = [html.Span(f"⚠ {page.lossy} of {page.total} arrived lossy", className="badge bg-warning text-dark ms-2 series-lossy")
             ] if page.lossy else []
    return html.Div([
        html.H5([f"Series {page.series_uid[-12:]} — {page.modality} {page.description}",
                 html.Small(page.shown, id={"type": SERIES_SHOWN, **key}, className="text-muted ms-2 series-shown"), *lossy,
                 *delete]),
        *pager,
        html.Div(_cards(page, lossy_enabled), id={"type": SERIES_CARDS, **key}, style=GRID, className="mb-3 series-cards"),
    ], className="series-block")


def _series_list(group, lossy_enabled: bool, housekeeping: bool) -> list:
    """The series of one group; below the last, where the others are when the study has more."""
    more = [html.P([f"{group.shown} — the others: ", html.A("series pager", href=f"#{SERIES_GROUP}")],
                   className="small text-muted series-more")] if group.pages > 1 else []
    return [*(_series_block(page, lossy_enabled, housekeeping) for page in group.series), *more]


def _series_pager(group) -> list:
    """Which series are drawn, and the pager to the others (only when they do not all fit)."""
    if group.pages == 1:
        return []
    return [html.Div([html.Strong(group.shown, id=SERIES_GROUP_SHOWN, className="me-3"),
                      dbc.Pagination(id=SERIES_GROUP, max_value=group.pages, active_page=group.number, first_last=True,
                                     previous_next=True, fully_expanded=False, size="sm", className="mb-0")],
                     className="d-flex align-items-center flex-wrap mb-2 study-series-pager")]


def _cards(page, lossy_enabled: bool) -> list:
    return [_card(card, lossy_enabled) if card.row["rows"] else _document_card(card.row) for card in page.cards]


def _card(card, lossy_enabled: bool) -> html.Div:
    """One image instance, in few plain components (a page shows dozens): thumbnail, copies, lossy marks, links
    (Compare and Zoom open in the app, downloads as files)."""
    row, sop, arts = card.row, card.row["sop_uid"], card.artifacts
    variants = ["original", "lossless"] + (["lossy"] if lossy_enabled else [])
    links = ["⬇", *[html.A(v, href=f"/download/instance/{sop}?variant={v}") for v in variants],
             dcc.Link("Compare", href=f"/compare?sop={sop}", className="btn btn-sm btn-primary ms-auto"),
             dcc.Link("Zoom", href=f"/viewer?sop={sop}", className="btn btn-sm btn-outline-secondary")]
    return html.Div([
        dcc.Link(html.Img(src=card.thumbnail, className="card-img-top thumb", alt="thumbnail"), href=f"/compare?sop={sop}"),
        html.Div([
            html.Div(f"#{row['number'] or '?'} · {dimensions(row['columns'], row['rows'])} · {row['frames']} frame(s)", className="small"),
            html.Div(", ".join(_artifact_text(a) for a in arts), className="small text-muted artifacts"),
            *_lossy_original(row, arts),
            *_master_line(card.master, row["lossy"]),
            *[html.Div(w, className="small text-danger lossy-warning") for a in arts if (w := artifact_warning(row, a))],
            *([make_cine_player(sop, card.thumbnail)] if (row["frames"] or 0) > 1 else []),
            html.Div(links, className="small d-flex align-items-center flex-wrap gap-2 card-links"),
        ], className="card-body p-2"),
    ], className="card h-100 study-card" + (" lossy-card" if row["lossy"] else ""))


def layout(uid: str = "", **_query):
    store, user = open_store(), current_user()
    try:
        authorize(store, user, "view", study_uid=uid)
        study = store.study(uid)
    except RadPressError as exc:
        return dbc.Alert(str(exc), color="warning")
    record_access(store, user, "view", uid)
    policy = store.policy()
    view = study_view(store, user, uid)
    instances, mastered = view.instances, view.mastered
    housekeeping = allowed(user, "housekeeping")
    group = view.group()
    override = study["strategy"]
    strategy_picker = dbc.Row([
        dbc.Col(html.Label("Storage strategy for this study", htmlFor=STRATEGY), width="auto"),
        dbc.Col(dcc.Dropdown(id=STRATEGY, clearable=False, value=override or 0,
                             options=[{"label": f"Policy default ({policy.strategy_for(store.study_modalities(uid))})", "value": 0}] +
                                     [{"label": f"{s.number}. {s.name}", "value": s.number} for s in STRATEGIES]), md=4),
        dbc.Col(html.Div(id="study-strategy-result")),
    ], className="mb-3 align-items-center") if allowed(user, "policy") else html.P(f"Storage strategy: {store.study_strategy(uid)}")
    return html.Div(id="study-page", children=[
        dcc.Store(id="study-uid", data=uid),
        html.H2(f"{study['patient_name']} — {study['description'] or 'study'} ({study['date']})"),
        html.P(f"Study Instance UID {uid}", className="text-muted small"),
        *([make_delete_button("study", uid, "Delete study…"), make_confirm_dialog("delete", "Delete for good?", "Delete"),
           *_conflicts_note(store, uid)] if allowed(user, "housekeeping") else []),
        dbc.Button("Open in OHIF", href=viewer_url(uid), external_link=True, target="_blank", color="primary",
                   size="sm", className="mb-3", id="open-ohif"),
        strategy_picker,
        _lossy_line(policy, instances),
        *([html.P(f"{mastered} of {len(instances)} originals are lossless masters: downloads of \"original\" return the "
                  "master (same pixels, every other attribute kept; header X-RadPress-Original).",
                  className="small", id="study-master-note")] if mastered else []),
        html.Div([_downloads(f"/download/study/{uid}.zip", "zip", policy.lossy_enabled),
                  _downloads(f"/download/study/{uid}.tar", "tar", policy.lossy_enabled),
                  dbc.Button("zip original, deflated", href=f"/download/study/{uid}.zip?variant=original&deflate=1",
                             external_link=True, size="sm", color="secondary", outline=True, className="mb-1")],
                 className="mb-3"),
        *([html.P(f"⚠ {view.lossy} of {len(instances)} instances arrived lossy-compressed: marked on their cards and "
                  "counted in their series' headings.", className="small text-danger", id="study-lossy-originals")]
          if view.lossy else []),
        *_series_pager(group),
        html.Div(_series_list(group, policy.lossy_enabled, housekeeping), id=SERIES_LIST),
    ])


def _conflicts_note(store, uid: str) -> list:
    """Files that came with the UID of an instance of this study but other content, waiting for an administrator."""
    count = store.query("SELECT count(*) AS n FROM conflicts c JOIN instances i USING (sop_uid) JOIN series s USING (series_uid) "
                        "WHERE s.study_uid=?", (uid,))[0]["n"]
    return [dbc.Alert([f"{count} conflicting cop{'y' if count == 1 else 'ies'} of instances in this study: ",
                       html.A("see what differs and keep one", href=f"/conflicts?study={uid}")], color="warning", className="py-1 mt-2",
                      id="study-conflicts")] if count else []


def _document_card(row):
    """An object without pixels (SR, RT plan, encapsulated PDF ...): what it is, and its original to download."""
    from pydicom.uid import UID

    kind = UID(row["sop_class"] or "").name if row["sop_class"] else "non-image object"
    return dbc.Card(dbc.CardBody([
        html.Div(f"#{row['number'] or '?'} · {kind}", className="small"),
        html.Div("No image: stored and served as sent (never compressed).", className="small text-muted document"),
        dbc.Button("⬇ original", href=f"/download/instance/{row['sop_uid']}?variant=original", size="sm",
                   color="secondary", outline=True, external_link=True),
    ], className="p-2"), className="h-100")


@callback(Output("study-strategy-result", "children"), Input(STRATEGY, "value"), State("study-uid", "data"), prevent_initial_call=True)
def change_strategy(value, uid):
    from core.routes import archive

    user = current_user()
    if not allowed(user, "policy"):
        return dbc.Alert("Only an administrator can change the strategy.", color="danger")
    store, jobs = archive()
    authorize(store, user, "policy", study_uid=uid)
    store.set_study_strategy(uid, value or None, user=user.name)
    todo = plan(store, uid)
    if not todo.make and not todo.remove:
        return dbc.Alert("Nothing to change.", color="secondary", className="py-1 mb-0")
    job = jobs.submit(uid)
    return dbc.Alert([f"Job {job} queued: {len(todo.make)} artifact(s) to make, {len(todo.remove)} to remove. ",
                      html.A("See Jobs", href="/jobs")], color="info", className="py-1 mb-0", id="strategy-job")


@callback(Output({"type": SERIES_CARDS, "series": MATCH}, "children"), Output({"type": SERIES_SHOWN, "series": MATCH}, "children"),
          Input({"type": SERIES_PAGE, "series": MATCH}, "active_page"), State({"type": SERIES_PAGE, "series": MATCH}, "id"),
          State("study-uid", "data"), prevent_initial_call=True)
def turn_page(number, pager, uid):
    """Another page of a series' cards, drawn on the server like the first."""
    store, user = open_store(), current_user()
    authorize(store, user, "view", study_uid=uid)
    page = study_view(store, user, uid).page(pager["series"], number)
    return _cards(page, store.policy().lossy_enabled), page.shown


@callback(Output(SERIES_LIST, "children"), Output(SERIES_GROUP_SHOWN, "children"), Input(SERIES_GROUP, "active_page"),
          State("study-uid", "data"), prevent_initial_call=True)
def turn_series(number, uid):
    """Other series of the study, each at its first page of cards, drawn on the server like the first."""
    store, user = open_store(), current_user()
    authorize(store, user, "view", study_uid=uid)
    group = study_view(store, user, uid).group(number)
    return _series_list(group, store.policy().lossy_enabled, allowed(user, "housekeeping")), group.shown


@callback(Output("delete-dialog", "is_open"), Output("delete-dialog-body", "children"), Output("delete-target", "data"),
          Input({"type": DELETE_OPEN, "kind": ALL, "uid": ALL}, "n_clicks"), Input("delete-cancel", "n_clicks"),
          State("study-uid", "data"), prevent_initial_call=True)
def ask_delete(clicks, _cancel, uid):
    """What a delete would remove, said before anything is removed."""
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not any(clicks or []):
        return False, dash.no_update, None
    store, user = open_store(), current_user()
    authorize(store, user, "housekeeping", study_uid=uid)
    rows = [r for r in store.instances(uid) if trigger["kind"] == "study" or r["series_uid"] == trigger["uid"]]
    sops = {r["sop_uid"] for r in rows}
    arts = [a for a in store.artifacts(study_uid=uid) if a.sop_uid in sops]
    originals = sum(a.bytes for a in arts if a.variant == "original")
    what = "this study" if trigger["kind"] == "study" else f"this {rows[0]['modality'] if rows else ''} series".replace("  ", " ")
    body = [*([html.P(f"Series Instance UID {trigger['uid']}", className="small text-muted")] if trigger["kind"] == "series" else []),
            html.P([html.Strong(f"Delete {what}?"), f" {len(rows)} instance(s) in {len({r['series_uid'] for r in rows})} series: "
                    f"the originals ({human_size(originals)}) and every copy made from them "
                    f"({human_size(sum(a.bytes for a in arts) - originals)})."]),
            html.P("Originals are not kept anywhere else in RadPress: this cannot be undone. It is recorded in the audit log.",
                   className="text-danger mb-0")]
    return True, html.Div(body, id="delete-dialog-text"), {"kind": trigger["kind"], "uid": trigger["uid"]}


@callback(Output("study-page", "children"), Input("delete-confirm", "n_clicks"), State("delete-target", "data"),
          State("study-uid", "data"), prevent_initial_call=True)
def confirm_delete(_n, target, uid):
    store, user = open_store(), current_user()
    if not isinstance(target, dict) or target.get("kind") not in ("study", "series"):
        return dash.no_update
    try:
        result = (delete_study(store, user, uid, background=True) if target["kind"] == "study"
                  else delete_series(store, user, uid, target["uid"], background=True))
    except RadPressError as exc:
        return [dbc.Alert(str(exc), color="danger", id="delete-result")]
    text = (f"Deleted {result.instances} instance(s) in {len(result.series_uids)} series: {result.files} file(s), "
            f"{human_size(result.bytes_freed)} freed" + (" — the study is gone." if result.study_removed else "."))
    link = html.A("Back to the studies", href="/") if result.study_removed else html.A("Show the rest of the study", href=f"/study?uid={uid}")
    return [dbc.Alert([text, " ", link], color="success", id="delete-result")]
