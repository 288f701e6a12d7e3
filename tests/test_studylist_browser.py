"""The Studies list over 10,000 indexed studies in headless Chromium: search fields, paging, sorting, roles, the Viewer menu."""

import re

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from core.bench import index_studies
from core.users import Users
from tests.conftest import ADMIN
from tests.test_browser import ARTIFACTS, RAD, browser, login, wait  # noqa: F401  (browser is a fixture)

COUNT = 10_000
# what core.bench.index_studies writes for study n
NAMES = {n: f"Name{n % 97}^Given{n}" for n in range(COUNT)}
MODALITIES = {n: ("CT", "MR", "CR")[n % 3] for n in range(COUNT)}
DATES = {n: f"2024{1 + n % 12:02d}{1 + n % 28:02d}" for n in range(COUNT)}


def _count(driver) -> str:
    return driver.find_element(By.ID, "studies-count").text


def _column(driver, column: str) -> list[str]:
    """A column's cells, read in one go (the list refreshes every few seconds, so elements found earlier go stale)."""
    return driver.execute_script(
        f"return [...document.querySelectorAll(\"#studies-table td[data-dash-column='{column}']\")].map(td => td.innerText.trim());")


def _search(driver, element_id: str, text: str) -> None:
    box = driver.find_element(By.ID, element_id)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    if text:
        box.send_keys(text)


def _click(driver, selector: str) -> None:
    """Click a button of the table (the pager sits below the fold; the list re-renders every few seconds)."""
    driver.execute_script("document.querySelector(arguments[0]).click();", selector)


def _counted(n: int, pages: int) -> str:
    return f"{n} {'study' if n == 1 else 'studies'}" + (f" · page 1 of {pages}" if pages > 1 else "")


def test_ten_thousand_studies_search_page_sort_and_roles(live_app, browser):
    base, app = live_app(demo=False)
    store = app.server.extensions["radpress"]["store"]
    index_studies(store, COUNT)
    Users(store).add(*RAD, "radiologist")
    Users(store).add("other-rad", "other-rad-password", "radiologist")
    restricted = range(0, COUNT, 4)  # one study in four is for another radiologist only
    with store.connect() as db:
        db.executemany("INSERT INTO study_readers (study_uid, user) VALUES (?, 'other-rad')", [(f"2.25.{n}",) for n in restricted])
    login(browser, base, ADMIN)

    # first render: every study counted, newest first, one page of 25
    wait(browser).until(lambda d: _count(d) == _counted(COUNT, 400))
    newest = max(DATES.values())
    assert len(_column(browser, "date")) == 25 and set(_column(browser, "date")) == {f"{newest[:4]}-{newest[4:6]}-{newest[6:]}"}
    # only indexed columns offer a sort button
    assert browser.find_elements(By.CSS_SELECTOR, "th[data-dash-column='patient'] .column-header--sort")[0].is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, "th[data-dash-column='series'] .column-header--sort")[0].is_displayed()

    # a name as the list writes it ("Family, Given" prefix, any case)
    _search(browser, "studies-name", "name17, given9")
    expected = sorted(n for n, name in NAMES.items() if name.lower().startswith("name17^given9"))
    assert 1 < len(expected) <= 25
    wait(browser, 40).until(lambda d: _count(d) == _counted(len(expected), 1))
    assert sorted(_column(browser, "patient")) == sorted(f"Name17, Given{n}" for n in expected)
    browser.save_screenshot(str(ARTIFACTS / "studylist-search.png"))
    _search(browser, "studies-name", "")

    # patient ID exactly, accession with a wildcard
    _search(browser, "studies-patient-id", "P4242")
    wait(browser, 40).until(lambda d: _column(d, "accession") == ["A4242"])  # the search before also had one match
    assert _count(browser) == "1 study" and _column(browser, "modalities") == [MODALITIES[4242]]
    _search(browser, "studies-patient-id", "")
    _search(browser, "studies-accession", "A99?")
    wait(browser, 40).until(lambda d: sorted(_column(d, "accession")) == [f"A99{k}" for k in range(10)])
    assert _count(browser) == "10 studies"
    _search(browser, "studies-accession", "")

    # modality and a date range
    browser.find_element(By.ID, "studies-modality").click()
    wait(browser, 40).until(EC.element_to_be_clickable((By.XPATH, "//*[@role='option' and normalize-space(.)='MR']"))).click()
    browser.find_element(By.TAG_NAME, "h2").click()
    expected_mr = sum(1 for m in MODALITIES.values() if m == "MR")
    wait(browser, 40).until(lambda d: _count(d).startswith(f"{expected_mr} studies"))
    assert set(_column(browser, "modalities")) == {"MR"}
    for end, text in (("start", "2024-05-01"), ("end", "2024-06-30")):
        browser.find_element(By.CSS_SELECTOR, f"input.dash-datepicker-{end}-date").send_keys(text, Keys.ENTER)
    expected_mr = sum(1 for n, m in MODALITIES.items() if m == "MR" and "20240501" <= DATES[n] <= "20240630")
    assert expected_mr
    wait(browser, 40).until(lambda d: _count(d).startswith(f"{expected_mr} studies"))
    assert {d[:7] for d in _column(browser, "date")} <= {"2024-05", "2024-06"}

    # paging and sorting are done by the server: page 2, then by patient name A→Z from the first page
    _click(browser, "#studies-table button.next-page")
    wait(browser, 40).until(lambda d: "page 2 of" in _count(d))
    _click(browser, "th[data-dash-column='patient'] .column-header--sort")
    wait(browser, 40).until(lambda d: "page 1 of" in _count(d))
    mr = sorted((NAMES[n].lower(), n) for n in range(COUNT) if MODALITIES[n] == "MR" and "20240501" <= DATES[n] <= "20240630")[:25]
    wait(browser, 40).until(lambda d: _column(d, "patient_id") == [f"P{n}" for _name, n in mr])
    browser.save_screenshot(str(ARTIFACTS / "studylist-sorted.png"))

    # a radiologist is counted only the studies authorize() lets them open
    browser.get(f"{base}/logout")
    login(browser, base, RAD)
    wait(browser).until(lambda d: _count(d) == _counted(COUNT - len(restricted), 300))
    _search(browser, "studies-patient-id", "P4244")  # restricted to the other radiologist
    wait(browser, 40).until(lambda d: _count(d) == "0 studies")
    assert _column(browser, "patient") == []

    # the Lab's study picker offers the newest studies and finds any other by name, never listing all 10,000
    browser.get(f"{base}/lab")
    wait(browser, 40).until(EC.element_to_be_clickable((By.ID, "lab-run")))
    browser.find_element(By.CSS_SELECTOR, "#lab-study").click()
    search = wait(browser, 40).until(EC.element_to_be_clickable((By.XPATH, "//input[@placeholder='Search']")))
    search.send_keys("name5, given55")
    expected = sorted(f"Name5, Given{n}" for n, name in NAMES.items()
                      if name.lower().startswith("name5^given55") and n not in restricted)
    wait(browser, 40).until(lambda d: sorted(o.text.split(" — ")[0] for o in d.find_elements(By.XPATH, "//*[@role='option']")) == expected)
    browser.save_screenshot(str(ARTIFACTS / "studylist-lab-picker.png"))
    search.send_keys(Keys.ESCAPE)

    # the Viewer is in the top menu; opened without an image it says where to choose one
    browser.find_element(By.ID, "nav-viewer").click()
    wait(browser, 40).until(EC.text_to_be_present_in_element((By.ID, "viewer-choose"), "press Zoom on one of its images"))
    assert re.search(r"/viewer$", browser.current_url)
