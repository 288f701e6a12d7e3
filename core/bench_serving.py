"""Bench section "serving": a 300-instance study's thumbnails and first previews in headless Chromium over an
emulated 100 ms round trip and 20 Mbit/s, HTTP/1.1 against HTTP/2, cold and with a warm browser cache.

RadPress runs as ``make run-https`` runs it (the launcher, gunicorn's workers, nginx with TLS and HTTP/2).  Both
protocols go through the same nginx over TLS; Chromium is told ``--disable-http2`` for HTTP/1.1 (6 connections
per host) and negotiates h2 by ALPN otherwise.  The Study page is opened as a user opens it (Dash shell, scripts,
callbacks, then the ``<img>`` thumbnails of its first page: 48 of the 300, :mod:`core.studyview` pages a series'
cards); once every thumbnail has loaded, the first 4 instances' previews
(level 1, lossless) are loaded as a viewer would.  Before the browser comes, every thumbnail and preview is asked
for once, so the server's own caches are warm and the figures are about the network and the browser's cache.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from .render import render_version

__all__ = ["measure"]

ADMIN = ("bench", "bench-password-not-secret")
INSTANCES = 300
PREVIEWS = 4
RTT_MS = 100
MBIT_S = 20
REPEAT = 2
# Started in every page before its own scripts: keeps every resource timing entry and notes (performance.now(),
# ms since the navigation started) when the page has put all its thumbnails in place and when they have all loaded.
_WATCH = """
performance.setResourceTimingBufferSize(10000);
window.__cards = null; window.__thumbs = null;
const __watch = setInterval(() => {
  const imgs = Array.from(document.querySelectorAll('img.thumb'));
  if (imgs.length < %d) return;
  window.__cards = window.__cards || performance.now();
  if (imgs.every(i => i.complete && i.naturalWidth > 0)) { window.__thumbs = performance.now(); clearInterval(__watch); }
}, 5);
"""
_PREVIEWS = """
const [urls, done] = [arguments[0], arguments[arguments.length - 1]];
const t0 = performance.now();
Promise.all(urls.map(u => new Promise((ok, bad) => { const i = new Image(); i.onload = ok; i.onerror = () => bad(u); i.src = u; })))
  .then(() => done(performance.now() - t0), u => done('failed: ' + u));
"""
# The page's own text (scripts, styles, the Dash callbacks' JSON): bytes over the wire and once decoded.
_TEXT = """
const text = performance.getEntriesByType('resource').filter(e => !e.name.includes('/thumbnail/') && !e.name.includes('/preview/'));
return [text.reduce((n, e) => n + e.encodedBodySize, 0), text.reduce((n, e) => n + e.decodedBodySize, 0)];
"""
_ENTRIES = """
return performance.getEntriesByType('resource').filter(e => e.name.includes('/thumbnail/') || e.name.includes('/preview/'))
  .map(e => [e.name.includes('/thumbnail/') ? 't' : 'p', e.transferSize, e.nextHopProtocol]);
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spki(cert: Path) -> str:
    """The certificate's public-key hash, which Chromium is told to trust (a cache-able origin, unlike one with
    certificate errors ignored: Chromium does not cache answers from those)."""
    pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True, check=True).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _server(data: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "RADPRESS_ADMIN_USER": ADMIN[0], "RADPRESS_ADMIN_PASSWORD": ADMIN[1], "RADPRESS_DEMO": "0",
           "RADPRESS_DATA": str(data), "HOST": "127.0.0.1", "HTTPS_PORT": str(port), "RADPRESS_DICOM_PORT": "0"}
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "app.py", "--https"], env=env, cwd=Path(__file__).resolve().parents[1],
                                   stdout=out, stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{base}/api/health", verify=False, timeout=5).status_code == 200:
                return process, base
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"RadPress did not start over HTTPS: {log.read_text()[-1500:]}")


