"""The Study page of a long series in headless Chromium: the first page of cards with their thumbnails, then the
next page drawn by the server when the pager is clicked; lossy originals marked on their cards.  A study of many
series: a group of series at a time, the others behind the series pager."""

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from core.studyview import FIRST_CARDS, MIN_PER_PAGE, SERIES_PER_PAGE
from tests.conftest import ADMIN
from tests.core.test_studyview import make_study
from tests.test_browser import ARTIFACTS, browser, login, wait  # noqa: F401 - browser is a fixture

SLICES = 60

_LOADED = "return Array.from(document.querySelectorAll('img.thumb')).map(i => i.complete && i.naturalWidth > 0 ? i.src : '')"


def _turn(driver, pager, number: int, shown: str, text: str) -> None:
    """Click page *number* of *pager* (scrolled into view) and wait until the element *shown* (CSS) says *text*."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center', behavior: 'instant'});", pager)
    pager.find_element(By.XPATH, f".//a[text()='{number}']").click()
    wait(driver).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, shown), text))


def _cards_loaded(driver, count: int):
    """The page's thumbnails once exactly *count* are in place and all have loaded, else False."""
    sources = driver.execute_script(_LOADED)
    return sources if len(sources) == count and all(sources) else False


def test_a_long_series_pages_its_cards(live_app, browser, tmp_path):  # noqa: F811
    base, app = live_app(demo=False, run_jobs=False)
    study = make_study(app.server.extensions["radpress"]["store"], tmp_path, [SLICES], lambda s, n: n % 9 == 0, 40, 36)
    login(browser, base, ADMIN)
    browser.get(f"{base}/study?uid={study}")
    first = wait(browser).until(lambda d: _cards_loaded(d, FIRST_CARDS))
    assert all("?v=" in src for src in first)  # versioned: the browser keeps them
    shown = browser.find_element(By.CSS_SELECTOR, ".series-shown")
    assert shown.text == f"instances 1–{FIRST_CARDS} of {SLICES}"
    badges = browser.find_elements(By.CSS_SELECTOR, ".lossy-card .lossy-original-badge")
    assert len(badges) == len(browser.find_elements(By.CSS_SELECTOR, ".lossy-card")) == len(range(1, FIRST_CARDS + 1, 9))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "study-paged-1.png"))
    _turn(browser, browser.find_element(By.CSS_SELECTOR, ".series-pager"), 2, ".series-shown",
          f"instances {FIRST_CARDS + 1}–{SLICES} of {SLICES}")
    second = wait(browser).until(lambda d: _cards_loaded(d, SLICES - FIRST_CARDS))
    assert not set(second) & set(first)
    cards = browser.find_elements(By.CSS_SELECTOR, ".study-card")
    assert cards[0].text.startswith(f"#{FIRST_CARDS + 1} ")
    assert [("lossy-card" in c.get_attribute("class")) for c in cards] == \
           [n % 9 == 1 for n in range(FIRST_CARDS + 1, SLICES + 1)]
    browser.execute_script("window.scrollTo(0, 0);")
    browser.save_screenshot(str(ARTIFACTS / "study-paged-2.png"))
    compare = cards[0].find_element(By.LINK_TEXT, "Compare")  # opens in the app (no reload), on this card's image
    href = compare.get_attribute("href")
    browser.execute_script("window.__stayed = true; arguments[0].click();", compare)
    wait(browser).until(lambda d: d.current_url == href)
    assert browser.execute_script("return window.__stayed === true") and "/compare?sop=" in href


def test_a_study_of_many_series_pages_its_series(live_app, browser, tmp_path):  # noqa: F811
    """One-slice series beyond a group (the last of 9 slices): the first group drawn, the others one pager click
    away, lossy ones marked, and a series drawn by the series pager pages its own cards."""
    series = 2 * SERIES_PER_PAGE + 3
    base, app = live_app(demo=False, run_jobs=False)
    study = make_study(app.server.extensions["radpress"]["store"], tmp_path, [1] * (series - 1) + [9], lambda s, n: s % 4 == 0,
                       40, 36)
    login(browser, base, ADMIN)
    browser.get(f"{base}/study?uid={study}")
    first = wait(browser).until(lambda d: _cards_loaded(d, SERIES_PER_PAGE))
    assert browser.find_element(By.ID, "study-series-shown").text == f"series 1–{SERIES_PER_PAGE} of {series}"
    assert browser.find_element(By.ID, "study-lossy-originals").text.startswith(f"⚠ {len(range(0, series, 4))} of {series + 8} ")
    marked = [("lossy-card" in c.get_attribute("class")) for c in browser.find_elements(By.CSS_SELECTOR, ".study-card")]
    assert marked == [n % 4 == 0 for n in range(SERIES_PER_PAGE)]
    assert len(browser.find_elements(By.CSS_SELECTOR, ".series-lossy")) == len(range(0, SERIES_PER_PAGE, 4))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "study-series-1.png"))
    _turn(browser, browser.find_element(By.ID, "study-series-pager"), 3, "#study-series-shown",
          f"series {2 * SERIES_PER_PAGE + 1}–{series} of {series}")
    shown = series - 2 * SERIES_PER_PAGE - 1 + MIN_PER_PAGE  # one-slice series, then the first row of the last
    third = wait(browser).until(lambda d: _cards_loaded(d, shown))
    assert not set(third) & set(first)
    cards = browser.find_elements(By.CSS_SELECTOR, ".study-card")
    assert [("lossy-card" in c.get_attribute("class")) for c in cards] == \
           [n % 4 == 0 for n in range(2 * SERIES_PER_PAGE, series - 1)] + [(series - 1) % 4 == 0] * MIN_PER_PAGE
    assert not browser.find_elements(By.CSS_SELECTOR, ".modal.show")  # new series' delete buttons open no dialog
    browser.save_screenshot(str(ARTIFACTS / "study-series-3.png"))
    _turn(browser, browser.find_element(By.CSS_SELECTOR, ".series-pager"), 2, ".series-block:last-of-type .series-shown",
          f"instances {MIN_PER_PAGE + 1}–{2 * MIN_PER_PAGE} of 9")
    turned = wait(browser).until(lambda d: _cards_loaded(d, shown))
    assert turned[:-MIN_PER_PAGE] == third[:-MIN_PER_PAGE] and not set(turned[-MIN_PER_PAGE:]) & set(third)  # that series only
    browser.save_screenshot(str(ARTIFACTS / "study-series-3-last.png"))
