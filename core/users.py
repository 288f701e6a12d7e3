"""Users and roles, and the one rule that decides who may do what to which study.

:func:`authorize` is the single authorization decision: every HTTP route and
every Dash callback calls it (directly, or through the callback gate in
:mod:`core.auth` that checks every identifier a callback receives).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import secrets
import time
from dataclasses import dataclass, replace

from werkzeug.security import check_password_hash, generate_password_hash

from .errors import InvalidOptionError, RadPressError
from .store import Store, StoreError

__all__ = ["ROLES", "PERMISSIONS", "User", "Users", "allowed", "authorize", "AccessDenied", "LoginRequired",
           "visible_studies", "visible_instances", "visible_jobs", "mark_demo", "record_access", "access_log",
           "set_readers", "readers", "LabScope", "lab_scope_for", "DEMO_LAB_LIMITS", "LAB_MAX_ENCODINGS", "visibility_sql"]

ROLES = ("admin", "radiologist", "demo")
# admin: everything; radiologist: view, compare, download, lab; demo: read-only, sample instances only.
PERMISSIONS = {
    "view": {"admin", "radiologist", "demo"},
    "download": {"admin", "radiologist", "demo"},
    "lab": {"admin", "radiologist", "demo"},  # demo runs are capped: DEMO_LAB_LIMITS
    "storage": {"admin", "radiologist"},  # the clinic-wide storage report
    "upload": {"admin"},
    "policy": {"admin"},
    "users": {"admin"},
    "jobs": {"admin"},  # cancel jobs
    "access_log": {"admin"},
    "housekeeping": {"admin"},  # delete studies and series, resolve conflicts: the deliberate losses of originals
}
_DOING = {"view": "open studies", "download": "download images", "lab": "run the quality lab",
          "storage": "see the clinic's storage", "upload": "upload studies", "policy": "change the storage policy",
          "users": "manage users", "jobs": "cancel jobs", "access_log": "read the access log",
          "housekeeping": "delete studies or resolve conflicts"}
DEMO_USER = "demo"
# The demo login is open to anyone: its lab sweeps stay small and short.
DEMO_LAB_LIMITS = {"codecs": 2, "ratios": 4, "seconds": 60.0}
# Encodings one sweep may make (codecs x settings x frames measured), per role: a sweep runs as a job, but a
# job of hours would hold the lab's runner for everyone else.
LAB_MAX_ENCODINGS = {"admin": 20000, "radiologist": 6000, "demo": 600}


class AccessDenied(RadPressError):
    """The user is logged in but may not do this (role, or a study they may not open)."""

    http_status = 403


class LoginRequired(RadPressError):
    http_status = 401


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def sees_only_demo(self) -> bool:
        return self.role == "demo"


_VERIFIED: dict[tuple[str, str], None] = {}
SESSION_MAX_AGE_S = 12 * 3600
LOGIN_LIMIT = 5  # failures per user name, and per client address ...
LOGIN_WINDOW_S = 300  # ... within this many seconds, then HTTP 429


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return generate_password_hash(secrets.token_urlsafe(16))


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def _verified(stored: str, password: str) -> bool:
    """check_password_hash costs ~100 ms by design; scripts sending HTTP Basic on every request
    would pay it each time, so successes are remembered (by the stored hash and a digest of
    the password: a changed password or a removed user is checked afresh)."""
    key = (stored, hashlib.sha256(password.encode()).hexdigest())
    if key in _VERIFIED:
        return True
    if not check_password_hash(stored, password):
        return False
    if len(_VERIFIED) > 1024:
        _VERIFIED.clear()
    _VERIFIED[key] = None
    return True


def allowed(user: User | None, permission: str) -> bool:
    return user is not None and user.role in PERMISSIONS[permission]


def authorize(store: Store, user: User | None, action: str, study_uid: str | None = None, sop_uid: str | None = None) -> None:
    """The one rule: may *user* do *action* (a key of :data:`PERMISSIONS`) on this study / instance?

    Raises :class:`LoginRequired` (401), :class:`AccessDenied` (403), or
    StoreError (404) for an identifier the archive does not hold.  Demo users
    see the instances loaded as demo samples only (an upload that shares a
    sample's Study UID stays invisible to them); a study with named readers is
    open to those radiologists only; administrators see everything.
    """
    if action not in PERMISSIONS:
        raise ValueError(action)
    if user is None:
        raise LoginRequired("Please log in (session cookie or HTTP Basic credentials).")
    for name, uid in (("Study Instance UID", study_uid), ("SOP Instance UID", sop_uid)):
        if uid is not None and not isinstance(uid, str):  # a hand-made callback request (a list, a number, an object)
            raise InvalidOptionError(f"The {name} must be text, not {type(uid).__name__}.", hint="Reload the page.")
    if not allowed(user, action):
        raise AccessDenied(f"The {user.role} role may not {_DOING[action]}.")
    if sop_uid is not None:
        row = store.instance(sop_uid)
        if study_uid is not None and row["study_uid"] != study_uid:
            raise AccessDenied(f"Instance {sop_uid} does not belong to study {study_uid}.")
        study_uid = row["study_uid"]
    if study_uid is None:
        return
    store.study(study_uid)
    if not _may_open(store, user, study_uid, sop_uid):
        raise AccessDenied("You may not open this study." if sop_uid is None else "You may not open this image.",
                           hint="The demo login opens the sample studies only." if user.sees_only_demo else "")


def _may_open(store: Store, user: User, study_uid: str, sop_uid: str | None) -> bool:
    if user.role == "admin":
        return True
    if user.sees_only_demo:
        if sop_uid is not None:
            return bool(store.query("SELECT 1 FROM demo_instances WHERE sop_uid=?", (sop_uid,)))
        return bool(store.query("SELECT 1 FROM demo_instances d JOIN instances i USING (sop_uid) JOIN series s USING (series_uid) "
                                "WHERE s.study_uid=? LIMIT 1", (study_uid,)))
    names = readers(store, study_uid)
    return not names or user.name in names


def visibility_sql(user: User) -> tuple[str, tuple, str]:
    """The rule of :func:`_may_open` as SQL, for searches over the whole index without a query per study.

    Returns a clause on ``st.study_uid`` with its parameters and a clause on
    ``i.sop_uid`` (the instances a demo login may see).
    """
    if user.role == "admin":
        return "1", (), "1"
    if user.sees_only_demo:
        return ("EXISTS (SELECT 1 FROM demo_instances d JOIN instances vi USING (sop_uid) JOIN series vs USING (series_uid) "
                "WHERE vs.study_uid = st.study_uid)", (), "i.sop_uid IN (SELECT sop_uid FROM demo_instances)")
    return ("(NOT EXISTS (SELECT 1 FROM study_readers r WHERE r.study_uid = st.study_uid) OR EXISTS "
            "(SELECT 1 FROM study_readers r WHERE r.study_uid = st.study_uid AND r.user = ?))", (user.name,), "1")


def visible_instances(store: Store, user: User, study_uid: str) -> list:
    """The study's instances this user may see (after :func:`authorize` allowed the study)."""
    rows = store.instances(study_uid)
    if not user.sees_only_demo:
        return rows
    demo = {r["sop_uid"] for r in store.query("SELECT sop_uid FROM demo_instances")}
    return [r for r in rows if r["sop_uid"] in demo]


def visible_studies(store: Store, user: User) -> list[dict]:
    """The studies this user may open; for demo users counts and modalities cover the sample instances only."""
    out = []
    for row in store.studies():
        if not _may_open(store, user, row["study_uid"], None):
            continue
        study = {k: row[k] for k in row.keys()}
        if user.sees_only_demo:
            rows = visible_instances(store, user, row["study_uid"])
            study["instances"] = len(rows)
            study["series"] = len({r["series_uid"] for r in rows})
            study["modalities"] = ",".join(dict.fromkeys(r["modality"] for r in rows if r["modality"]))
            study["lossy_originals"] = sum(1 for r in rows if r["lossy"])
        out.append(study)
    return out


def visible_jobs(store: Store, user: User, jobs: list[dict]) -> list[dict]:
    """Jobs of the studies this user may open (for demo logins, errors of sample instances only)."""
    if user.role == "admin":
        return jobs
    may = {s["study_uid"] for s in visible_studies(store, user)}
    jobs = [j for j in jobs if j["study_uid"] in may]
    if user.sees_only_demo:
        demo = {r["sop_uid"] for r in store.query("SELECT sop_uid FROM demo_instances")}
        jobs = [{**j, "errors": [e for e in j.get("errors", []) if e["sop_uid"] in demo],
                 "warnings": [w for w in j.get("warnings", []) if w["sop_uid"] in demo]} for j in jobs]
    return jobs


@dataclass(frozen=True)
class LabScope:
    """A quality-lab sweep as a user may run it: its settings, the instances measured (None: all), a time box in s."""

    config: object
    sop_uids: frozenset[str] | None
    seconds: float | None
    encodings: int


def lab_scope_for(store: Store, user: User, study_uid: str, config=None) -> LabScope:
    """The quality lab on a study as this user may run it: demo logins get a small, time-boxed sweep of the samples;
    a sweep larger than the role's :data:`LAB_MAX_ENCODINGS` is refused before any work."""
    from .lab import LabConfig

    authorize(store, user, "lab", study_uid=study_uid)
    config = config or LabConfig()
    sops, seconds = None, None
    if user.sees_only_demo:
        limits = DEMO_LAB_LIMITS
        if len(config.codecs) > limits["codecs"] or len(config.ratios) > limits["ratios"]:
            config = replace(config, codecs=tuple(config.codecs)[:limits["codecs"]],
                             ratios=tuple(sorted(config.ratios, key=lambda r: abs(r - 10)))[:limits["ratios"]])
        sops, seconds = frozenset(r["sop_uid"] for r in visible_instances(store, user, study_uid)), limits["seconds"]
    frames = sum(min(r["frames"] or 1, config.max_frames) for r in store.instances(study_uid) if sops is None or r["sop_uid"] in sops)
    settings = len(set(config.ratios)) + 2  # lossless and the clinic's current ratio are measured too
    encodings = len(config.codecs) * settings * frames
    cap = LAB_MAX_ENCODINGS.get(user.role, 0)
    if encodings > cap:
        raise InvalidOptionError(
            f"This sweep would make {encodings} encodings ({len(config.codecs)} codec(s) x {settings} settings x {frames} "
            f"frame(s)); a {user.role} may run at most {cap}.",
            hint="Choose fewer codecs or ratios, e.g. ?codecs=j2k&ratios=5,10.")
    return LabScope(config, sops, seconds, encodings)


def mark_demo(store: Store, sop_uids) -> None:
    """Mark instances as demo samples: the only ones a demo login sees."""
    with store.connect() as db:
        db.executemany("INSERT OR IGNORE INTO demo_instances (sop_uid) VALUES (?)", [(u,) for u in sop_uids])


def readers(store: Store, study_uid: str) -> list[str]:
    return [r["user"] for r in store.query("SELECT user FROM study_readers WHERE study_uid=? ORDER BY user", (study_uid,))]


def set_readers(store: Store, study_uid: str, names: list[str] | None, by: str) -> list[str]:
    """Restrict a study to the named radiologists (administrators always see it); None or [] opens it to all."""
    store.study(study_uid)
    names = sorted(set(names or []))
    known = {u.name: u.role for u in Users(store).list()}
    for name in names:
        if known.get(name) not in ("radiologist", "admin"):
            raise InvalidOptionError(f"{name!r} is not a radiologist or administrator here.",
                                     hint="Readers are user names with the radiologist role.")
    old = readers(store, study_uid)
    with store.connect() as db:
        db.execute("DELETE FROM study_readers WHERE study_uid=?", (study_uid,))
        db.executemany("INSERT INTO study_readers (study_uid, user) VALUES (?,?)", [(study_uid, n) for n in names])
        db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                   (time.time(), by, f"readers of study {study_uid}", json.dumps(old), json.dumps(names)))
    return names