def _urls(base: str, study_uid: str, cert: str) -> tuple[list[str], list[str]]:
    """The thumbnails the Study page links (``?v=``), warmed on the server; the first previews, warmed too."""
    http = requests.Session()
    http.auth, http.verify, http.trust_env = ADMIN, cert, False  # trust_env: REQUESTS_CA_BUNDLE would override verify
    instances = http.get(f"{base}/api/studies/{study_uid}").json()["instances"]
    thumbs = []
    for row in instances:
        answer = http.get(f"{base}/thumbnail/{row['sop_uid']}")
        answer.raise_for_status()
        thumbs.append(f"{base}/thumbnail/{row['sop_uid']}?v={answer.headers['ETag'].strip(chr(34))}")
    previews = []
    for row in instances[:PREVIEWS]:
        checksum = http.head(f"{base}/download/instance/{row['sop_uid']}?variant=original").headers["ETag"].strip('"')
        url = f"{base}/preview/{row['sop_uid']}?variant=lossless&level=1&v={render_version(checksum)}"
        http.get(url).raise_for_status()
        previews.append(url)
    return thumbs, previews


def _browser(profile: Path, spki: str, http2: bool):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                f"--user-data-dir={profile}", f"--ignore-certificate-errors-spki-list={spki}",
                *([] if http2 else ["--disable-http2"])):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(180)
    driver.set_page_load_timeout(180)
    return driver


def _login(driver, base: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}/login")
    driver.find_element(By.ID, "username").send_keys(ADMIN[0])
    driver.find_element(By.ID, "password").send_keys(ADMIN[1])
    driver.find_element(By.ID, "login-button").click()
    WebDriverWait(driver, 60).until(lambda d: "/login" not in d.current_url)


