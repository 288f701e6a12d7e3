"""Compare in headless Chromium: the ratio and frame boxes, the progress bar, a codec that fails, the sticky banner."""

import time

import diskcache
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from tests.conftest import ADMIN
from tests.synthetic import KINDS, make_dataset, write
from tests.test_browser import ARTIFACTS, browser, login, wait  # noqa: F401  (browser is a fixture)

# every text the progress bar shows, in order, recorded in the page as it changes
RECORD_LABELS = """
window.__labels = [];
const bar = document.getElementById("compare-progress");
new MutationObserver(() => {
  const text = bar.textContent;
  if (window.__labels[window.__labels.length - 1] !== text) window.__labels.push(text);
}).observe(bar, {subtree: true, childList: true, characterData: true});
"""


def _upload(base, *datasets, tmp_path):
    """Store originals (Compare reads nothing else; the app runs no copy jobs, which would compete for the CPU)."""
    http = requests.Session()
    http.auth = ADMIN
    files = [write(ds, tmp_path / f"{n}.dcm") for n, ds in enumerate(datasets)]
    answer = http.post(f"{base}/api/upload", files=[("files", (f.name, f.read_bytes())) for f in files])
    assert answer.ok, answer.text


def _slider(driver, element_id: str) -> dict:
    thumb = driver.find_element(By.CSS_SELECTOR, f"#{element_id} [role=slider]")
    return {k: thumb.get_attribute(f"aria-value{k}") for k in ("now", "min", "max")}


def _type(driver, element_id: str, text: str, key=Keys.ENTER) -> None:
    box = driver.find_element(By.ID, element_id)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(text, key)


def _label(driver) -> str:
    return driver.find_element(By.ID, "compare-progress").text


def _labels_since(driver, start: int) -> list[str]:
    return driver.execute_script("return window.__labels;")[start:]


def _encode_done(driver, start: int) -> list[str]:
    """Wait for the encoding asked for after label *start* to be drawn; the labels it went through."""
    wait(driver, 60).until(lambda d: "done" in _labels_since(d, start) or "failed" in _labels_since(d, start))
    return _labels_since(driver, start)


