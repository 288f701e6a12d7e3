"""Background callbacks through Celery with a real redis-server and a real worker (REDIS_URL set)."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from werkzeug.serving import make_server

from core.environ import environment
from tests.checkers import require
from tests.test_browser import ADMIN, browser, instance_of, login, wait  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def celery_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("celery") / "data"
    port = free_port()
    redis = subprocess.Popen([require("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "RADPRESS_DATA": str(data),
           "RADPRESS_ADMIN_USER": ADMIN[0], "RADPRESS_ADMIN_PASSWORD": ADMIN[1]}
    worker = None
    try:
        with environment(**env):
            from app import create_app

            app = create_app(data, demo=True)
            assert type(app._background_manager).__name__ == "CeleryManager"
            worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "app:celery_app", "worker", "--pool", "solo",
                                       "--loglevel", "warning"], cwd=ROOT, env={**os.environ, **env},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            httpd = make_server("127.0.0.1", 0, app.server, threaded=True)
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            yield f"http://127.0.0.1:{httpd.server_port}"
            httpd.shutdown()
            app.server.extensions["radpress"]["jobs"].stop()
    finally:
        for proc in (worker, redis):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


def test_compare_encodes_in_a_celery_worker(celery_server, browser):  # noqa: F811
    login(browser, celery_server, ADMIN)
    browser.get(f"{celery_server}/compare?sop={instance_of(celery_server, 'MR')}")
    wait(browser, 120).until(EC.presence_of_element_located((By.ID, "lossy-banner-text")))
    assert "LOSSY — compressed" in browser.find_element(By.ID, "lossy-banner-text").text
    assert browser.find_element(By.CSS_SELECTOR, "#card-lossless .metric-max-error").text == "0"
    time.sleep(0.5)
