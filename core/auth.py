"""Login, sessions and the checks every request passes (pages, API, downloads, images, Dash callbacks).

Browsers use a session cookie (HttpOnly, SameSite=Lax, Secure over HTTPS) set
by /login; the session lives in the index, so logout ends it for real.
Scripts and other services may send HTTP Basic credentials instead.  Password
guessing is throttled per user name and per client address (HTTP 429).
Every Dash callback request is checked by :func:`_guard_callback`: each
identifier it carries goes through :func:`core.users.authorize`.
"""

from __future__ import annotations

import functools
import hashlib
import html
import os
import re
import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit

from flask import current_app, g, has_request_context, jsonify, redirect, request, session
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from .errors import InvalidOptionError
from .users import DEMO_USER, PERMISSIONS, User, Users, authorize

__all__ = ["init_auth", "current_user", "require", "secret_key", "safe_next", "client_address"]

PUBLIC = ("/login", "/logout", "/api/health", "/assets/", "/_dash-component-suites/", "/_favicon.ico")
API_PREFIXES = ("/api/", "/download/", "/thumbnail/", "/dims/", "/preview/", "/deepzoom/", "/cine/", "/_dash-", "/dicom-web/")
CALLBACK_PATH = "/_dash-update-component"
# A UID as it appears inside callback values ("1.2.3", "?uid=1.2.3", "1.2.3:0:j2k:10").
_UID_TOKEN = re.compile(r"(?<![\d.])\d+(?:\.\d+)+(?![\d.])")
MAX_IDENTIFIERS = 200


def secret_key(data_dir: Path) -> bytes:
    """RADPRESS_SECRET, or a random key kept (0600) in the data directory so sessions survive restarts."""
    if os.environ.get("RADPRESS_SECRET"):
        return os.environ["RADPRESS_SECRET"].encode()
    path = Path(data_dir) / "secret.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()


def _users() -> Users:
    return current_app.extensions["radpress_users"]


def client_address() -> str:
    """The client's address (X-Forwarded-For is honoured only with RADPRESS_TRUST_PROXY=1, via ProxyFix)."""
    return request.remote_addr or ""


def current_user(context=None) -> User | None:
    """The logged-in user of this request; in a background-callback worker pass ``dash.ctx`` (its cookies)."""
    if not has_request_context():
        return _user_from_cookies(getattr(context, "cookies", None) or {}) if context is not None else None
    if "user" in g:
        return g.user
    user = None
    if session.get("sid"):
        user = _users().session_user(session["sid"])
    elif request.authorization and request.authorization.type == "basic":
        user = _basic_user(request.authorization.username or "", request.authorization.password or "")
    g.user = user
    return user


def _basic_user(name: str, password: str) -> User | None:
    users = _users()
    if users.retry_after(name, client_address()):
        return None
    user = users.authenticate(name, password)
    if user is None:
        users.login_failed(name, client_address())
    return user


def _user_from_cookies(cookies: dict) -> User | None:
    """The session cookie as the browser sent it with a background callback, checked like Flask checks it."""
    from flask.json.tag import TaggedJSONSerializer
    from itsdangerous import BadSignature, URLSafeTimedSerializer

    from .context import open_store

    value = cookies.get("session")
    if not value:
        return None
    store = open_store()
    serializer = URLSafeTimedSerializer(secret_key(store.root), salt="cookie-session", serializer=TaggedJSONSerializer(),
                                        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1})
    try:
        data = serializer.loads(value)
    except BadSignature:
        return None
    return Users(store).session_user(data.get("sid", "")) if isinstance(data, dict) else None


def _denied(status: int, message: str, retry_after: int = 0) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    if status == 401 and not request.path.startswith("/_dash-"):
        response.headers["WWW-Authenticate"] = 'Basic realm="RadPress"'
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def require(permission: str):
    """Route decorator: 401 without credentials, 403 when the role lacks *permission* (via :func:`authorize`)."""
    if permission not in PERMISSIONS:
        raise ValueError(permission)

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            authorize(current_app.extensions["radpress"]["store"], current_user(), permission)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def safe_next(target: str | None) -> str:
    """Where to go after login: a path on this site only (tabs, CR/LF and backslashes removed first)."""
    cleaned = re.sub(r"[\t\r\n\\]", "", target or "")
    parts = urlsplit(cleaned)
    if (not cleaned.startswith("/") or cleaned.startswith("//") or parts.scheme or parts.netloc
            or re.search(r"[\x00-\x1f\x7f]", cleaned)):
        return "/"
    return cleaned


