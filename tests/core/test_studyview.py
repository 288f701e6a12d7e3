"""The Study page's data: a few queries whatever the study's size, series paged and cards paged per series, versioned
thumbnails."""

import copy

import pytest
from pydicom.uid import generate_uid

from core.archive import make_artifact, plan, thumbnail_bytes
from core.errors import InvalidOptionError
from core.ingest import ingest
from core.store import Store
from core.studyview import FIRST_CARDS, MIN_PER_PAGE, SERIES_PER_PAGE, study_view
from core.users import User, mark_demo
from tests.synthetic import KINDS, make_dataset, write

ADMIN = User("boss", "admin")
DEMO = User("demo", "demo")


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "data")


def make_study(store: Store, folder, sizes: list[int], lossy=lambda series, number: False, rows: int = 16,
               columns: int = 16) -> str:
    """A CT study with one series per entry of *sizes* (that many instances, numbered from 1, Series Number from 1);
    *lossy(series, number)* (both from 0) says which arrived already lossy-compressed.  Also used by the page's
    HTTP and browser tests."""
    base = make_dataset(rows=rows, columns=columns, modality="CT")
    already_lossy = make_dataset(**{**KINDS["already_lossy"], "rows": rows, "columns": columns, "modality": "CT"})
    paths = []
    for s, size in enumerate(sizes):
        series_uid = generate_uid()
        for n in range(size):
            ds = copy.deepcopy(already_lossy if lossy(s, n) else base)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = base.StudyInstanceUID, series_uid, s + 1, n + 1
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            paths.append(write(ds, folder / f"{s}-{n}.dcm"))
    assert {r.status for r in ingest(store, paths)} == {"stored"}
    return base.StudyInstanceUID


def test_cards_are_paged_per_series_within_the_first_render_budget(store, tmp_path):
    uid = make_study(store, tmp_path / "in", [110, 3])
    view = study_view(store, ADMIN, uid)
    big, small = view.series
    assert view.per_page == FIRST_CARDS // 2 == 24  # two series share the first render
    first = view.pages()
    assert [(p.series_uid, p.number, p.pages, len(p.cards)) for p in first] == [(big, 1, 5, 24), (small, 1, 1, 3)]
    assert first[0].shown == "instances 1–24 of 110" and first[1].shown == "3 instances"
    last = view.page(big, 5)
    assert [c.row["number"] for c in last.cards] == list(range(97, 111)) and last.shown == "instances 97–110 of 110"
    assert view.page(big, 99) == last  # past the end: the last page (a pager clicked after a series shrank)
    third = view.page(big, 3)
    assert [c.row["number"] for c in third.cards] == list(range(49, 73))
    for bad in (0, -1, "2", 2.0, True, None):
        with pytest.raises(InvalidOptionError, match="whole numbers from 1"):
            view.page(big, bad)
    other = make_study(store, tmp_path / "other", [1])
    with pytest.raises(InvalidOptionError, match="not a series of study"):
        view.page(study_view(store, ADMIN, other).instances[0]["series_uid"])


@pytest.mark.parametrize("series, per_page", [(1, FIRST_CARDS), (5, 8), (7, 4), (20, MIN_PER_PAGE), (13, MIN_PER_PAGE)])
def test_each_series_gets_whole_rows_and_at_least_one(store, tmp_path, series, per_page):
    view = study_view(store, ADMIN, make_study(store, tmp_path / "in", [1] * series))
    assert view.per_page == per_page and per_page % MIN_PER_PAGE == 0


def test_many_series_are_drawn_a_group_at_a_time_and_each_is_reached_once(store, tmp_path):
    """A CT of one-slice series: a group of SERIES_PER_PAGE series, one row each, within the first-render budget."""
    sizes = [1] * 28 + [9]
    uid = make_study(store, tmp_path / "in", sizes, lambda s, n: n % 2 == 0)
    view = study_view(store, ADMIN, uid)
    assert SERIES_PER_PAGE * MIN_PER_PAGE <= FIRST_CARDS and view.per_page == MIN_PER_PAGE
    first = view.group()
    assert (first.number, first.pages, first.total, first.shown) == (1, 3, 29, f"series 1–{SERIES_PER_PAGE} of 29")
    assert view.pages() == list(first.series) and sum(len(p.cards) for p in first.series) <= FIRST_CARDS
    last = view.group(3)
    assert last.shown == f"series {2 * SERIES_PER_PAGE + 1}–29 of 29" and view.group(99) == last
    reached = [p.series_uid for n in range(1, 4) for p in view.group(n).series]
    assert reached == list(view.series) and len(set(reached)) == 29  # in display order, each once
    nine = last.series[-1]
    assert (nine.total, nine.pages, len(nine.cards), nine.lossy) == (9, 3, MIN_PER_PAGE, 5)  # lossy counted over the series
    assert [p.lossy for p in first.series] == [1] * SERIES_PER_PAGE  # one-slice series that arrived lossy
    assert view.lossy == 28 + 5 and all(c.row["lossy"] for p in first.series for c in p.cards)
    for bad in (0, -1, "2", 2.0, True, None):
        with pytest.raises(InvalidOptionError, match="whole numbers from 1"):
            view.group(bad)
    few = study_view(store, ADMIN, make_study(store, tmp_path / "few", [2, 3]))
    assert few.group().pages == 1 and few.group().shown == "2 series"


