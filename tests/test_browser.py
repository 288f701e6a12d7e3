"""End-to-end tests in headless Chromium (Debian's chromium + chromium-driver) against the app on localhost."""

import math
import re
import threading
import time
import zipfile
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from app import create_app
from core.samples import sample, write_series
from core.users import Users
from tests.checkers import require

ARTIFACTS = Path(__file__).parent / "artifacts"
ADMIN = ("admin", "admin-password")
RAD = ("rad", "radiologist-pw")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import os

    data = tmp_path_factory.mktemp("browser") / "data"
    os.environ["RADPRESS_ADMIN_USER"], os.environ["RADPRESS_ADMIN_PASSWORD"] = ADMIN
    try:
        app = create_app(data, demo=True)
    finally:
        del os.environ["RADPRESS_ADMIN_USER"], os.environ["RADPRESS_ADMIN_PASSWORD"]
    Users(app.server.extensions["radpress"]["store"]).add(*RAD, "radiologist")
    httpd = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    app.server.extensions["radpress"]["jobs"].stop()


@pytest.fixture
def browser():
    options = Options()
    options.binary_location = require("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1600,1100"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(require("chromedriver")), options=options)
    yield driver
    # 4xx answers the tests provoke on purpose (rejected upload, forbidden role) are logged by
    # Chromium as network errors; anything else at SEVERE level is a real error.
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
              and not (e["source"] == "network" and re.search(r"status of 4\d\d", e["message"]))]
    driver.quit()
    assert not severe, f"browser console errors: {severe}"


def wait(driver, timeout=60):
    return WebDriverWait(driver, timeout)


def login(driver, base, user=None):
    driver.get(f"{base}/login")
    if user is None:
        driver.find_element(By.ID, "demo-login").click()
    else:
        driver.find_element(By.ID, "username").send_keys(user[0])
        driver.find_element(By.ID, "password").send_keys(user[1])
        driver.find_element(By.ID, "login-button").click()
    wait(driver).until(EC.text_to_be_present_in_element((By.ID, "whoami"), "(" ))


def choose_files(driver, input_id, paths):
    element = wait(driver).until(EC.presence_of_element_located((By.ID, input_id)))
    driver.execute_script("arguments[0].hidden = false;", element)
    element.send_keys("\n".join(str(p) for p in paths))


def test_login_upload_and_see_the_study(server, browser, tmp_path):
    login(browser, server, ADMIN)
    assert "Studies" in browser.page_source
    series = write_series("emri_small", 2, tmp_path / "s")
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in series:
            z.write(f, f"folder/{f.name}")
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    choose_files(browser, "upload-files", [sample("RG3_UNCR"), archive, bad])
    wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".upload-table .progress-bar.bg-success")) == 2)
    results = browser.find_element(By.CSS_SELECTOR, ".upload-table").text
    assert results.count("stored") == 3 and "rejected" in results and "not DICOM" in results
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "studies-table"), "CompressedSamples, RG3"))


def test_change_strategy_and_see_the_job_finish(server, browser):
    login(browser, server, ADMIN)
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "studies-table"), "Open"))
    link = browser.find_element(By.XPATH, "//a[text()='Open']")
    link.click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "study-strategy")))
    dropdown = browser.find_element(By.ID, "study-strategy")
    dropdown.click()
    browser.find_element(By.XPATH, "//*[contains(@class,'option') and contains(., '4. Original only')]").click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "strategy-job")))
    job = re.search(r"Job (\d+)", browser.find_element(By.ID, "strategy-job").text).group(1)
    browser.find_element(By.ID, "nav-jobs").click()
    wait(browser, 120).until(EC.presence_of_element_located((By.CSS_SELECTOR, f"#job-row-{job} .job-state-done")))


def _achieved(driver) -> float:
    text = driver.execute_script("return document.getElementById('lossy-banner-text').innerText;")  # re-rendered often: read at once
    return float(re.search(r"compressed ([\d.]+):1", text).group(1))


