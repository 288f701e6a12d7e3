"""The Jobs page in headless Chromium: the study's patient and description, duration and throughput, 50 jobs a page."""

import re
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from core.ingest import ingest
from tests.conftest import ADMIN
from tests.synthetic import make_dataset, write
from tests.test_browser import ARTIFACTS, browser, login, wait  # noqa: F401  (browser is a fixture)


def _rows(driver) -> list[dict]:
    """The table's rows as {id, patient, description, duration, speed, cancel, href}, read at once (the page re-renders every 1.5 s)."""
    return driver.execute_script("""
        const cell = (row, name) => { const e = row.getElementsByClassName(name)[0]; return e ? e.innerText : null; };
        return [...document.querySelectorAll('#jobs-table tbody tr')].map(row => ({id: row.id,
            patient: cell(row, 'job-patient'), description: cell(row, 'job-description'), duration: cell(row, 'job-duration'),
            speed: cell(row, 'job-speed'), cancel: row.querySelector('button') !== null,
            href: row.querySelector('.job-patient a') && row.querySelector('.job-patient a').getAttribute('href')}));""")


def _job(db, study: str, state: str, done: int, started: float, finished: float | None) -> int:
    """A job row as the runner leaves it (3 instances, 1 MB each)."""
    return db.execute("INSERT INTO jobs (kind, study_uid, state, total, done, failed, bytes, params, created, started, finished) "
                      "VALUES ('materialize', ?, ?, 3, ?, 0, ?, '{}', ?, ?, ?)",
                      (study, state, done, done * 1_000_000, started, started, finished)).lastrowid


def test_jobs_page_names_the_study_and_pages_by_50(live_app, browser, tmp_path):
    base, app = live_app(demo=False, run_jobs=False)  # the rows are the record; no runner changes them meanwhile
    store = app.server.extensions["radpress"]["store"]
    studies = {}
    for seed, (name, description) in enumerate((("Doe^Jane", "CHEST PA"), ("Smith^Bob", "KNEE LEFT"))):
        ds = make_dataset(rows=32, columns=24, bits_stored=12, modality="CR", seed=seed)
        ds.PatientName, ds.StudyDescription, ds.StudyDate = name, description, "20040826"
        [result] = ingest(store, [write(ds, tmp_path / f"{seed}.dcm")])
        studies[name] = result.study_uid
    with store.connect() as db:
        earlier = time.time() - 86400  # yesterday's runs: 3 instances in 1.5 s each
        history = [_job(db, studies["Doe^Jane"], "done", 3, earlier + 60 * n, earlier + 60 * n + 1.5) for n in range(56)]
        running = _job(db, studies["Smith^Bob"], "running", 2, time.time() - 4, None)

    login(browser, base, ADMIN)
    browser.get(f"{base}/jobs")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "jobs-page-label"), "Page 1 of 2 (57 jobs)"))
    rows = _rows(browser)
    assert [r["id"] for r in rows] == [f"job-row-{running}"] + [f"job-row-{n}" for n in history[::-1][:49]]
    bob = rows[0]
    assert (bob["patient"], bob["description"], bob["cancel"]) == ("Smith, Bob", "KNEE LEFT · 2004-08-26", True)
    assert bob["href"] == f"/study?uid={studies['Smith^Bob']}"  # the patient opens the study
    seconds = float(re.fullmatch(r"(\d+(?:\.\d)?) s", bob["duration"]).group(1))  # running: counted up to now
    assert 4 <= seconds < 600 and re.fullmatch(r"0\.\d inst/s, 0\.\d\d MB/s", bob["speed"])
    assert {(r["patient"], r["description"], r["duration"], r["speed"], r["cancel"]) for r in rows[1:]} == {
        ("Doe, Jane", "CHEST PA · 2004-08-26", "1.5 s", "2.0 inst/s, 2.0 MB/s", False)}
    assert browser.find_element(By.ID, "jobs-prev").get_attribute("disabled") is not None
    table = browser.execute_script("return document.getElementById('jobs-table').innerText")
    assert not any(uid in table for uid in studies.values())  # names, not UIDs
    browser.save_screenshot(str(ARTIFACTS / "jobs-page1.png"))

    browser.find_element(By.ID, "jobs-next").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "jobs-page-label"), "Page 2 of 2 (57 jobs)"))
    wait(browser).until(EC.presence_of_element_located((By.ID, f"job-row-{history[0]}")))
    assert [r["id"] for r in _rows(browser)] == [f"job-row-{n}" for n in history[::-1][49:]]
    assert browser.find_element(By.ID, "jobs-next").get_attribute("disabled") is not None
    browser.save_screenshot(str(ARTIFACTS / "jobs-page2.png"))