ACCESS_DEDUP_S = 60.0


def record_access(store: Store, user: User, action: str, study_uid: str, sop_uid: str | None = None, address: str = "") -> None:
    """Who viewed or downloaded which study (repeats within a minute are one entry)."""
    now = time.time()
    with store.connect() as db:
        if db.execute("SELECT 1 FROM access_log WHERE user=? AND action=? AND study_uid=? AND sop_uid IS ? AND at>?",
                      (user.name, action, study_uid, sop_uid, now - ACCESS_DEDUP_S)).fetchone():
            return
        db.execute("INSERT INTO access_log (at, user, role, action, study_uid, sop_uid, address) VALUES (?,?,?,?,?,?,?)",
                   (now, user.name, user.role, action, study_uid, sop_uid, address))


def access_log(store: Store, study_uid: str | None = None, user: str | None = None, limit: int = 200) -> list[dict]:
    sql, params = "SELECT * FROM access_log WHERE 1=1", []
    if study_uid:
        sql, params = sql + " AND study_uid=?", params + [study_uid]
    if user:
        sql, params = sql + " AND user=?", params + [user]
    return [dict(r) for r in store.query(sql + " ORDER BY id DESC LIMIT ?", (*params, max(1, min(int(limit), 5000))))]


def _keep_an_admin(db, name: str, role: str, new_role: str | None) -> None:
    """Refuse to remove or demote the last administrator (inside the caller's write transaction)."""
    if role == "admin" and new_role != "admin" and not db.execute(
            "SELECT 1 FROM users WHERE role='admin' AND name!=?", (name,)).fetchone():
        raise InvalidOptionError(f"{name} is the last administrator; nobody could manage users or the policy without one.",
                                 hint="Make another user an administrator first.")


