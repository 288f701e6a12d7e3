"""Index searches (QIDO-RS, C-FIND): matching rules, paging, and who sees what."""

import time

import pytest

from core.errors import InvalidHeaderError, InvalidOptionError
from core.bench import index_studies
from core.ingest import ingest
from core.query import as_dataset, as_json, find_instances, find_series, find_studies
from core.store import Store
from core.users import LoginRequired, User, mark_demo, set_readers, Users
from tests.synthetic import make_dataset, write

ADMIN = User("admin", "admin")


@pytest.fixture
def archive(tmp_path):
    """Three studies: Doe^Jane CT (2 series, 3 instances), doe^john MR (1), Smith MR+CT accession A-3 (2)."""
    store = Store(tmp_path / "data")
    specs = [("Doe^Jane", "P1", "20240105", "ACC1", "CT", 2), ("Doe^Jane", "P1", "20240105", "ACC1", "CT", 1),
             ("doe^john", "P2", "20240310", "ACC2", "MR", 1), ("Smith^Ann", "P3", "20230701", "A-3", "MR", 1),
             ("Smith^Ann", "P3", "20230701", "A-3", "CT", 1)]
    studies, series, paths = {}, {}, []
    for n, (name, pid, date, acc, modality, count) in enumerate(specs):
        study = studies.setdefault(pid, make_dataset(rows=8, columns=8).StudyInstanceUID)
        series_uid = make_dataset(rows=8, columns=8).SeriesInstanceUID
        series[n] = series_uid
        for k in range(count):
            ds = make_dataset(rows=8, columns=8, modality=modality, study_uid=study, series_uid=series_uid, seed=k)
            ds.PatientName, ds.PatientID, ds.StudyDate, ds.AccessionNumber = name, pid, date, acc
            ds.SeriesNumber, ds.InstanceNumber = n + 1, k + 1
            paths.append(write(ds, tmp_path / f"in/{n}-{k}.dcm"))
    results = list(ingest(store, paths))
    assert [r.status for r in results] == ["stored"] * 6
    return store, studies, series, results


def test_study_level_matching(archive):
    store, studies, _, _ = archive
    assert [s["PatientID"] for s in find_studies(store, ADMIN)] == ["P2", "P1", "P3"]  # newest first
    jane = find_studies(store, ADMIN, {"PatientID": "P1"})[0]
    assert jane["NumberOfStudyRelatedSeries"] == 2 and jane["NumberOfStudyRelatedInstances"] == 3
    assert jane["ModalitiesInStudy"] == ["CT"]
    assert {s["PatientID"] for s in find_studies(store, ADMIN, {"PatientName": "DOE*"})} == {"P1", "P2"}  # case-insensitive
    assert [s["PatientID"] for s in find_studies(store, ADMIN, {"PatientName": "doe^j?ne"})] == ["P1"]
    assert find_studies(store, ADMIN, {"PatientName": "Doe"}) == []  # no wildcard: the whole name
    assert [s["PatientID"] for s in find_studies(store, ADMIN, {"StudyDate": "20240101-20240201"})] == ["P1"]
    assert [s["PatientID"] for s in find_studies(store, ADMIN, {"StudyDate": "-20231231"})] == ["P3"]
    assert [s["PatientID"] for s in find_studies(store, ADMIN, {"StudyDate": "20240301-"})] == ["P2"]
    assert [s["PatientID"] for s in find_studies(store, ADMIN, {"AccessionNumber": "A-3"})] == ["P3"]
    assert [s["PatientID"] for s in find_studies(store, ADMIN, {"AccessionNumber": "ACC*"})] == ["P2", "P1"]
    assert [s["PatientID"] for s in find_studies(store, ADMIN, {"ModalitiesInStudy": "MR"})] == ["P2", "P3"]
    assert find_studies(store, ADMIN, {"ModalitiesInStudy": "CT"})[1]["ModalitiesInStudy"] == ["CT", "MR"]
    both = find_studies(store, ADMIN, {"StudyInstanceUID": f"{studies['P1']},{studies['P3']}"})
    assert {s["StudyInstanceUID"] for s in both} == {studies["P1"], studies["P3"]}
    assert find_studies(store, ADMIN, {"StudyInstanceUID": studies["P2"] + "\\" + studies["P3"]})[0]["PatientID"] == "P2"
    assert len(find_studies(store, ADMIN, {"PatientName": "*", "AccessionNumber": ""})) == 3  # universal matches


