"""The Studies list and the Users form in headless Chromium, as a clinic administrator reads them."""

import re
import time

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from tests.conftest import ADMIN
from tests.synthetic import make_dataset, write
from tests.test_browser import ARTIFACTS, browser, login, wait  # noqa: F401  (browser is a fixture)


def _cells(driver, text: str) -> dict[str, str]:
    """The Studies table's row holding *text*, as column id -> cell text."""
    row = driver.find_element(By.XPATH, f"//div[@id='studies-table']//tr[td[contains(., '{text}')]]")
    return {td.get_attribute("data-dash-column"): td.text for td in row.find_elements(By.TAG_NAME, "td")}


@pytest.fixture
def clinic(live_app, tmp_path):
    """An app with uploaded studies: Jane Doe's CR study (two series), one whose patient has no name, a tiny one."""
    base, app = live_app(demo=False)
    study = "1.2.826.0.1.3680043.8.498.7001"
    files = []
    for n, series in enumerate(("1.2.826.0.1.3680043.8.498.7002", "1.2.826.0.1.3680043.8.498.7003")):
        ds = make_dataset(rows=64, columns=72, bits_stored=12, modality="CR", study_uid=study, series_uid=series, seed=n)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane^Quinn", "PID-7", "19800214", "F"
        ds.StudyDate, ds.AccessionNumber, ds.SeriesNumber = "20040826", "ACC-42", n + 1
        files.append(write(ds, tmp_path / f"jane{n}.dcm"))
    nameless = make_dataset(rows=40, columns=30, bits_stored=12, modality="MR", seed=5)
    nameless.PatientName, nameless.PatientID, nameless.PatientSex = "", "PID-0", ""
    files.append(write(nameless, tmp_path / "nameless.dcm"))
    tiny = make_dataset(rows=8, columns=8, bits_allocated=8, bits_stored=8, modality="CT", seed=6)  # copies outweigh 64 bytes
    tiny.PatientName = "Tiny^Tim"
    files.append(write(tiny, tmp_path / "tiny.dcm"))
    http = requests.Session()
    http.auth = ADMIN
    answer = http.post(f"{base}/api/upload", files=[("files", (f.name, f.read_bytes())) for f in files])
    assert answer.ok, answer.text
    jobs = app.server.extensions["radpress"]["jobs"]
    deadline = time.time() + 120
    while any(jobs.get(j)["state"] not in ("done", "failed") for j in answer.json()["jobs"]):
        assert time.time() < deadline, "the ingest jobs did not finish"
        time.sleep(0.2)
    return base, app, study


def test_studies_list_formats_each_cell(clinic, browser):
    base, app, study = clinic
    login(browser, base, ADMIN)
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "studies-table"), "Doe, Jane Quinn"))
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "studies-table"), "(no name)"))
    jane = _cells(browser, "Doe, Jane Quinn")
    assert (jane["patient"], jane["patient_id"], jane["birth_date"], jane["sex"]) == ("Doe, Jane Quinn", "PID-7", "1980-02-14", "F")
    assert (jane["date"], jane["accession"], jane["modalities"]) == ("2004-08-26", "ACC-42", "CR")
    assert (jane["series"], jane["instances"]) == ("2", "2")
    store = app.server.extensions["radpress"]["store"]
    sizes = {}
    for a in store.artifacts(study_uid=study):
        sizes[a.variant] = sizes.get(a.variant, 0) + a.bytes
    assert jane["originals"].endswith(" KB") and jane["stored"].endswith(" KB")
    assert float(jane["originals"].split()[0]) == pytest.approx(sizes["original"] / 1024, abs=0.05)
    assert float(jane["stored"].split()[0]) == pytest.approx(sum(sizes.values()) / 1024, abs=0.05)
    for variant in ("lossless", "lossy"):
        if variant not in sizes:
            continue
        sign, percent, word = re.search(rf"{variant} ([−+])(\d+) % (smaller|larger)", jane["saving"]).groups()
        assert (sign, word) == (("+", "larger") if sizes[variant] > sizes["original"] else ("−", "smaller"))
        assert int(percent) == round(abs(100 * (sizes[variant] / sizes["original"] - 1)))
    assert "−-" not in jane["saving"] and "−+" not in jane["saving"]
    nameless = _cells(browser, "(no name)")
    assert (nameless["patient"], nameless["sex"], nameless["patient_id"]) == ("(no name)", "", "PID-0")
    assert "()" not in browser.find_element(By.ID, "studies-table").text
    assert re.fullmatch(r"lossless \+\d+ % larger, lossy \+\d+ % larger", _cells(browser, "Tiny, Tim")["saving"])
    browser.save_screenshot(str(ARTIFACTS / "studies-list.png"))


def test_users_form_clears_the_password_after_add(live_app, browser):
    base, _app = live_app(demo=False)
    login(browser, base, ADMIN)
    browser.get(f"{base}/users")
    wait(browser).until(EC.presence_of_element_located((By.ID, "new-user-add")))
    browser.find_element(By.ID, "new-user-name").send_keys("reader2")
    password = browser.find_element(By.ID, "new-user-password")
    password.send_keys("a-long-password")
    browser.find_element(By.ID, "new-user-add").click()
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "users-result"), "Added reader2"))
    wait(browser, 10).until(lambda d: d.find_element(By.ID, "new-user-password").get_attribute("value") == "")
    password.send_keys("short")  # refused, and cleared all the same
    browser.find_element(By.ID, "new-user-add").click()
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#users-result .alert-danger")))
    wait(browser, 10).until(lambda d: d.find_element(By.ID, "new-user-password").get_attribute("value") == "")
    browser.save_screenshot(str(ARTIFACTS / "users-add-cleared.png"))
