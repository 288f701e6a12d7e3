"""Login and sessions over HTTP against the real app: throttling, timing, logout, Secure cookie, next."""

import statistics
import time

import pytest
import requests

from core.users import LOGIN_LIMIT, Users
from tests.conftest import ADMIN


def _post_login(base, name, password, address=None, next_=None, session=None):
    headers = {"X-Forwarded-For": address} if address else {}
    url = f"{base}/login" + (f"?next={next_}" if next_ is not None else "")
    return (session or requests).post(url, data={"username": name, "password": password}, headers=headers,
                                      allow_redirects=False)


@pytest.fixture
def proxied(monkeypatch):
    """The app behind a reverse proxy it trusts (X-Forwarded-For / -Proto honoured)."""
    monkeypatch.setenv("RADPRESS_TRUST_PROXY", "1")


def test_guessing_one_users_password_is_throttled(live_app, proxied):
    base, _app = live_app()
    for n in range(LOGIN_LIMIT):
        assert _post_login(base, "admin", f"guess-{n}", address=f"10.0.0.{n}").status_code == 401
    locked = _post_login(base, "admin", ADMIN[1], address="10.0.1.1")  # even the right password, from anywhere
    assert locked.status_code == 429 and 0 < int(locked.headers["Retry-After"]) <= 300
    assert requests.get(f"{base}/api/studies", auth=ADMIN, headers={"X-Forwarded-For": "10.0.1.2"}).status_code == 429
    assert _post_login(base, "someone-else", "x", address="10.0.1.3").status_code == 401  # other names are still heard


def test_guessing_from_one_address_is_throttled(live_app, proxied):
    base, _app = live_app()
    for n in range(LOGIN_LIMIT):
        assert _post_login(base, f"user{n}", "guess", address="10.9.9.9").status_code == 401
    assert _post_login(base, *ADMIN, address="10.9.9.9").status_code == 429
    assert _post_login(base, *ADMIN, address="10.9.9.8").status_code == 302


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(live_app):
    base, _app = live_app()
    for n in range(LOGIN_LIMIT):  # an attacker rotating X-Forwarded-For is still one address
        _post_login(base, f"user{n}", "guess", address=f"10.0.0.{n}")
    r = _post_login(base, *ADMIN, address="10.0.0.200")
    assert r.status_code == 429 and "Too many" in r.text


def test_an_unknown_user_costs_as_much_as_a_wrong_password(live_app, proxied):
    base, _app = live_app()

    def cost(name, n):
        start = time.perf_counter()
        assert _post_login(base, name, "wrong-password", address=f"10.1.{len(name)}.{n}").status_code == 401
        return time.perf_counter() - start

    unknown = statistics.median(cost(f"nobody{n}", n) for n in range(4))
    wrong = statistics.median(cost("admin", n) for n in range(4))
    assert wrong > 0.01  # a real password hash is checked
    assert unknown > 0.5 * wrong, (unknown, wrong)


def test_logout_ends_the_session_on_the_server(live_app):
    base, app = live_app()
    browser = requests.Session()
    assert _post_login(base, *ADMIN, session=browser).status_code == 302
    captured = browser.cookies.get_dict()
    assert browser.get(f"{base}/api/studies").status_code == 200
    browser.get(f"{base}/logout", allow_redirects=False)
    assert requests.get(f"{base}/api/studies", cookies=captured).status_code == 401
    # Removing a user ends their sessions too.
    users = Users(app.server.extensions["radpress"]["store"])
    users.add("dave", "dave-password", "radiologist")
    dave = requests.Session()
    _post_login(base, "dave", "dave-password", session=dave)
    assert dave.get(f"{base}/api/studies").status_code == 200
    users.remove("dave")
    assert dave.get(f"{base}/api/studies").status_code == 401


def test_cookie_is_secure_over_https_only(live_app, monkeypatch):
    monkeypatch.setenv("RADPRESS_TRUST_PROXY", "1")
    base, _app = live_app()
    https = requests.post(f"{base}/login", data=dict(zip(("username", "password"), ADMIN)),
                          headers={"X-Forwarded-Proto": "https"}, allow_redirects=False)
    assert "Secure" in https.headers["Set-Cookie"] and "HttpOnly" in https.headers["Set-Cookie"]
    plain = _post_login(base, *ADMIN)
    assert plain.status_code == 302 and "Secure" not in plain.headers["Set-Cookie"]
    monkeypatch.delenv("RADPRESS_TRUST_PROXY")
    base, _app = live_app()
    spoofed = requests.post(f"{base}/login", data=dict(zip(("username", "password"), ADMIN)),
                            headers={"X-Forwarded-Proto": "https"}, allow_redirects=False)
    assert spoofed.status_code == 302 and "Secure" not in spoofed.headers["Set-Cookie"]