def _cross_site():
    """A browser names the page behind every cross-site POST/PUT/DELETE in Origin.  It replays HTTP Basic
    credentials it once prompted for (our 401s ask for them) even on such requests, so a page elsewhere
    could upload or change the policy as the administrator (CSRF): refused, except DICOMweb calls from a
    viewer listed in RADPRESS_CORS_ORIGINS.  Scripts send no Origin; the session cookie is SameSite=Lax,
    so only requests carrying Basic credentials are at stake.  A proxy that rewrites Host names the
    browser's host in X-Forwarded-Host (a cross-site page cannot set that header)."""
    origin = request.headers.get("Origin")
    if request.method in ("GET", "HEAD", "OPTIONS") or not origin or not request.authorization:
        return None
    if urlsplit(origin).netloc in (request.host, request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()):
        return None
    allowed = {o.strip() for o in os.environ.get("RADPRESS_CORS_ORIGINS", "").split(",") if o.strip()}
    if origin in allowed and request.path.startswith("/dicom-web/"):
        return None
    return _denied(403, f"A {request.method} from another site ({origin[:100]}) is refused.")


def _guard():
    if refused := _cross_site():
        return refused
    if request.path.startswith(PUBLIC) or request.path == "/login":
        return None
    if request.method == "OPTIONS" and request.path.startswith("/dicom-web/"):
        return None  # a CORS preflight carries no credentials and gets no data (core.dicomweb)
    if (request.authorization and request.authorization.type == "basic" and "sid" not in session
            and (wait := _users().retry_after(request.authorization.username or "", client_address()))):
        return _denied(429, "Too many failed logins; try again later.", wait)
    if current_user() is None:
        if request.path.startswith(API_PREFIXES):
            return _denied(401, "Please log in (session cookie or HTTP Basic credentials).")
        return redirect("/login?next=" + quote(request.full_path if request.query_string else request.path, safe="/"))
    if request.path == CALLBACK_PATH:
        return _guard_callback()
    return None


def _guard_callback():
    """Every callback request: a well-formed body naming a known callback, and every identifier in it authorized."""
    body = request.get_json(silent=True)
    known = current_app.extensions.get("radpress_callbacks")
    if not isinstance(body, dict) or not isinstance(body.get("output"), str):
        raise InvalidOptionError("A callback request is a JSON object naming its output.",
                                 hint='Send {"output": ..., "outputs": ..., "inputs": [...], "changedPropIds": [...]}.')
    if known is not None and body["output"] not in known():
        raise InvalidOptionError(f"No callback has the output {body['output'][:200]!r}.")
    for field in ("inputs", "state", "changedPropIds"):
        if not isinstance(body.get(field, []), list):
            raise InvalidOptionError(f"The callback request's {field!r} must be a list.")
    for item in body.get("inputs", []) + body.get("state", []):
        for one in item if isinstance(item, list) else [item]:
            if not isinstance(one, dict) or "id" not in one or not isinstance(one.get("property"), str):
                raise InvalidOptionError("Each callback input is an object with an id, a property and a value.")
    if not isinstance(body.get("outputs", []), (list, dict)):
        raise InvalidOptionError("The callback request's 'outputs' must be a list or an object.")
    store = current_app.extensions["radpress"]["store"]
    user = current_user()
    for token in _identifiers(body.get("inputs", []) + body.get("state", [])):
        _authorize_identifier(store, user, token)
    return None


def _identifiers(value) -> set[str]:
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.update(t for t in _UID_TOKEN.findall(item) if len(t) <= 64)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        if len(found) > MAX_IDENTIFIERS:
            raise InvalidOptionError(f"A callback request may carry at most {MAX_IDENTIFIERS} identifiers.")
    return found