class Users:
    def __init__(self, store: Store):
        self.store = store

    def add(self, name: str, password: str, role: str) -> User:
        if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", name or ""):
            raise InvalidOptionError(f"User name {name!r} is not allowed.", hint="Use letters, digits, . _ @ - (at most 64).")
        if role not in ROLES:
            raise InvalidOptionError(f"Role {role!r} does not exist.", hint=f"Choose one of: {', '.join(ROLES)}.")
        if len(password or "") < 8 and role != "demo":
            raise InvalidOptionError("The password is too short.", hint="Use at least 8 characters.")
        with self.store.connect() as db:
            if db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                raise InvalidOptionError(f"User {name!r} already exists.")
            db.execute("INSERT INTO users VALUES (?,?,?,?)", (name, generate_password_hash(password), role, time.time()))
        return User(name, role)

    def remove(self, name: str, by: str = "system") -> None:
        with self.store.connect() as db:
            row = db.execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise StoreError(f"No user {name!r}.")
            _keep_an_admin(db, name, row["role"], None)
            db.execute("DELETE FROM users WHERE name=?", (name,))
            db.execute("DELETE FROM sessions WHERE user=?", (name,))
            db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                       (time.time(), by, f"user {name} removed", json.dumps(row["role"]), json.dumps(None)))

    def set_role(self, name: str, role: str, by: str) -> User:
        """Change a user's role; the last administrator keeps theirs (nobody could manage users any more)."""
        if role not in ROLES:
            raise InvalidOptionError(f"Role {role!r} does not exist.", hint=f"Choose one of: {', '.join(ROLES)}.")
        with self.store.connect() as db:
            row = db.execute("SELECT role FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise StoreError(f"No user {name!r}.")
            _keep_an_admin(db, name, row["role"], role)
            db.execute("UPDATE users SET role=? WHERE name=?", (role, name))
            db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                       (time.time(), by, f"role of user {name}", json.dumps(row["role"]), json.dumps(role)))
        return User(name, role)

    def change_password(self, name: str, old: str, new: str, keep_session: str | None = None) -> None:
        """A user changes their own password: the current one is asked for, so an unattended session cannot.
        Their other sessions end (someone who had the old password is logged out); *keep_session* stays."""
        rows = self.store.query("SELECT password_hash, role FROM users WHERE name=?", (name or "",))
        if not rows or rows[0]["role"] == "demo":
            raise InvalidOptionError("This login has no password of its own to change.")
        if not check_password_hash(rows[0]["password_hash"], old or ""):
            raise InvalidOptionError("The current password is wrong; the password was not changed.")
        if len(new or "") < 8:
            raise InvalidOptionError("The new password is too short.", hint="Use at least 8 characters.")
        if new == old:
            raise InvalidOptionError("The new password is the current one.", hint="Choose another.")
        with self.store.connect() as db:
            db.execute("UPDATE users SET password_hash=? WHERE name=?", (generate_password_hash(new), name))
            db.execute("DELETE FROM sessions WHERE user=? AND digest!=?", (name, _digest(keep_session or "")))
            db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                       (time.time(), name, f"password of user {name}", "null", '"changed"'))

    def list(self) -> list[User]:
        return [User(r["name"], r["role"]) for r in self.store.query("SELECT name, role FROM users ORDER BY name")]

    def get(self, name: str) -> User | None:
        rows = self.store.query("SELECT name, role FROM users WHERE name=?", (name,))
        return User(rows[0]["name"], rows[0]["role"]) if rows else None

    def authenticate(self, name: str, password: str) -> User | None:
        """The user, or None; an unknown name costs one hash check like a wrong password (no timing oracle)."""
        rows = self.store.query("SELECT * FROM users WHERE name=?", (name or "",))
        if not rows:
            check_password_hash(_dummy_hash(), password or "")
            return None
        if _verified(rows[0]["password_hash"], password or ""):
            return User(rows[0]["name"], rows[0]["role"])
        return None

    # -- sessions: kept in the index so logout (or removing the user) ends them everywhere --
    def open_session(self, name: str) -> str:
        """A new session id for the cookie; the index keeps only its digest."""
        sid = secrets.token_urlsafe(32)
        now = time.time()
        with self.store.connect() as db:
            db.execute("DELETE FROM sessions WHERE created<?", (now - SESSION_MAX_AGE_S,))
            db.execute("INSERT INTO sessions (digest, user, created) VALUES (?,?,?)", (_digest(sid), name, now))
        return sid

    def session_user(self, sid: str) -> User | None:
        rows = self.store.query("SELECT u.name, u.role FROM sessions s JOIN users u ON u.name = s.user "
                                "WHERE s.digest=? AND s.created>?", (_digest(sid or ""), time.time() - SESSION_MAX_AGE_S))
        return User(rows[0]["name"], rows[0]["role"]) if rows else None

    def close_session(self, sid: str) -> None:
        with self.store.connect() as db:
            db.execute("DELETE FROM sessions WHERE digest=?", (_digest(sid or ""),))

    # -- password guessing: a few failures per user name and per client address, then HTTP 429 --
    def retry_after(self, name: str, address: str) -> int:
        """Seconds until another login attempt for this name / from this address is heard (0: now)."""
        now = time.time()
        wait = 0.0
        for key in (f"user:{name}", f"addr:{address}"):
            rows = self.store.query("SELECT at FROM login_failures WHERE key=? AND at>? ORDER BY at DESC LIMIT ?",
                                    (key, now - LOGIN_WINDOW_S, LOGIN_LIMIT))
            if len(rows) >= LOGIN_LIMIT:
                wait = max(wait, rows[-1]["at"] + LOGIN_WINDOW_S - now)
        return math.ceil(wait)

    def login_failed(self, name: str, address: str) -> None:
        now = time.time()
        with self.store.connect() as db:
            db.execute("DELETE FROM login_failures WHERE at<?", (now - LOGIN_WINDOW_S,))
            db.executemany("INSERT INTO login_failures (key, at) VALUES (?,?)", [(f"user:{name}", now), (f"addr:{address}", now)])

    def login_succeeded(self, name: str) -> None:
        with self.store.connect() as db:
            db.execute("DELETE FROM login_failures WHERE key=?", (f"user:{name}",))

    def ensure(self, name: str, password: str, role: str) -> None:
        """Create the user at start-up unless it exists (RADPRESS_ADMIN_USER, the demo user)."""
        if name and self.get(name) is None:
            self.add(name, password, role)
