"""Housekeeping in headless Chromium: deleting with a confirmation dialog, the conflict view, the Users page's actions."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from core.ingest import ingest
from core.store import sha256_file
from core.users import Users
from tests.conftest import ADMIN
from tests.synthetic import make_dataset, write
from tests.test_browser import ARTIFACTS, browser, login, wait  # noqa: F401 - browser is a fixture


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One app for the module (no job runner: nothing here needs copies); the password test runs last."""
    import os
    import threading

    from werkzeug.serving import make_server

    from app import create_app

    os.environ["RADPRESS_ADMIN_USER"], os.environ["RADPRESS_ADMIN_PASSWORD"] = ADMIN
    try:
        app = create_app(tmp_path_factory.mktemp("housekeeping") / "data", demo=False, run_jobs=False)
    finally:
        del os.environ["RADPRESS_ADMIN_USER"], os.environ["RADPRESS_ADMIN_PASSWORD"]
    httpd = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", app
    httpd.shutdown()


def _click(driver, element):
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", element)


def _dialog_text(driver, prefix):
    return wait(driver, 20).until(EC.visibility_of_element_located((By.ID, f"{prefix}-dialog-text"))).text


def test_delete_a_series_then_the_study_after_confirming(served, browser, tmp_path):  # noqa: F811
    base, app = served
    store = app.server.extensions["radpress"]["store"]
    study = make_dataset(rows=8, columns=8).StudyInstanceUID
    paths = []
    for s in range(2):
        series = make_dataset(rows=8, columns=8).SeriesInstanceUID
        for n in range(2):
            ds = make_dataset(rows=48, columns=40, modality="MR", study_uid=study, series_uid=series, seed=s * 2 + n)
            ds.SeriesNumber = s + 1
            paths.append(write(ds, tmp_path / f"{s}{n}.dcm"))
    assert all(r.status == "stored" for r in ingest(store, paths))
    first = store.instances(study)[0]["series_uid"]
    login(browser, base, ADMIN)
    browser.get(f"{base}/study?uid={study}")
    buttons = wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".delete-open"))
    assert [b.text for b in buttons] == ["Delete study…", "Delete series", "Delete series"]
    _click(browser, buttons[1])
    text = _dialog_text(browser, "delete")
    assert f"Series Instance UID {first}" in text and "Delete this MR series? 2 instance(s) in 1 series" in text
    assert "cannot be undone" in text
    browser.save_screenshot(str(ARTIFACTS / "housekeeping-delete-dialog.png"))
    _click(browser, browser.find_element(By.ID, "delete-cancel"))  # cancelled: nothing goes
    wait(browser).until(EC.invisibility_of_element_located((By.ID, "delete-dialog-text")))
    assert len(store.instances(study)) == 4
    _click(browser, browser.find_elements(By.CSS_SELECTOR, ".delete-open")[1])
    _dialog_text(browser, "delete")
    _click(browser, browser.find_element(By.ID, "delete-confirm"))
    result = wait(browser).until(EC.visibility_of_element_located((By.ID, "delete-result"))).text
    assert result.startswith("Deleted 2 instance(s) in 1 series: 2 file(s)") and "study is gone" not in result
    assert {r["series_uid"] for r in store.instances(study)} != {first} and len(store.instances(study)) == 2
    browser.get(f"{base}/study?uid={study}")
    _click(browser, wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".delete-open"))[0])
    assert "Delete this study? 2 instance(s) in 1 series" in _dialog_text(browser, "delete")
    _click(browser, browser.find_element(By.ID, "delete-confirm"))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "delete-result"), "the study is gone"))
    browser.save_screenshot(str(ARTIFACTS / "housekeeping-deleted.png"))
    assert not store.query("SELECT 1 FROM studies WHERE study_uid=?", (study,))


