"""The Jobs page in headless Chromium with REDIS_URL set (a real redis-server) and no Celery worker: it says so
plainly, above the table, which lists a saved policy's comparison as a job about all studies."""

import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from core.archive import save_policy
from tests.conftest import ADMIN
from tests.test_browser import ARTIFACTS, browser, login, wait  # noqa: F401  (browser is a fixture)
from tests.test_job_engine import redis_url  # noqa: F401  (fixture: a real redis-server)


def test_the_jobs_page_says_no_worker_runs(live_app, browser, redis_url, monkeypatch):  # noqa: F811
    monkeypatch.setenv("REDIS_URL", redis_url)
    base, app = live_app(demo=False, run_jobs=False)  # nothing runs the job: it waits, as with no worker
    store, jobs = (app.server.extensions["radpress"][k] for k in ("store", "jobs"))
    job = save_policy(store, jobs, store.policy(), ADMIN[0])
    with store.connect() as db:
        db.execute("UPDATE jobs SET created=? WHERE id=?", (time.time() - 125, job))  # saved two minutes ago

    login(browser, base, ADMIN)
    browser.get(f"{base}/jobs")
    alert = wait(browser).until(EC.visibility_of_element_located((By.ID, "jobs-no-worker")))
    assert alert.text.startswith("No job worker is running: start one with make worker. 1 job waiting, the oldest for 2 min")
    assert alert.find_element(By.TAG_NAME, "code").text == "make worker"
    row = wait(browser).until(EC.visibility_of_element_located((By.ID, f"job-row-{job}")))
    assert "All studies (policy saved)" in row.text and "queued" in row.text
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "jobworker-no-worker.png"))