def instance_of(base, modality):
    http = requests.Session()
    http.auth = ADMIN
    study = next(s for s in http.get(f"{base}/api/studies").json() if s["modalities"] == modality)
    return http.get(f"{base}/api/studies/{study['study_uid']}").json()["instances"][0]["sop_uid"]


@pytest.mark.parametrize("modality", ["CT", "CR"])
def test_compare_shows_banner_and_metrics(server, browser, modality):
    login(browser, server, ADMIN)
    browser.get(f"{server}/compare?sop={instance_of(server, modality)}")
    wait(browser, 90).until(EC.presence_of_element_located((By.ID, "lossy-banner-text")))
    assert f"— {modality}" in browser.find_element(By.ID, "compare-sop").text
    first = browser.find_element(By.CSS_SELECTOR, "#card-lossy .metric-psnr").text
    ratio_input = browser.find_element(By.ID, "compare-ratio-box")
    ratio_input.send_keys(Keys.CONTROL, "a")
    ratio_input.send_keys("20", Keys.TAB)
    wait(browser, 90).until(lambda d: abs(_achieved(d) - 20) <= 2)
    banner = " ".join(browser.find_element(By.ID, "lossy-banner").text.split())
    assert banner.startswith("⚠ LOSSY — compressed") and "not for primary diagnosis" in banner and "ISO_15444_1" in banner
    wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, "#card-lossy .metric-psnr").text != first)
    lossless = browser.find_element(By.ID, "lossless-header").text
    assert "LOSSLESS" in lossless and "LOSSY" not in lossless
    assert browser.find_element(By.CSS_SELECTOR, "#card-lossless .metric-psnr").text == "∞ (identical)"
    assert browser.find_element(By.CSS_SELECTOR, "#card-lossless .metric-max-error").text == "0"
    browser.find_element(By.CSS_SELECTOR, "label[for=compare-diff]").click()
    wait(browser).until(lambda d: "difference" in d.find_element(By.CSS_SELECTOR, "#pane-lossy .gtitle").text)
    browser.find_element(By.CSS_SELECTOR, "label[for=compare-diff]").click()
    wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, "#pane-lossy .gtitle").text.startswith("LOSSY"))
    time.sleep(1)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"compare-{modality}.png"))


def test_policy_page_for_admin(server, browser):
    login(browser, server, ADMIN)
    browser.get(f"{server}/policy")
    wait(browser).until(EC.presence_of_element_located((By.ID, "strategy-card-5")))
    for number in (1, 2, 3, 4, 5):  # 5: the lossless master, its cost beside the others
        text = browser.find_element(By.ID, f"strategy-card-{number}").text
        assert re.search(r"[\d.]+ (KB|MB|GB) (measured|projected) \([\d.]+× the originals\)", text), text
    browser.find_element(By.ID, "policy-default-ratio").clear()
    browser.find_element(By.ID, "policy-default-ratio").send_keys("12")
    save = browser.find_element(By.ID, "policy-save")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", save)
    wait(browser).until(EC.presence_of_element_located((By.ID, "policy-saved")))
    browser.get(f"{server}/policy")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "audit-log"), "default_ratio: 10.0 → 12.0"))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "policy.png"))


def test_radiologist_cannot_open_policy(server, browser):
    login(browser, server, RAD)
    browser.get(f"{server}/policy")
    wait(browser).until(EC.presence_of_element_located((By.ID, "policy-forbidden")))
    assert not browser.find_elements(By.ID, "policy-save")


def test_demo_user_cannot_upload(server, browser):
    login(browser, server)
    wait(browser).until(EC.presence_of_element_located((By.ID, "upload-not-allowed")))
    assert not browser.find_elements(By.ID, "upload-widget")
    status = browser.execute_script(
        "const r = await fetch('/api/upload?name=x.dcm', {method: 'POST', body: 'x'}); return r.status;")
    assert status == 403


