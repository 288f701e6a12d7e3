"""Users and roles: who may look, download, upload and change the clinic's policy."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

from werkzeug.security import check_password_hash, generate_password_hash

from .errors import InvalidOptionError
from .store import Store, StoreError

__all__ = ["ROLES", "PERMISSIONS", "User", "Users", "allowed"]

ROLES = ("admin", "radiologist", "demo")
# admin: everything; radiologist: view, compare, download; demo: read-only, sample studies only.
PERMISSIONS = {
    "view": {"admin", "radiologist", "demo"},
    "download": {"admin", "radiologist", "demo"},
    "upload": {"admin"},
    "policy": {"admin"},
    "users": {"admin"},
    "jobs": {"admin"},
}
DEMO_USER = "demo"


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def sees_only_demo(self) -> bool:
        return self.role == "demo"


_VERIFIED: dict[tuple[str, str], None] = {}


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

    def remove(self, name: str) -> None:
        with self.store.connect() as db:
            if not db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount:
                raise StoreError(f"No user {name!r}.")

    def list(self) -> list[User]:
        return [User(r["name"], r["role"]) for r in self.store.query("SELECT name, role FROM users ORDER BY name")]

    def get(self, name: str) -> User | None:
        rows = self.store.query("SELECT name, role FROM users WHERE name=?", (name,))
        return User(rows[0]["name"], rows[0]["role"]) if rows else None

    def authenticate(self, name: str, password: str) -> User | None:
        rows = self.store.query("SELECT * FROM users WHERE name=?", (name or "",))
        if rows and _verified(rows[0]["password_hash"], password or ""):
            return User(rows[0]["name"], rows[0]["role"])
        return None

    def ensure(self, name: str, password: str, role: str) -> None:
        """Create the user at start-up unless it exists (RADPRESS_ADMIN_USER, the demo user)."""
        if name and self.get(name) is None:
            self.add(name, password, role)
