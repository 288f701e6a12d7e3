"""The Study page of a 300-instance study, as the browser gets it over HTTP: drawn light and paged per series,
with every lossy instance shown marked, and the other pages drawn by the server on request (authorized); a study of
many one-slice series is drawn a group of series at a time."""

import base64
import copy
import json
import re

import pytest
from pydicom.uid import generate_uid

from app import create_app
from core.ingest import ingest
from core.serving import HEARTBEAT_ENV
from core.studyview import FIRST_CARDS, SERIES_PER_PAGE
from core.users import Users, set_readers
from tests.conftest import ADMIN
from tests.core.test_studyview import make_study
from tests.synthetic import KINDS, make_dataset, write

BIG, CINES = 290, 10  # two series: 290 CT slices (every 9th arrived lossy) and 10 US instances (every 3rd a cine)
PER_PAGE = FIRST_CARDS // 2


def _basic(name: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study-page")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADPRESS_ADMIN_USER", ADMIN[0])
        mp.setenv("RADPRESS_ADMIN_PASSWORD", ADMIN[1])
        mp.delenv(HEARTBEAT_ENV, raising=False)
        app = create_app(tmp / "data", run_jobs=False, demo=False)
    store = app.server.extensions["radpress"]["store"]
    ct = make_dataset(rows=16, columns=16, modality="CT")
    lossy = make_dataset(**{**KINDS["already_lossy"], "rows": 16, "columns": 16, "modality": "CT"})
    us = make_dataset(rows=16, columns=24, modality="US")
    cine = make_dataset(rows=16, columns=24, frames=4, modality="US")
    paths, series = [], [generate_uid(), generate_uid()]
    for n in range(BIG + CINES):
        big = n < BIG
        number = n + 1 if big else n - BIG + 1
        ds = copy.deepcopy((lossy if (number - 1) % 9 == 0 else ct) if big else (cine if (number - 1) % 3 == 0 else us))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = ct.StudyInstanceUID, series[0 if big else 1]
        ds.SeriesNumber, ds.InstanceNumber = (1 if big else 2), number
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        paths.append(write(ds, tmp / "in" / f"{n}.dcm"))
    assert {r.status for r in ingest(store, paths)} == {"stored"}
    Users(store).add("rad", "rad-password", "radiologist")
    Users(store).add("rad2", "rad-password", "radiologist")
    return app, ct.StudyInstanceUID, series


def _page(client, uid: str, auth: dict) -> dict:
    answer = client.post("/_dash-update-component", headers=auth, json={
        "output": ".._pages_content.children..._pages_store.data..",
        "outputs": [{"id": "_pages_content", "property": "children"}, {"id": "_pages_store", "property": "data"}],
        "inputs": [{"id": "_pages_location", "property": "pathname", "value": "/study"},
                   {"id": "_pages_location", "property": "search", "value": f"?uid={uid}"}],
        "state": [], "changedPropIds": ["_pages_location.pathname"]})
    assert answer.status_code == 200, answer.data[:300]
    return answer


def _turn(app, client, uid: str, series_uid: str, number, auth: dict):
    """The pager's callback as Dash sends it when page *number* of a series is clicked."""
    (output,) = [k for k in app.callback_map if "series-cards" in k]
    key = {"series": series_uid}
    pager = {"type": "series-page", **key}
    return client.post("/_dash-update-component", headers=auth, json={
        "output": output,
        "outputs": [{"id": {"type": "series-cards", **key}, "property": "children"},
                    {"id": {"type": "series-shown", **key}, "property": "children"}],
        "inputs": [{"id": pager, "property": "active_page", "value": number}],
        "state": [{"id": pager, "property": "id", "value": pager}, {"id": "study-uid", "property": "data", "value": uid}],
        "changedPropIds": [json.dumps(pager, sort_keys=True, separators=(",", ":")) + ".active_page"]})