def test_thumbnail_urls_name_the_etag_the_route_answers_with(store, tmp_path):
    """Made on demand (no thumbnail stored) and stored by the archive: the URL's v is the thumbnail's own ETag."""
    uid = make_study(store, tmp_path / "in", [3])
    store.set_study_strategy(uid, 1)
    first = store.instances(uid)[0]["sop_uid"]
    for wanted in plan(store, uid).make:
        if wanted.sop_uid == first:
            make_artifact(store, wanted)
    assert store.artifact(first, "thumbnail") is not None
    cards = study_view(store, ADMIN, uid).pages()[0].cards
    for card in cards:
        _png, etag = thumbnail_bytes(store, card.row["sop_uid"])
        assert card.thumbnail == f"/thumbnail/{card.row['sop_uid']}?v={etag}"
    assert len({c.thumbnail for c in cards}) == 3


def test_a_stored_thumbnail_drawn_by_another_renderer_is_not_linked_and_is_made_again(store, tmp_path, monkeypatch):
    """core.render.RENDER_VERSION bumped by an upgrade: the page links a thumbnail drawn now, not the stored one (its
    URL, hence the browser's copy, changes), and the study's next job draws the stored ones again."""
    uid = make_study(store, tmp_path / "in", [2])
    store.set_study_strategy(uid, 1)
    for wanted in plan(store, uid).make:
        if wanted.variant == "thumbnail":
            assert wanted.codec == "png1"
            make_artifact(store, wanted)
    sops = [r["sop_uid"] for r in store.instances(uid)]
    before = {c.row["sop_uid"]: c.thumbnail for c in study_view(store, ADMIN, uid).pages()[0].cards}
    assert all(before[sop].endswith(f"?v={store.artifact(sop, 'thumbnail').checksum[:32]}") for sop in sops)
    monkeypatch.setattr("core.render.RENDER_VERSION", 2)
    after = {c.row["sop_uid"]: c.thumbnail for c in study_view(store, ADMIN, uid).pages()[0].cards}
    for sop in sops:
        _png, etag = thumbnail_bytes(store, sop)
        assert after[sop] == f"/thumbnail/{sop}?v={etag}" != before[sop]  # drawn on request meanwhile, under a new name
    again = [w for w in plan(store, uid).make if w.variant == "thumbnail"]
    assert sorted(w.sop_uid for w in again) == sorted(sops) and {w.codec for w in again} == {"png2"}
    for wanted in again:
        make_artifact(store, wanted)
    assert not [w for w in plan(store, uid).make if w.variant == "thumbnail"] and not plan(store, uid).remove
    for sop in sops:
        stored = store.artifact(sop, "thumbnail")
        assert stored.codec == "png2" and thumbnail_bytes(store, sop) == (stored.path.read_bytes(), stored.checksum[:32])


def test_the_study_is_read_in_a_few_queries_whatever_its_size(store, tmp_path, monkeypatch):
    small, large = make_study(store, tmp_path / "s", [4]), make_study(store, tmp_path / "l", [60, 40], lambda s, n: n % 7 == 0)
    calls = []
    real = Store.query
    monkeypatch.setattr(Store, "query", lambda self, sql, params=(): calls.append(sql) or real(self, sql, params))
    counts = []
    for uid in (small, large):
        calls.clear()
        view = study_view(store, ADMIN, uid)
        [p.cards for p in view.pages()]
        counts.append(len(calls))
    assert counts[0] == counts[1] <= 4, calls


def test_a_demo_login_sees_the_sample_instances_only_and_marks_survive(store, tmp_path):
    uid = make_study(store, tmp_path / "in", [30], lambda s, n: n % 3 == 0)
    rows = store.instances(uid)
    mark_demo(store, [r["sop_uid"] for r in rows[:5]])
    view = study_view(store, DEMO, uid)
    assert [c.row["sop_uid"] for c in view.page(rows[0]["series_uid"]).cards] == [r["sop_uid"] for r in rows[:5]]
    lossy = [c for c in study_view(store, ADMIN, uid).page(rows[0]["series_uid"]).cards if c.row["lossy"]]
    assert [c.row["number"] for c in lossy] == [1, 4, 7, 10, 13, 16, 19, 22, 25, 28]