def _authorize_identifier(store, user: User, token: str) -> None:
    """A UID the archive holds (instance, study or series) must be one this user may view; others are not ours."""
    if store.query("SELECT 1 FROM instances WHERE sop_uid=?", (token,)):
        authorize(store, user, "view", sop_uid=token)
    elif store.query("SELECT 1 FROM studies WHERE study_uid=?", (token,)):
        authorize(store, user, "view", study_uid=token)
    elif rows := store.query("SELECT study_uid FROM series WHERE series_uid=?", (token,)):
        authorize(store, user, "view", study_uid=rows[0]["study_uid"])


def _private(response: Response) -> Response:
    """What a login opened is for that user only: shared caches (proxies) must not keep it."""
    if not request.path.startswith(PUBLIC) and request.path != "/login":
        response.cache_control.public = False
        response.cache_control.private = True
        response.vary.update(("Cookie", "Authorization"))
    return response


def _login_page(error: str = "", demo: bool = False) -> str:
    demo_form = (
        '<form method="post" class="mt-3"><input type="hidden" name="demo" value="1">'
        '<button class="btn btn-outline-secondary w-100" id="demo-login">Enter the demo (sample studies, read-only)</button></form>'
        if demo else ""
    )
    alert = f'<div class="alert alert-danger" id="login-error">{html.escape(error)}</div>' if error else ""
    return f"""<!doctype html><html><head><title>RadPress — log in</title>
<link rel="stylesheet" href="/assets/00-bootstrap.min.css"><link rel="stylesheet" href="/assets/style.css"></head>
<body class="bg-light"><main class="container" style="max-width:26rem;margin-top:10vh">
<h1 class="h3 mb-1">RadPress</h1><p class="text-muted">Store and serve medical images without fooling a doctor.</p>{alert}
<form method="post"><div class="mb-2"><label class="form-label" for="username">User name</label>
<input class="form-control" id="username" name="username" autocomplete="username" required></div>
<div class="mb-3"><label class="form-label" for="password">Password</label>
<input class="form-control" id="password" name="password" type="password" autocomplete="current-password" required></div>
<button class="btn btn-primary w-100" id="login-button">Log in</button></form>{demo_form}
<p class="small text-muted mt-3">First start: the administrator is <code>admin</code>; its password is printed in the
server's console and kept in <code>initial-admin-password.txt</code> in the data directory.</p></main></body></html>"""


class _SessionInterface(SecureCookieSessionInterface):
    """The cookie is Secure whenever the request came over HTTPS (behind a trusted proxy: X-Forwarded-Proto)."""

    def get_cookie_secure(self, app) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or (has_request_context() and request.is_secure))


def init_auth(server, users: Users, secret: bytes, demo: bool, callbacks=None) -> None:
    """Install login, sessions and the request guard; *callbacks* returns the registered callback outputs."""
    server.secret_key = secret
    server.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    server.session_interface = _SessionInterface()
    if os.environ.get("RADPRESS_TRUST_PROXY") == "1":
        server.wsgi_app = ProxyFix(server.wsgi_app, x_for=1, x_proto=1)
    server.extensions["radpress_users"] = users
    if callbacks is not None:
        server.extensions["radpress_callbacks"] = callbacks
    server.before_request(_guard)
    server.after_request(_private)

    @server.route("/login", methods=["GET", "POST"])
    def login():
        if request.method == "GET":
            return _login_page(demo=demo)
        name = request.form.get("username", "")
        if demo and request.form.get("demo"):
            user = users.get(DEMO_USER)
        elif wait := users.retry_after(name, client_address()):
            page = _login_page(f"Too many failed logins; try again in {wait} s.", demo)
            return page, 429, {"Retry-After": str(wait)}
        else:
            user = users.authenticate(name, request.form.get("password", ""))
            if user is None:
                users.login_failed(name, client_address())
            else:
                users.login_succeeded(name)
        if user is None:
            return _login_page("Wrong user name or password.", demo), 401
        old = session.get("sid")
        if old:
            users.close_session(old)
        session.clear()
        session["sid"] = users.open_session(user.name)
        return redirect(safe_next(request.args.get("next")))

    @server.route("/logout")
    def logout():
        if session.get("sid"):
            users.close_session(session["sid"])
        session.clear()
        return redirect("/login")