def test_compare_boxes_progress_codec_error_and_sticky_banner(live_app, browser, tmp_path):
    base, app = live_app(demo=False, run_jobs=False)
    ds = make_dataset(**{**KINDS["enhanced_ct"], "rows": 96, "columns": 90})  # signed, 3 frames: JPEG XL cannot store it
    other = make_dataset(**KINDS["u8_odd"])  # another study: not listed beside this one's images
    other.PatientName = "Other^Patient"
    _upload(base, ds, other, tmp_path=tmp_path)
    sop = str(ds.SOPInstanceUID)
    cache = diskcache.Cache(str(app.server.extensions["radpress"]["store"].root / "cache" / "compare"))
    login(browser, base, ADMIN)
    browser.get(f"{base}/compare?sop={sop}")
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "compare-progress"), "done"))
    browser.find_element(By.ID, "compare-sop").click()
    options = [o.text for o in wait(browser, 30).until(EC.presence_of_all_elements_located((By.XPATH, "//*[@role='option']")))]
    assert options == ["Synthetic, Kind — CT #1"], options
    browser.find_element(By.TAG_NAME, "h2").click()
    browser.execute_script(RECORD_LABELS)

    # the ratio box acts on Enter, the slider follows; the bar says "encoding…" until the new picture is drawn
    start = len(_labels_since(browser, 0))
    _type(browser, "compare-ratio-box", "25")
    wait(browser, 30).until(lambda d: _slider(d, "compare-ratio")["now"] == "25")
    labels = _encode_done(browser, start)
    assert labels[0] == "encoding…" and labels[-1] == "done" and labels.count("done") == 1, labels
    assert any(k.startswith(f"{sop}:0:") and k.endswith(":25") for k in cache)

    # frames are numbered 1..3 on the slider, its marks and its box; Tab applies frame 3, the file's third frame (index 2)
    assert _slider(browser, "compare-frame") == {"now": "1", "min": "1", "max": "3"}
    assert browser.find_element(By.ID, "compare-frame-box").get_attribute("value") == "1"
    assert [m.text for m in browser.find_elements(By.CSS_SELECTOR, "#compare-frame .dash-slider-mark")] == ["1", "3"]
    start = len(_labels_since(browser, 0))
    _type(browser, "compare-frame-box", "3", Keys.TAB)
    wait(browser, 30).until(lambda d: _slider(d, "compare-frame")["now"] == "3")
    assert _encode_done(browser, start)[-1] == "done"
    assert any(k.startswith(f"{sop}:2:") for k in cache) and not any(k.startswith(f"{sop}:3:") for k in cache)

    # a ratio outside 2–200 or a frame the image lacks is refused with a message; nothing is encoded
    start = len(_labels_since(browser, 0))
    for box, value, words in (("compare-ratio-box", "500", "Choose between 2:1 and 200:1"), ("compare-ratio-box", "1", "out of range"),
                              ("compare-frame-box", "4", "Frames are numbered 1 to 3"), ("compare-frame-box", "0", "numbered 1 to 3")):
        _type(browser, box, value)
        message = box.replace("-box", "-message")
        wait(browser, 30).until(EC.text_to_be_present_in_element((By.ID, message), words))
        assert "is-invalid" in browser.find_element(By.ID, box).get_attribute("class")
    time.sleep(0.5)
    assert (_slider(browser, "compare-ratio")["now"], _slider(browser, "compare-frame")["now"]) == ("25", "3")
    assert _labels_since(browser, start) == []
    browser.save_screenshot(str(ARTIFACTS / "compare-refused.png"))
    _type(browser, "compare-ratio-box", "25")  # a good value clears the message
    wait(browser, 30).until(lambda d: d.find_element(By.ID, "compare-ratio-message").text == "")

    # the lossy banner stays on screen while the lossy pane and its metrics scroll by
    browser.set_window_size(1600, 800)
    browser.execute_script("window.scrollTo(0, 650);")
    time.sleep(0.5)
    banner = browser.execute_script("const r = document.getElementById('lossy-banner').getBoundingClientRect(); return [r.top, r.bottom];")
    metrics = browser.execute_script("return document.getElementById('metrics-lossy').getBoundingClientRect().top;")
    assert browser.execute_script("return window.scrollY;") > 300
    assert 0 <= banner[0] <= 2 and banner[1] < metrics, (banner, metrics)
    assert "LOSSY — compressed" in browser.find_element(By.ID, "lossy-banner").text
    browser.save_screenshot(str(ARTIFACTS / "compare-sticky-banner.png"))
    browser.execute_script("window.scrollTo(0, 0);")
    browser.set_window_size(1600, 1100)

    # a codec that cannot take the image: its message, nothing stale (panes, banner, metrics), the bar says "failed"
    start = len(_labels_since(browser, 0))
    _pick_codec(browser, "JPEG XL")
    wait(browser, 60).until(EC.text_to_be_present_in_element((By.ID, "compare-error"), "JPEG XL cannot store signed pixel data"))
    wait(browser, 30).until(lambda d: _label(d) == "failed")
    assert _labels_since(browser, start)[0] == "encoding…" and "done" not in _labels_since(browser, start)
    assert "no lossy image" in browser.find_element(By.ID, "lossy-banner").text
    assert "compressed" not in browser.find_element(By.ID, "lossy-banner").text
    assert browser.find_element(By.ID, "metrics-lossy").text == "" and browser.find_element(By.ID, "metrics-lossless").text == ""
    for pane in ("pane-lossy", "pane-lossless"):
        wait(browser, 30).until(EC.text_to_be_present_in_element((By.ID, pane), "no image — see the message above"))
    browser.save_screenshot(str(ARTIFACTS / "compare-codec-error.png"))

    _pick_codec(browser, "HTJ2K")  # a codec that can: the error goes, the picture and its banner come back
    wait(browser, 60).until(lambda d: _label(d) == "done")
    assert browser.find_element(By.ID, "compare-error").text == ""
    assert "LOSSY — compressed" in browser.find_element(By.ID, "lossy-banner").text
    assert browser.find_elements(By.CSS_SELECTOR, "#metrics-lossy table")


def _pick_codec(driver, label: str) -> None:
    driver.execute_script("window.scrollTo(0, 0);")  # scrolled down, the sticky banner covers the codec menu
    driver.find_element(By.CSS_SELECTOR, "#compare-codec").click()
    option = wait(driver, 30).until(EC.element_to_be_clickable(
        (By.XPATH, f"//*[@role='option' and contains(normalize-space(.), '{label}')]")))
    option.click()
