"""The Jobs page in headless Chromium: the study's patient and description, duration and throughput, 50 jobs a page."""

import re
import time

import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from tests.conftest import ADMIN
from tests.synthetic import make_dataset, write
from tests.test_browser import ARTIFACTS, browser, login, wait  # noqa: F401  (browser is a fixture)


def _rows(driver) -> list[dict]:
    """The table's rows as {id, patient, description, duration, speed}, read at once (the page re-renders every 1.5 s)."""
    return driver.execute_script("""
        const cell = (row, name) => { const e = row.getElementsByClassName(name)[0]; return e ? e.innerText : null; };
        return [...document.querySelectorAll('#jobs-table tbody tr')].map(row => ({id: row.id,
            patient: cell(row, 'job-patient'), description: cell(row, 'job-description'),
            duration: cell(row, 'job-duration'), speed: cell(row, 'job-speed')}));""")


def test_jobs_page_names_the_study_and_pages_by_50(live_app, browser, tmp_path):
    base, app = live_app(demo=False)
    files = []
    for seed, (name, description) in enumerate((("Doe^Jane", "CHEST PA"), ("Smith^Bob", "KNEE LEFT"))):
        ds = make_dataset(rows=32, columns=24, bits_stored=12, modality="CR", seed=seed)
        ds.PatientName, ds.StudyDescription, ds.StudyDate = name, description, "20040826"
        files.append(write(ds, tmp_path / f"{seed}.dcm"))
    answer = requests.post(f"{base}/api/upload", files=[("files", (f.name, f.read_bytes())) for f in files], auth=ADMIN)
    assert answer.ok, answer.text
    jobs = app.server.extensions["radpress"]["jobs"]
    real = sorted(answer.json()["jobs"])
    deadline = time.time() + 120
    while any(jobs.get(j)["state"] not in ("done", "failed") for j in real):
        assert time.time() < deadline, "the ingest jobs did not finish"
        time.sleep(0.2)
    store = app.server.extensions["radpress"]["store"]
    jane = store.query("SELECT study_uid FROM studies WHERE description='CHEST PA'")[0]["study_uid"]
    by_name = {("Doe, Jane" if jobs.get(j)["study_uid"] == jane else "Smith, Bob"): j for j in real}
    with store.connect() as db:  # then a history of 55 runs on Jane's study (3 instances in 1.5 s each)
        for _ in range(55):
            db.execute("INSERT INTO jobs (kind, study_uid, state, total, done, failed, bytes, params, message, created, started, finished) "
                       "VALUES ('materialize', ?, 'done', 3, 3, 0, 3000000, '{}', 'history', ?, 10.0, 11.5)", (jane, time.time()))
    newest = real[1] + 55

    login(browser, base, ADMIN)
    browser.get(f"{base}/jobs")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "jobs-page-label"), "Page 1 of 2 (57 jobs)"))
    rows = _rows(browser)
    assert len(rows) == 50 and [r["id"] for r in rows] == [f"job-row-{n}" for n in range(newest, newest - 50, -1)]
    assert {(r["patient"], r["description"], r["duration"], r["speed"]) for r in rows} == {
        ("Doe, Jane", "CHEST PA · 2004-08-26", "1.5 s", "2.0 inst/s, 2.0 MB/s")}
    assert browser.find_element(By.ID, "jobs-prev").get_attribute("disabled") is not None
    assert jane not in browser.find_element(By.ID, "jobs-table").text  # names, not UIDs
    browser.save_screenshot(str(ARTIFACTS / "jobs-page1.png"))

    browser.find_element(By.ID, "jobs-next").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "jobs-page-label"), "Page 2 of 2 (57 jobs)"))
    wait(browser).until(EC.presence_of_element_located((By.ID, f"job-row-{real[0]}")))
    rows = _rows(browser)
    assert [r["id"] for r in rows[-2:]] == [f"job-row-{n}" for n in reversed(real)] and len(rows) == 7
    shown = {r["patient"]: r for r in rows[-2:]}
    assert shown.keys() == by_name.keys() and all(shown[name]["id"] == f"job-row-{j}" for name, j in by_name.items())
    assert shown["Smith, Bob"]["description"] == "KNEE LEFT · 2004-08-26" and shown["Doe, Jane"]["description"] == "CHEST PA · 2004-08-26"
    for row in shown.values():  # real runs: their own duration and throughput
        assert re.fullmatch(r"\d+\.\d s", row["duration"]) and re.fullmatch(r"\d+\.\d inst/s, \d+\.\d\d? MB/s", row["speed"])
    assert browser.find_element(By.ID, "jobs-next").get_attribute("disabled") is not None
    browser.save_screenshot(str(ARTIFACTS / "jobs-page2.png"))
