"""The Policy page in headless Chromium: ratios checked as they are typed, nothing saved while one is wrong, the CAR
warning before saving, a strategy per modality saved with the projection and the audit log following."""

import json

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from core.ingest import ingest
from tests.conftest import ADMIN
from tests.synthetic import make_dataset, write
from tests.test_browser import ARTIFACTS, browser, login, wait  # noqa: F401  (browser is a fixture)


def _field(driver, kind: str, **key):
    """A pattern-matching component by its id (Dash writes the id as JSON with sorted keys)."""
    return driver.find_element(By.XPATH, f"//*[@id='{json.dumps({**key, 'type': kind}, separators=(',', ':'), sort_keys=True)}']")


def _type(driver, element, text: str) -> None:
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.BACKSPACE)
    element.send_keys(text)


def _click(driver, element_id: str) -> None:
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();",
                          driver.find_element(By.ID, element_id))


@pytest.fixture
def clinic(live_app, tmp_path):
    """A CT and a CR study, indexed; no copies made yet."""
    base, app = live_app(demo=False)
    store = app.server.extensions["radpress"]["store"]
    files = [write(make_dataset(rows=96, columns=80, bits_stored=12, modality=m, seed=n), tmp_path / f"{m}.dcm")
             for n, m in enumerate(("CT", "CR"))]
    list(ingest(store, files))
    return base, store


def test_bad_ratio_refused_before_saving_then_a_modality_strategy_saved(clinic, browser):
    base, store = clinic
    login(browser, base, ADMIN)
    browser.get(f"{base}/policy")
    wait(browser).until(EC.presence_of_element_located((By.ID, "policy-projection")))
    projection = browser.find_element(By.ID, "policy-projection").text
    assert "under this policy: 2 on strategy 1" in projection, projection

    ct = _field(browser, "policy-ratio", key="CT")
    _type(browser, ct, "500")
    wait(browser).until(lambda d: "is-invalid" in ct.get_attribute("class"))
    reason = _field(browser, "policy-ratio-msg", key="CT")
    wait(browser).until(lambda d: "out of range" in reason.text)
    assert reason.text == "The CT ratio 500:1 is out of range. Choose between 2:1 and 200:1."
    browser.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'});", ct)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "policy-ratio-500-refused.png"))
    _click(browser, "policy-save")
    refused = wait(browser).until(EC.visibility_of_element_located((By.ID, "policy-not-saved")))
    assert "Not saved — nothing was changed." in refused.text and "500:1 is out of range" in refused.text
    assert store.policy().ratios["CT"] == 8  # the stored policy is untouched

    _type(browser, ct, "20")
    warning = _field(browser, "policy-ratio-warn", key="CT")
    wait(browser).until(lambda d: "upper bound of 15:1" in warning.text)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'});", ct)
    assert "is-invalid" not in ct.get_attribute("class") and "capped at 15:1" in warning.text
    browser.save_screenshot(str(ARTIFACTS / "policy-car-warning.png"))
    _type(browser, ct, "8")
    wait(browser).until(lambda d: warning.text == "")
    banner = browser.find_element(By.ID, "policy-banner")
    _type(browser, banner, "LOSSY {nope}")
    wait(browser).until(lambda d: "must show the ratio" in browser.find_element(By.ID, "policy-banner-msg").text)
    _type(browser, banner, "LOSSY {ratio}:1 {nope}")
    wait(browser).until(lambda d: "field {nope} is not allowed" in browser.find_element(By.ID, "policy-banner-msg").text)
    _type(browser, banner, "LOSSY {ratio}:1 — not for primary diagnosis")
    wait(browser).until(lambda d: "is-invalid" not in banner.get_attribute("class"))

    Select(_field(browser, "policy-modality-strategy", modality="CR")).select_by_value("4")
    _type(browser, browser.find_element(By.ID, "policy-default-ratio"), "20")  # US and NM follow it: above their bounds
    us = _field(browser, "policy-ratio", key="US")
    wait(browser).until(lambda d: us.get_attribute("placeholder") == "empty: as the default (20:1, capped at 12:1 by CAR)")
    _click(browser, "policy-save")
    wait(browser).until(EC.presence_of_element_located((By.ID, "policy-saved")))
    result = browser.find_element(By.ID, "policy-result").text
    assert "Saved. Working out which studies' copies change" in result
    assert "upper bound of 12:1 for US" in result and "11:1 for NM" in result
    finished = wait(browser).until(EC.visibility_of_element_located((By.ID, "policy-job-finished")))  # the comparison's job
    assert "done. Policy compared: 1 study gets new copies" in finished.text
    assert store.policy().strategies == {"CR": 4} and store.policy().default_ratio == 20
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "policy-projection"), "1 on strategy 1, 1 on strategy 4"))
    assert browser.find_element(By.ID, "policy-projection").text != projection
    assert browser.find_element(By.CSS_SELECTOR, "#strategy-card-4 .modality-default").text == "CR"
    wait(browser).until(EC.text_to_be_present_in_element((By.ID, "audit-log"), "strategies: {} → {'CR': 4}"))
    browser.save_screenshot(str(ARTIFACTS / "policy-modality-saved.png"))  # the result under the Save button
    browser.execute_script("arguments[0].scrollIntoView({block: 'start', behavior: 'instant'});", browser.find_element(By.ID, "policy-projection"))
    browser.save_screenshot(str(ARTIFACTS / "policy-modality-projection.png"))  # the projection and cards above


