"""Login, sessions and role checks for every route (pages, API, downloads, images).

Browsers use the session cookie (HttpOnly, SameSite=Lax) set by /login;
scripts and other services may send HTTP Basic credentials instead.
"""

from __future__ import annotations

import functools
import html
import os
import secrets
from pathlib import Path

from flask import current_app, g, jsonify, redirect, request, session
from werkzeug.wrappers import Response

from .users import DEMO_USER, PERMISSIONS, User, Users, allowed

__all__ = ["init_auth", "current_user", "require", "secret_key"]

PUBLIC = ("/login", "/logout", "/api/health", "/assets/", "/_dash-component-suites/", "/_favicon.ico")
API_PREFIXES = ("/api/", "/download/", "/thumbnail/", "/dims/", "/preview/", "/deepzoom/", "/_dash-")


def secret_key(data_dir: Path) -> bytes:
    """RADPRESS_SECRET, or a random key kept (0600) in the data directory so sessions survive restarts."""
    if os.environ.get("RADPRESS_SECRET"):
        return os.environ["RADPRESS_SECRET"].encode()
    path = data_dir / "secret.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()


def _users() -> Users:
    return current_app.extensions["radpress_users"]


def current_user() -> User | None:
    if "user" in g:
        return g.user
    user = None
    if session.get("user"):
        user = _users().get(session["user"])
    elif request.authorization and request.authorization.type == "basic":
        user = _users().authenticate(request.authorization.username, request.authorization.password)
    g.user = user
    return user


def _denied(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    if status == 401 and not request.path.startswith("/_dash-"):
        response.headers["WWW-Authenticate"] = 'Basic realm="RadPress"'
    return response


def require(permission: str):
    """Route decorator: 401 without credentials, 403 when the role lacks *permission*."""
    if permission not in PERMISSIONS:
        raise ValueError(permission)

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            user = current_user()
            if user is None:
                return _denied(401, "Please log in (session cookie or HTTP Basic credentials).")
            if not allowed(user, permission):
                return _denied(403, f"The {user.role} role may not {permission}.")
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _guard():
    if request.path.startswith(PUBLIC) or request.path == "/login":
        return None
    if current_user() is not None:
        return None
    if request.path.startswith(API_PREFIXES):
        return _denied(401, "Please log in (session cookie or HTTP Basic credentials).")
    return redirect(f"/login?next={request.full_path if request.query_string else request.path}")


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


def init_auth(server, users: Users, secret: bytes, demo: bool) -> None:
    server.secret_key = secret
    server.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    server.extensions["radpress_users"] = users
    server.before_request(_guard)

    @server.route("/login", methods=["GET", "POST"])
    def login():
        if request.method == "GET":
            return _login_page(demo=demo)
        if demo and request.form.get("demo"):
            user = users.get(DEMO_USER)
        else:
            user = users.authenticate(request.form.get("username", ""), request.form.get("password", ""))
        if user is None:
            return _login_page("Wrong user name or password.", demo), 401
        session.clear()
        session["user"] = user.name
        target = request.args.get("next", "/")
        return redirect(target if target.startswith("/") and not target.startswith("//") else "/")

    @server.route("/logout")
    def logout():
        session.clear()
        return redirect("/login")