def test_conflict_view_shows_both_and_keeps_one(served, browser, tmp_path):  # noqa: F811
    base, app = served
    store = app.server.extensions["radpress"]["store"]
    ds = make_dataset(rows=64, columns=64, bits_stored=12, modality="CR")
    first = write(ds, tmp_path / "first.dcm")
    ds.PatientName = "Corrected^Name"
    ds.PixelData = bytes(ds.PixelData[:2048]) + bytes(len(ds.PixelData) - 2048)  # the lower half black
    second = write(ds, tmp_path / "resent.dcm")
    assert [r.status for r in ingest(store, [first, second])] == ["stored", "conflict"]
    login(browser, base, ADMIN)
    assert browser.find_element(By.ID, "nav-conflicts").get_attribute("href").endswith("/conflicts")
    browser.get(f"{base}/study?uid={ds.StudyInstanceUID}")  # the study says it has one, and links to its conflicts
    note = wait(browser).until(EC.visibility_of_element_located((By.ID, "study-conflicts")))
    assert note.text.startswith("1 conflicting copy of instances in this study")
    _click(browser, note.find_element(By.TAG_NAME, "a"))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "conflicts-filter"), ds.StudyInstanceUID))
    table = wait(browser).until(EC.visibility_of_element_located((By.ID, "conflicts-table"))).text
    assert "resent.dcm" in table and "pixels differ: 3,072 of 4,096 values" in table and "PatientName" in table
    _click(browser, browser.find_element(By.XPATH, "//button[text()='Show both']"))
    wait(browser).until(EC.visibility_of_element_located((By.ID, "conflict-attributes")))
    wait(browser).until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) == 64
                                      for i in d.find_elements(By.CSS_SELECTOR, ".conflict-preview")))
    assert "Corrected^Name" in browser.find_element(By.ID, "conflict-attributes").text
    browser.save_screenshot(str(ARTIFACTS / "housekeeping-conflict.png"))
    _click(browser, browser.find_element(By.XPATH, "//button[text()='Keep this copy instead']"))
    assert "becomes this instance's original" in _dialog_text(browser, "keep")
    _click(browser, browser.find_element(By.ID, "keep-confirm"))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "conflict-resolved"), "Kept the conflicting copy"))
    wait(browser).until(EC.presence_of_element_located((By.ID, "conflicts-none")))
    assert store.artifact(ds.SOPInstanceUID, "original").checksum == sha256_file(second)
    browser.save_screenshot(str(ARTIFACTS / "housekeeping-conflict-kept.png"))


def test_users_change_role_remove_after_confirming_and_own_password(served, browser):  # noqa: F811
    base, app = served
    users = Users(app.server.extensions["radpress"]["store"])
    users.add("rad", "rad-password", "radiologist")
    login(browser, base, ADMIN)
    browser.get(f"{base}/users")
    wait(browser).until(EC.presence_of_element_located((By.ID, "users-table")))
    role = browser.find_element(By.CSS_SELECTOR, "select[id*='\"name\":\"admin\"']")
    _click(browser, role)
    role.find_element(By.CSS_SELECTOR, "option[value=radiologist]").click()  # the only administrator: refused
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "users-error"), "last administrator"))
    rad = browser.find_element(By.CSS_SELECTOR, "select[id*='\"name\":\"rad\"']")
    rad.find_element(By.CSS_SELECTOR, "option[value=admin]").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "role-changed"), "rad is now admin"))
    assert users.get("rad").role == "admin" and users.get(ADMIN[0]).role == "admin"
    _click(browser, browser.find_element(By.XPATH, "//button[text()='Remove…']"))
    assert "Remove rad?" in _dialog_text(browser, "remove-user")
    browser.save_screenshot(str(ARTIFACTS / "housekeeping-users-remove.png"))
    _click(browser, browser.find_element(By.ID, "remove-user-confirm"))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "user-removed"), "Removed rad"))
    assert users.get("rad") is None
    for old, outcome in (("wrong-password", "own-password-error"), (ADMIN[1], "own-password-changed")):
        for field, value in (("old", old), ("new", "a-new-password"), ("again", "a-new-password")):
            browser.find_element(By.ID, f"own-password-{field}").send_keys(value)
        _click(browser, browser.find_element(By.ID, "own-password-change"))
        wait(browser).until(EC.presence_of_element_located((By.ID, outcome)))
        wait(browser, 10).until(lambda d: all(d.find_element(By.ID, f"own-password-{f}").get_attribute("value") == ""
                                              for f in ("old", "new", "again")))
    assert users.authenticate(ADMIN[0], "a-new-password") is not None
    browser.save_screenshot(str(ARTIFACTS / "housekeeping-users.png"))
