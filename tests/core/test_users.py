"""The one authorization rule and the session / throttling records behind login (no HTTP: the rule itself)."""

import time

import pytest

from core import users as users_module
from core.ingest import ingest
from core.errors import RadPressError
from core.store import Store, StoreError
from core.users import (LOGIN_LIMIT, AccessDenied, LoginRequired, User, Users, authorize, mark_demo, set_readers,
                        visible_instances, visible_jobs, visible_studies)
from tests.synthetic import KINDS, make_dataset, write

ADMIN, RAD, OTHER, DEMO = User("root", "admin"), User("rad", "radiologist"), User("other", "radiologist"), User("demo", "demo")


@pytest.fixture
def archive(tmp_path):
    """A sample study (one demo instance plus a clinic upload sharing its Study UID) and a clinic study."""
    store = Store(tmp_path / "data")
    sample = make_dataset(**KINDS["u8_odd"])
    clinic_in_sample = make_dataset(**KINDS["s12"], study_uid=sample.StudyInstanceUID)
    clinic = make_dataset(**KINDS["u10"])
    paths = [write(ds, tmp_path / f"{n}.dcm") for n, ds in enumerate((sample, clinic_in_sample, clinic))]
    assert [r.status for r in ingest(store, paths)] == ["stored"] * 3
    mark_demo(store, [sample.SOPInstanceUID])
    accounts = Users(store)
    for user in (RAD, OTHER):
        accounts.add(user.name, "password-" + user.name, user.role)
    return store, sample, clinic_in_sample, clinic


def test_roles_and_studies(archive):
    store, sample, clinic_in_sample, clinic = archive
    with pytest.raises(LoginRequired):
        authorize(store, None, "view")
    with pytest.raises(AccessDenied, match="radiologist role may not change the storage policy"):
        authorize(store, RAD, "policy", study_uid=clinic.StudyInstanceUID)
    with pytest.raises(AccessDenied):
        authorize(store, DEMO, "storage")
    with pytest.raises(StoreError):
        authorize(store, ADMIN, "view", study_uid="1.2.3.4")
    for user in (ADMIN, RAD, DEMO):
        authorize(store, user, "view", sop_uid=sample.SOPInstanceUID)
    authorize(store, RAD, "download", sop_uid=clinic_in_sample.SOPInstanceUID)
    with pytest.raises(AccessDenied, match="demo login"):
        authorize(store, DEMO, "view", sop_uid=clinic_in_sample.SOPInstanceUID)
    with pytest.raises(AccessDenied):
        authorize(store, DEMO, "view", study_uid=clinic.StudyInstanceUID)
    with pytest.raises(AccessDenied, match="does not belong"):
        authorize(store, ADMIN, "view", study_uid=clinic.StudyInstanceUID, sop_uid=sample.SOPInstanceUID)


def test_demo_sees_the_sample_instances_only(archive):
    store, sample, clinic_in_sample, clinic = archive
    [study] = visible_studies(store, DEMO)
    assert study["study_uid"] == sample.StudyInstanceUID and study["instances"] == 1 and study["modalities"] == "OT"
    assert [r["sop_uid"] for r in visible_instances(store, DEMO, sample.StudyInstanceUID)] == [sample.SOPInstanceUID]
    assert len(visible_instances(store, RAD, sample.StudyInstanceUID)) == 2
    assert len(visible_studies(store, RAD)) == 2
    errors = [{"sop_uid": sample.SOPInstanceUID, "error": "a"}, {"sop_uid": clinic_in_sample.SOPInstanceUID, "error": "b"}]
    jobs = [{"id": 1, "study_uid": sample.StudyInstanceUID, "errors": errors}, {"id": 2, "study_uid": clinic.StudyInstanceUID}]
    assert [(j["id"], j["errors"]) for j in visible_jobs(store, DEMO, jobs)] == [(1, errors[:1])]
    assert [j["id"] for j in visible_jobs(store, RAD, jobs)] == [1, 2]
    assert visible_jobs(store, ADMIN, jobs) == jobs


def test_named_readers(archive):
    store, _sample, _clinic_in_sample, clinic = archive
    uid = clinic.StudyInstanceUID
    assert set_readers(store, uid, ["other"], by="root") == ["other"]
    with pytest.raises(AccessDenied):
        authorize(store, RAD, "view", study_uid=uid)
    authorize(store, OTHER, "view", study_uid=uid)
    authorize(store, ADMIN, "view", study_uid=uid)
    assert uid not in {s["study_uid"] for s in visible_studies(store, RAD)}
    audit = store.query("SELECT user, what, new FROM audit ORDER BY id DESC LIMIT 1")[0]
    assert (audit["user"], audit["new"]) == ("root", '["other"]') and uid in audit["what"]
    set_readers(store, uid, None, by="root")
    authorize(store, RAD, "view", study_uid=uid)