def test_quality_lab_page(server, browser):
    login(browser, server, ADMIN)
    http = requests.Session()
    http.auth = ADMIN
    study = next(s["study_uid"] for s in http.get(f"{server}/api/studies").json() if s["date"] == "20000101")  # emri_small
    browser.get(f"{server}/lab?uid={study}")
    wait(browser).until(EC.element_to_be_clickable((By.ID, "lab-run"))).click()
    wait(browser, 180).until(EC.presence_of_element_located((By.ID, "lab-recommended")))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#lab-recommended li")) == 3
    assert "current ratio" in browser.find_element(By.ID, "lab-current").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#lab-curves .scatterlayer .trace")) == 9
    assert "uncompressed" in browser.find_element(By.ID, "lab-latency-table").text
    # each bits-per-pixel axis is log scale and fits its points (the "current" label once stretched one to 10^bpp)
    axes, xs = browser.execute_script(
        "const gd = document.querySelector('#lab-curves .js-plotly-plot'); const l = gd._fullLayout;"
        "return [['xaxis', 'xaxis2', 'xaxis3'].map(a => [l[a].type, l[a].range]), gd.data.flatMap(t => t.x)];")
    low, high = math.log10(min(xs)), math.log10(max(xs))
    for kind, (start, end) in axes:
        assert kind == "log" and start < low and end > high and (end - start) - (high - low) < 0.4, (axes, low, high)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "lab.png"))


def test_viewer_pans_and_zooms_deepzoom_tiles(server, browser):
    login(browser, server, ADMIN)
    browser.get(f"{server}/viewer?sop={instance_of(server, 'CR')}")
    wait(browser, 60).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#osd-viewer .openseadragon-canvas canvas")))
    wait(browser, 60).until(lambda d: d.execute_script(
        "return performance.getEntriesByType('resource').some(e => e.name.includes('_files/'));"))
    ARTIFACTS.mkdir(exist_ok=True)
    time.sleep(1)
    browser.save_screenshot(str(ARTIFACTS / "viewer.png"))


def test_study_page_plays_a_cine(server, browser, tmp_path):
    """The Study page's video of a multi-frame instance plays in Chromium, as MP4 and over HLS: its current time advances."""
    from tests.synthetic import make_dataset, write

    ds = make_dataset(rows=63, columns=81, frames=40, modality="US")
    ds.FrameTime = 50
    http = requests.Session()
    http.auth = ADMIN
    with open(write(ds, tmp_path / "cine.dcm"), "rb") as fh:
        assert http.post(f"{server}/api/upload", files={"file": ("cine.dcm", fh)}).status_code == 200
    login(browser, server, ADMIN)
    browser.get(f"{server}/study?uid={ds.StudyInstanceUID}")
    video = wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "video.cine-video")))
    assert "LOSSY — not for primary diagnosis" in browser.find_element(By.CSS_SELECTOR, ".cine-player").text
    browser.execute_script("arguments[0].loop = true; arguments[0].play();", video)
    wait(browser, 60).until(lambda d: d.execute_script("return arguments[0].currentTime;", video) > 0.5)
    assert browser.execute_script("return arguments[0].videoWidth;", video) == 90
    form = browser.find_element(By.CSS_SELECTOR, "form[id^='cine-trim']")
    assert form.get_attribute("action").endswith(f"/cine/{ds.SOPInstanceUID}.mp4")
    # the same clip over HLS through the vendored hls.js (Media Source Extensions: a blob: source)
    browser.execute_script("arguments[0].pause();", video)
    browser.execute_script("arguments[0].click();", browser.find_element(By.CSS_SELECTOR, ".cine-hls-button"))
    wait(browser, 60).until(lambda d: d.execute_script(
        "const v = arguments[0]; return v.src.startsWith('blob:') && v.currentTime > 0.5 && !v.paused;", video))
    assert browser.execute_script("return performance.getEntriesByType('resource').some(e => e.name.includes('/segment/0.ts'));")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "cine.png"))