def test_the_form_is_saved_all_or_nothing(live_app):
    """The save callback's parsing, called directly: every reason listed, nothing built while one field is wrong."""
    live_app(demo=False)  # pages register with the app
    from core.policy import Policy
    from pages.policy import DEFAULT, FOLLOW, _form_policy

    old = Policy(lossy_codecs={"MR": "htj2k", "CT": "jxl"})
    form = dict(strategy="2", lossy=True, lossless="ohif", banner=old.lossy_banner, strategies={"CR": "4", "CT": FOLLOW},
                lossless_codecs={"MR": "smallest", "CT": FOLLOW})
    policy, errors = _form_policy(old, ratios={DEFAULT: "10", "CT": "500", "MR": "abc", "US": ""}, **form)
    assert policy is None and errors == ["The CT ratio 500:1 is out of range. Choose between 2:1 and 200:1.",
                                         "The MR ratio 'abc' is not a number. For example 10 (meaning 10:1)."]
    assert _form_policy(old, ratios={DEFAULT: "", "CT": "8"}, **form)[1][0].startswith("The default ratio is needed")
    policy, errors = _form_policy(old, ratios={DEFAULT: "12", "CT": "8", "MR": "", "US": " 9,5 "}, **form)
    assert errors == [] and (policy.strategy, policy.default_ratio, policy.ratios) == (2, 12, {"CT": 8, "US": 9.5})
    assert policy.strategies == {"CR": 4} and policy.lossless_codecs == {"MR": "smallest"}
    assert policy.lossy_codecs == {"CT": "jxl"}  # MR's ratio was emptied: the codec chosen with it goes too
    assert _form_policy(old, ratios={DEFAULT: "10"}, **{**form, "banner": "no ratio"})[1] == [
        "The lossy banner must show the ratio. Keep {ratio} in the wording."]


def test_the_page_says_when_a_saved_policy_was_never_compared(live_app):
    """A saved policy's comparison cancelled before it ran: the page warns until a save queues another."""
    from dataclasses import replace

    from flask import g

    from core.archive import save_policy
    from core.users import User

    _, app = live_app(demo=False, run_jobs=False)
    from pages.policy import layout  # (pages register with an app)

    store, jobs = (app.server.extensions["radpress"][k] for k in ("store", "jobs"))

    def page() -> str:
        with app.server.test_request_context("/policy"):
            g.user = User("admin", "admin")
            return str(layout())

    job = save_policy(store, jobs, replace(store.policy(), strategy=2), "admin")
    assert "policy-stalled" not in page()  # its job is queued
    jobs.cancel(job)
    assert "policy-stalled" in page() and "Save the policy again to compare" in page()
    save_policy(store, jobs, store.policy(), "admin")
    assert "policy-stalled" not in page()