def test_sessions_end_at_logout_and_removal(archive):
    store = archive[0]
    users = Users(store)
    sid = users.open_session("rad")
    assert users.session_user(sid) == RAD and users.session_user("forged") is None
    assert sid not in str([tuple(r) for r in store.query("SELECT * FROM sessions")])  # only a digest is kept
    users.close_session(sid)
    assert users.session_user(sid) is None
    sid = users.open_session("other")
    users.remove("other")
    assert users.session_user(sid) is None


def test_sessions_expire(archive, monkeypatch):
    users = Users(archive[0])
    sid = users.open_session("rad")
    monkeypatch.setattr(users_module, "SESSION_MAX_AGE_S", -1)
    assert users.session_user(sid) is None


def test_failed_logins_are_counted_per_name_and_address(archive):
    users = Users(archive[0])
    for _ in range(LOGIN_LIMIT - 1):
        users.login_failed("rad", "10.0.0.1")
    assert users.retry_after("rad", "10.0.0.2") == 0
    users.login_failed("rad", "10.0.0.1")
    assert 0 < users.retry_after("rad", "10.0.0.2") <= users_module.LOGIN_WINDOW_S
    assert users.retry_after("other", "10.0.0.1") > 0 and users.retry_after("other", "10.0.0.2") == 0
    users.login_succeeded("rad")
    assert users.retry_after("rad", "10.0.0.2") == 0


def test_unknown_user_is_checked_against_a_dummy_hash(archive):
    users = Users(archive[0])
    users.authenticate("nobody", "x")  # the dummy hash is made once

    def cost(name):
        start = time.perf_counter()
        assert users.authenticate(name, "wrong password") is None
        return time.perf_counter() - start

    unknown, wrong = min(cost("nobody") for _ in range(3)), min(cost("rad") for _ in range(3))
    assert unknown > 0.5 * wrong and wrong > 0.005


def test_demo_sees_missed_ratio_warnings_of_sample_instances_only(archive):
    store, sample, clinic_in_sample, _ = archive
    warnings = [{"sop_uid": sample.SOPInstanceUID, "warning": "a"}, {"sop_uid": clinic_in_sample.SOPInstanceUID, "warning": "b"}]
    jobs = [{"id": 1, "study_uid": sample.StudyInstanceUID, "errors": [], "warnings": warnings}]
    assert visible_jobs(store, DEMO, jobs)[0]["warnings"] == warnings[:1]
    assert visible_jobs(store, RAD, jobs)[0]["warnings"] == warnings


def test_identifiers_must_be_text(archive):
    """A hand-made callback request may carry a list or a number where a UID goes: a 400, not a database error."""
    from core.errors import InvalidOptionError

    store, sample, _, clinic = archive
    for bad in (["1.2.3"], {"a": 1}, 12345, True):
        with pytest.raises(InvalidOptionError, match="must be text") as info:
            authorize(store, ADMIN, "view", study_uid=bad)
        assert info.value.http_status == 400
        with pytest.raises(InvalidOptionError, match="SOP Instance UID must be text"):
            authorize(store, RAD, "view", sop_uid=bad)
    authorize(store, ADMIN, "view", study_uid=clinic.StudyInstanceUID)


def test_own_password_roles_and_the_last_administrator(tmp_path):
    store = Store(tmp_path / "data")
    users = Users(store)
    users.add("boss", "boss-password", "admin")
    users.add("rad", "rad-password", "radiologist")
    with pytest.raises(RadPressError, match="current password is wrong"):
        users.change_password("rad", "guess-password", "new-password-1")
    with pytest.raises(RadPressError, match="too short"):
        users.change_password("rad", "rad-password", "short")
    here, elsewhere = users.open_session("rad"), users.open_session("rad")
    users.change_password("rad", "rad-password", "new-password-1", keep_session=here)
    assert users.session_user(here) == User("rad", "radiologist") and users.session_user(elsewhere) is None
    assert users.authenticate("rad", "rad-password") is None and users.authenticate("rad", "new-password-1") == User("rad", "radiologist")
    for refused in (lambda: users.remove("boss"), lambda: users.set_role("boss", "radiologist", by="boss")):
        with pytest.raises(RadPressError, match="last administrator"):
            refused()
    with pytest.raises(RadPressError, match="does not exist"):
        users.set_role("rad", "root", by="boss")
    assert users.set_role("rad", "admin", by="boss") == User("rad", "admin")
    users.set_role("boss", "radiologist", by="rad")  # another administrator is left now
    users.remove("boss", by="rad")
    assert [u.name for u in users.list()] == ["rad"]
    audit = [r["what"] for r in store.query("SELECT what FROM audit ORDER BY id")]
    assert audit == ["password of user rad", "role of user rad", "role of user boss", "user boss removed"]
    assert all("password" not in (r["old"] + r["new"]) for r in store.query("SELECT old, new FROM audit"))