def _turn_series(app, client, uid: str, number, auth: dict):
    """The series pager's callback as Dash sends it when page *number* of the study's series is clicked."""
    (output,) = [k for k in app.callback_map if "study-series.children" in k]
    return client.post("/_dash-update-component", headers=auth, json={
        "output": output,
        "outputs": [{"id": "study-series", "property": "children"}, {"id": "study-series-shown", "property": "children"}],
        "inputs": [{"id": "study-series-pager", "property": "active_page", "value": number}],
        "state": [{"id": "study-uid", "property": "data", "value": uid}],
        "changedPropIds": ["study-series-pager.active_page"]})


def _nodes(tree, found=None) -> list[dict]:
    """Every Dash component in a layout's JSON."""
    found = [] if found is None else found
    if isinstance(tree, dict):
        if "namespace" in tree and "props" in tree:
            found.append(tree)
        for value in tree.values():
            _nodes(value, found)
    elif isinstance(tree, list):
        for value in tree:
            _nodes(value, found)
    return found


def _text(node) -> str:
    return json.dumps(node, ensure_ascii=False)


def _cards(tree) -> list[dict]:
    return [n for n in _nodes(tree) if "study-card" in (n["props"].get("className") or "")]


def test_a_300_instance_study_opens_light_and_paged(study):
    app, uid, (big, cines) = study
    answer = _page(app.server.test_client(), uid, _basic(*ADMIN))
    assert len(answer.data) < 150_000  # was 731 KB for 300 cards
    tree = answer.get_json()["response"]["_pages_content"]["children"]
    assert len(_nodes(tree)) < 20 * FIRST_CARDS  # was about 4,000 components: 13 per card, 300 cards
    cards = _cards(tree)
    assert len(cards) == PER_PAGE + CINES  # the big series' first page, the small one whole
    pagers = [n for n in _nodes(tree) if n["type"] == "Pagination"]
    assert [(p["props"]["id"]["series"], p["props"]["max_value"], p["props"]["active_page"]) for p in pagers] == \
           [(big, -(-BIG // PER_PAGE), 1)]
    shown = [n["props"]["children"] for n in _nodes(tree) if "series-shown" in (n["props"].get("className") or "")]
    assert shown == [f"instances 1–{PER_PAGE} of {BIG}", f"{CINES} instances"]
    for card in cards:  # every card keeps what it had: thumbnail (versioned), copies, downloads, Compare and Zoom
        text = _text(card)
        number = int(re.search(r'"#(\d+) ', text).group(1))
        sop = re.search(r"/compare\?sop=([\d.]+)", text).group(1)
        assert re.search(rf'"/thumbnail/{re.escape(sop)}\?v=[0-9a-f]{{32}}"', text)
        assert all(f"/download/instance/{sop}?variant={v}" in text for v in ("original", "lossless", "lossy"))
        assert f"/viewer?sop={sop}" in text and '"Compare"' in text and '"Zoom"' in text and "artifacts" in text
        lossy = card in cards[:PER_PAGE] and (number - 1) % 9 == 0
        assert ("lossy-card" in card["props"]["className"]) == lossy and ("Lossy original" in text) == lossy, number
        video = [n for n in _nodes(card) if n["type"] == "Video"]
        if card in cards[PER_PAGE:] and (number - 1) % 3 == 0:  # a cine: labelled LOSSY, its poster the card's thumbnail
            (img,) = [n for n in _nodes(card) if n["type"] == "Img"]
            assert video[0]["props"]["poster"] == img["props"]["src"] and "LOSSY" in text
        else:
            assert not video
    assert sum("lossy-card" in c["props"]["className"] for c in cards) == len(range(0, PER_PAGE, 9))


def test_other_pages_are_drawn_on_request_for_those_who_may_see_them(study):
    app, uid, (big, _cines) = study
    client, admin = app.server.test_client(), _basic(*ADMIN)
    last = -(-BIG // PER_PAGE)
    answer = _turn(app, client, uid, big, last, admin)
    assert answer.status_code == 200, answer.data[:300]
    out = answer.get_json()["response"]
    cards = _cards(out)
    numbers = [int(re.search(r'"#(\d+) ', _text(c)).group(1)) for c in cards]
    assert numbers == list(range((last - 1) * PER_PAGE + 1, BIG + 1))
    assert [v["children"] for k, v in out.items() if "series-shown" in k] == [f"instances {numbers[0]}–{BIG} of {BIG}"]
    assert [("lossy-card" in c["props"]["className"]) for c in cards] == [(n - 1) % 9 == 0 for n in numbers]
    for bad in (0, "2", None):
        assert _turn(app, client, uid, big, bad, admin).status_code == 400
    store = app.server.extensions["radpress"]["store"]
    set_readers(store, uid, ["rad2"], by=ADMIN[0])
    try:
        assert _turn(app, client, uid, big, 2, _basic("rad", "rad-password")).status_code == 403
        assert _turn(app, client, uid, big, 2, admin).status_code == 200
    finally:
        set_readers(store, uid, None, by=ADMIN[0])


MANY = 100  # one-slice series (every 3rd arrived lossy), as some CT exams come


@pytest.fixture(scope="module")
def many_series(study, tmp_path_factory):
    app, _uid, _series = study
    store = app.server.extensions["radpress"]["store"]
    return app, make_study(store, tmp_path_factory.mktemp("many-series"), [1] * MANY, lambda s, n: s % 3 == 0, 8, 8)


def test_a_study_of_many_series_draws_a_group_of_them(many_series):
    app, uid = many_series
    client, admin = app.server.test_client(), _basic(*ADMIN)
    answer = _page(client, uid, admin)
    assert len(answer.data) < 60_000  # a group of series whatever their number (300 drawn whole: 953 KB; paged: 45 KB)
    tree = answer.get_json()["response"]["_pages_content"]["children"]
    cards, pages = _cards(tree), -(-MANY // SERIES_PER_PAGE)
    blocks = [n for n in _nodes(tree) if "series-block" in (n["props"].get("className") or "")]
    assert len(cards) == len(blocks) == SERIES_PER_PAGE
    (pager,) = [n for n in _nodes(tree) if n["props"].get("id") == "study-series-pager"]
    assert (pager["props"]["max_value"], pager["props"]["active_page"]) == (pages, 1)
    assert f"series 1–{SERIES_PER_PAGE} of {MANY}" in _text(tree) and "series pager" in _text(tree)
    assert f"⚠ {len(range(0, MANY, 3))} of {MANY} instances arrived lossy-compressed" in _text(tree)
    lossy = [("lossy-card" in c["props"]["className"], "Lossy original" in _text(c)) for c in cards]
    assert lossy == [(n % 3 == 0,) * 2 for n in range(SERIES_PER_PAGE)]
    badges = [n for n in _nodes(tree) if "series-lossy" in (n["props"].get("className") or "")]
    assert [b["props"]["children"] for b in badges] == ["⚠ 1 of 1 arrived lossy"] * len(range(0, SERIES_PER_PAGE, 3))
    seen = {re.search(r"/compare\?sop=([\d.]+)", _text(c)).group(1) for c in cards}
    for number in range(2, pages + 1):  # every series is reached, each once, lossy ones still marked
        turned = _turn_series(app, client, uid, number, admin)
        assert turned.status_code == 200, turned.data[:300]
        out = turned.get_json()["response"]
        first, last = (number - 1) * SERIES_PER_PAGE, min(number * SERIES_PER_PAGE, MANY)
        assert out["study-series-shown"]["children"] == f"series {first + 1}–{last} of {MANY}"
        cards = _cards(out)
        assert [("lossy-card" in c["props"]["className"]) for c in cards] == [n % 3 == 0 for n in range(first, last)]
        seen |= {re.search(r"/compare\?sop=([\d.]+)", _text(c)).group(1) for c in cards}
    store = app.server.extensions["radpress"]["store"]
    assert seen == {r["sop_uid"] for r in store.instances(uid)}
    for bad in (0, "2", None):
        assert _turn_series(app, client, uid, bad, admin).status_code == 400
    set_readers(store, uid, ["rad2"], by=ADMIN[0])
    try:
        assert _turn_series(app, client, uid, 2, _basic("rad", "rad-password")).status_code == 403
        assert _turn_series(app, client, uid, 2, _basic("rad2", "rad-password")).status_code == 200
    finally:
        set_readers(store, uid, None, by=ADMIN[0])