def _open_study(driver, base: str, study_uid: str, previews: list[str], count: int, cold: bool) -> dict:
    """One visit of the Study page over the emulated link: ms until its 300 cards are in place (Dash: scripts,
    callbacks, rendering), then until every thumbnail has loaded, then to load the first previews."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    if cold:
        driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": RTT_MS, "downloadThroughput": MBIT_S * 1e6 / 8, "uploadThroughput": MBIT_S * 1e6 / 8})
    driver.get(f"{base}/study?uid={study_uid}")
    WebDriverWait(driver, 300, poll_frequency=0.1).until(lambda d: d.execute_script("return window.__thumbs"))
    cards_ms, done_ms = driver.execute_script("return [window.__cards, window.__thumbs]")
    previews_ms = driver.execute_async_script(_PREVIEWS, previews)
    if isinstance(previews_ms, str):
        raise RuntimeError(f"a preview did not load in the browser ({previews_ms})")
    entries = driver.execute_script(_ENTRIES)
    text_wire, text_decoded = driver.execute_script(_TEXT)
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                                 "uploadThroughput": -1})
    fetched = [e for e in entries if e[1] > 0]
    return {"page_ms": cards_ms, "thumbnails_ms": done_ms - cards_ms, "previews_ms": previews_ms,
            "network_ms": done_ms - cards_ms + previews_ms, "total_ms": done_ms + previews_ms,
            "fetched_thumbnails": sum(e[0] == "t" for e in fetched), "fetched_previews": sum(e[0] == "p" for e in fetched),
            "bytes": sum(e[1] for e in entries), "protocols": sorted({e[2] for e in fetched if e[2]}),
            "text_wire_bytes": text_wire, "text_bytes": text_decoded}


def measure(instances: int = INSTANCES) -> dict:
    import urllib3

    from .samples import write_series
    from .studyview import FIRST_CARDS

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the health poll, before the certificate exists
    with tempfile.TemporaryDirectory(prefix="radpress-bench-serving-") as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        files = write_series("693_UNCR", instances, tmp / "series")
        shown = min(len(files), FIRST_CARDS)  # one series: the page draws this many cards at first
        subprocess.run([sys.executable, "-m", "core", "ingest", str(tmp / "series"), "--data", str(data), "--no-jobs"],
                       cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True)
        process, base = _server(data, tmp / "radpress.log")
        try:
            cert = str(data / "tls" / "cert.pem")  # our self-signed certificate, trusted as its own authority
            (study,) = requests.get(f"{base}/api/studies", auth=ADMIN, verify=cert).json()
            _, previews = _urls(base, study["study_uid"], cert)  # every thumbnail warmed on the server
            spki = _spki(data / "tls" / "cert.pem")
            browsers = {label: _browser(tmp / f"chrome-{int(http2)}", spki, http2)
                        for label, http2 in (("HTTP/1.1", False), ("HTTP/2", True))}
            runs: dict[tuple[str, str], dict] = {}
            try:
                for driver in browsers.values():
                    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _WATCH % shown})
                    _login(driver, base)
                for _ in range(REPEAT):  # the best of REPEAT, protocols taking turns: this machine is shared
                    for label, driver in browsers.items():
                        for cache in ("cold", "warm"):
                            run = _open_study(driver, base, study["study_uid"], previews, shown, cold=cache == "cold")
                            if (label, cache) not in runs or run["total_ms"] < runs[(label, cache)]["total_ms"]:
                                runs[(label, cache)] = run
            finally:
                for driver in browsers.values():
                    driver.quit()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    return _report(runs, len(files), shown)


def _report(runs: dict, count: int, linked: int) -> dict:
    lines = [f"{count}-instance CT study, Study page (its first {linked} thumbnails) then {PREVIEWS} previews, Chromium, "
             f"{RTT_MS} ms RTT, {MBIT_S} Mbit/s, TLS through nginx; best of {REPEAT}",
             "page: until the cards are in place; thumbnails: from then until every one has loaded; previews: then",
             f"{'protocol':9} {'cache':5} {'page':>7} {'thumbnails':>11} {'previews':>9} {'total':>8} {'fetched':>8} "
             f"{'MB':>6}  negotiated"]
    for (label, cache), r in runs.items():
        lines.append(f"{label:9} {cache:5} {r['page_ms'] / 1000:6.2f}s {r['thumbnails_ms'] / 1000:10.2f}s "
                     f"{r['previews_ms'] / 1000:8.2f}s {r['total_ms'] / 1000:7.2f}s "
                     f"{r['fetched_thumbnails'] + r['fetched_previews']:8d} {r['bytes'] / 1e6:6.1f}  {','.join(r['protocols']) or '-'}")
    h1c, h2c, h1w, h2w = (runs[k] for k in (("HTTP/1.1", "cold"), ("HTTP/2", "cold"), ("HTTP/1.1", "warm"), ("HTTP/2", "warm")))
    checks = [
        {"target": "HTTP/2 negotiated through TLS (ALPN h2); HTTP/1.1 when the browser has it off",
         "measured": f"{','.join(h2c['protocols'])} / {','.join(h1c['protocols'])}",
         "ok": h2c["protocols"] == ["h2"] and h1c["protocols"] == ["http/1.1"]},
        {"target": "cold: HTTP/2 loads the study's thumbnails and first previews faster than HTTP/1.1 (informative: "
                   "Chromium's emulation delays each request, it does not model TCP)",
         "measured": f"{h2c['network_ms'] / 1000:.2f} s vs {h1c['network_ms'] / 1000:.2f} s",
         "ok": h2c["network_ms"] < h1c["network_ms"], "informative": True},
        {"target": "warm browser cache: no thumbnail or preview fetched again (immutable, content-addressed URLs)",
         "measured": f"{h2w['fetched_thumbnails'] + h2w['fetched_previews']} and "
                     f"{h1w['fetched_thumbnails'] + h1w['fetched_previews']} of {linked + PREVIEWS} fetched (HTTP/2, HTTP/1.1)",
         "ok": h2w["fetched_thumbnails"] + h2w["fetched_previews"] + h1w["fetched_thumbnails"] + h1w["fetched_previews"] == 0},
        {"target": "warm browser cache: thumbnails and first previews load faster than cold (both protocols)",
         "measured": f"HTTP/2 {h2w['network_ms'] / 1000:.2f} s vs {h2c['network_ms'] / 1000:.2f} s; "
                     f"HTTP/1.1 {h1w['network_ms'] / 1000:.2f} s vs {h1c['network_ms'] / 1000:.2f} s",
         "ok": h2w["network_ms"] < h2c["network_ms"] and h1w["network_ms"] < h1c["network_ms"]},
    ]
    lines.append(f"page text (scripts, styles, callbacks' JSON), cold: {h2c['text_wire_bytes'] / 1e6:.2f} MB over the wire "
                 f"for {h2c['text_bytes'] / 1e6:.2f} MB decoded (compressed by the app)")
    checks.append({"target": "text answers compressed: the page's scripts, styles and JSON at least 3x smaller on the wire",
                   "measured": f"{h2c['text_bytes'] / max(h2c['text_wire_bytes'], 1):.1f}x",
                   "ok": h2c["text_bytes"] >= 3 * h2c["text_wire_bytes"]})
    return {"table": "\n".join(lines), "checks": checks,
            "runs": {f"{label} {cache}": r for (label, cache), r in runs.items()}}