def test_series_and_instance_levels(archive):
    store, studies, series, results = archive
    found = find_series(store, ADMIN, {"StudyInstanceUID": studies["P1"]})
    assert [(s["SeriesInstanceUID"], s["NumberOfSeriesRelatedInstances"]) for s in found] == [(series[0], 2), (series[1], 1)]
    assert [s["PatientID"] for s in find_series(store, ADMIN, {"Modality": "MR"})] == ["P2", "P3"]
    instances = find_instances(store, ADMIN, {"SeriesInstanceUID": series[0]})
    assert [i["InstanceNumber"] for i in instances] == [1, 2]
    assert instances[0]["Rows"] == 8 and instances[0]["LossyImageCompression"] == "00"
    one = find_instances(store, ADMIN, {"SOPInstanceUID": results[3].sop_uid})
    assert [i["PatientID"] for i in one] == ["P2"]
    for match in find_studies(store, ADMIN) + find_series(store, ADMIN) + instances + one:
        assert as_json(match) == as_dataset(match).to_json_dict()
    ds = as_dataset(one[0])
    assert ds.to_json_dict()["00080018"]["Value"] == [results[3].sop_uid]
    assert ds.to_json_dict()["00100010"]["Value"] == [{"Alphabetic": "doe^john"}]


def test_limit_and_offset(archive):
    store = archive[0]
    ids = [s["PatientID"] for s in find_studies(store, ADMIN)]
    assert [s["PatientID"] for s in find_studies(store, ADMIN, limit=2)] == ids[:2]
    assert [s["PatientID"] for s in find_studies(store, ADMIN, limit=2, offset=2)] == ids[2:]
    assert len(find_instances(store, ADMIN, limit=4, offset=3)) == 3
    for bad in ({"limit": -1}, {"offset": "x"}, {"offset": 10 ** 20}):  # 10**20 was SQLite's OverflowError (a 500)
        with pytest.raises(InvalidOptionError):
            find_studies(store, ADMIN, **bad)


def test_bad_keys_are_refused_with_the_rule(archive):
    store = archive[0]
    with pytest.raises(InvalidOptionError, match="YYYYMMDD"):
        find_studies(store, ADMIN, {"StudyDate": "2024-01-01"})
    with pytest.raises(InvalidHeaderError, match="not a valid UID"):
        find_studies(store, ADMIN, {"StudyInstanceUID": "1.2.abc"})
    with pytest.raises(InvalidOptionError, match="not a matching key"):
        find_studies(store, ADMIN, {"SOPInstanceUID": "1.2.3"})  # an instance key at study level
    for number in ("one", "99999999999999999999999"):  # the second was SQLite's OverflowError (a 500)
        with pytest.raises(InvalidOptionError, match="whole number"):
            find_series(store, ADMIN, {"SeriesNumber": number})
    with pytest.raises(LoginRequired):
        find_studies(store, None)


def test_visibility_follows_authorize(archive):
    store, studies, series, results = archive
    Users(store).add("rad", "pw-rad-123456", "radiologist")
    Users(store).add("other", "pw-other-123456", "radiologist")
    set_readers(store, studies["P1"], ["rad"], by="admin")
    other, rad, demo = User("other", "radiologist"), User("rad", "radiologist"), User("demo", "demo")
    assert {s["PatientID"] for s in find_studies(store, other)} == {"P2", "P3"}
    assert {s["PatientID"] for s in find_studies(store, rad)} == {"P1", "P2", "P3"}
    assert find_instances(store, other, {"SeriesInstanceUID": series[0]}) == []
    assert find_studies(store, demo) == []
    mark_demo(store, [results[0].sop_uid])  # one instance of Doe^Jane's first series
    [study] = find_studies(store, demo)
    assert (study["PatientID"], study["NumberOfStudyRelatedSeries"], study["NumberOfStudyRelatedInstances"]) == ("P1", 1, 1)
    assert [s["SeriesInstanceUID"] for s in find_series(store, demo)] == [series[0]]
    assert [i["SOPInstanceUID"] for i in find_instances(store, demo)] == [results[0].sop_uid]


def test_ten_thousand_studies_answer_in_under_300_ms(tmp_path):
    store = Store(tmp_path / "data")
    index_studies(store, 10_000)
    rad = User("rad", "radiologist")
    searches = [{}, {"PatientName": "name5*"}, {"StudyDate": "20240301-20240331", "ModalitiesInStudy": "CR"},
                {"PatientID": "P9999"}, {"AccessionNumber": "A12*"}]
    for filters in searches:
        start = time.perf_counter()
        found = find_studies(store, rad, filters, limit=100)
        elapsed = time.perf_counter() - start
        assert found and elapsed < 0.3, (filters, elapsed)
    assert find_studies(store, rad, {"PatientID": "P9999"})[0]["NumberOfStudyRelatedInstances"] == 3