NEXT_CASES = [
    ("/%09/evil.example", "/"),
    ("//evil.example", "/"),
    ("/%5C/evil.example", "/"),
    ("%5C%5Cevil.example", "/"),
    ("https://evil.example/", "/"),
    ("/%0d%0aSet-Cookie:%20x=1", "/Set-Cookie:%20x=1"),  # CR/LF removed: no header injection
    ("java%0d%0ascript:alert(1)", "/"),
    ("/%00/evil.example", "/"),
    ("/study%3Fuid%3D1.2.3", "/study?uid=1.2.3"),
    ("/%5Cstudy", "/study"),
]


def test_next_after_login_stays_on_this_site(live_app):
    base, _app = live_app()
    for next_, location in NEXT_CASES:
        r = _post_login(base, *ADMIN, next_=next_)
        assert r.status_code == 302 and r.headers["Location"] == location, next_


def test_a_page_without_login_sends_to_login_with_next(live_app):
    base, _app = live_app()
    r = requests.get(f"{base}/study?uid=1.2.3", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "/login?next=/study%3Fuid%3D1.2.3"
    browser = requests.Session()
    assert _post_login(base, *ADMIN, next_="/study%3Fuid%3D1.2.3", session=browser).headers["Location"] == "/study?uid=1.2.3"


def test_what_a_login_opens_is_never_kept_by_shared_caches(live_app, tmp_path):
    from tests.synthetic import write_kind

    base, _app = live_app()
    admin = requests.Session()
    admin.auth = ADMIN
    path = write_kind("u8_odd", tmp_path)
    study = admin.post(f"{base}/api/upload", files={"file": ("a.dcm", path.read_bytes())}).json()["studies"][0]
    sop = admin.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    for url in (f"/thumbnail/{sop}", f"/preview/{sop}", f"/dims/{sop}/format/png", f"/download/instance/{sop}", "/api/studies"):
        r = admin.get(base + url)
        assert r.status_code == 200 and "private" in r.headers["Cache-Control"] and "public" not in r.headers["Cache-Control"], url
        assert "Cookie" in r.headers["Vary"] and "Authorization" in r.headers["Vary"], url
    assert "private" not in requests.get(f"{base}/api/health").headers.get("Cache-Control", "")


def test_a_write_from_another_site_is_refused(live_app, tmp_path, monkeypatch):
    """CSRF: a page elsewhere posting with the Basic credentials the browser replays (or a cookie) gets 403."""
    from tests.synthetic import KINDS, make_dataset, write

    monkeypatch.setenv("RADPRESS_CORS_ORIGINS", "https://viewer.example")
    base, app = live_app()
    path = write(make_dataset(**KINDS["u10"]), tmp_path / "in.dcm")
    evil = {"Origin": "https://evil.example"}
    r = requests.post(f"{base}/api/upload", files={"file": path.read_bytes()}, auth=ADMIN, headers=evil)
    assert r.status_code == 403 and "another site" in r.json()["error"]
    assert requests.put(f"{base}/api/policy", json={"lossy_enabled": False}, auth=ADMIN, headers=evil).status_code == 403
    viewer = requests.post(f"{base}/api/upload", files={"file": path.read_bytes()}, auth=ADMIN,
                           headers={"Origin": "https://viewer.example"})  # CORS origins reach DICOMweb only
    assert viewer.status_code == 403
    assert not app.server.extensions["radpress"]["store"].studies() and app.server.extensions["radpress"]["store"].policy().lossy_enabled
    proxied = {"Origin": "https://clinic.example", "X-Forwarded-Host": "clinic.example"}  # a proxy that rewrites Host
    assert requests.put(f"{base}/api/policy", json={"lossy_enabled": True}, auth=ADMIN, headers=proxied).status_code == 200
    same = requests.post(f"{base}/api/upload", files={"file": path.read_bytes()}, auth=ADMIN, headers={"Origin": base})
    assert same.status_code == 200 and requests.get(f"{base}/api/studies", auth=ADMIN, headers=evil).status_code == 200
