"""The archive on disk: files under a data directory and a SQLite index (WAL).

Every file is written under a temporary name, fsynced and renamed into
place; its index row is committed only afterwards, so a crash leaves at worst
an orphan file (found by :meth:`Store.check`), never a row that points at
nothing.  Originals are never modified or deleted (but for strategy 5, which
replaces one by its checked lossless master: :mod:`core.master`), and their
file names come from a hash of the validated SOP Instance UID, never from
DICOM text.  Rows keep each file's path, so archives written with an older
layout still read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pydicom.dataset import Dataset

from .errors import InvalidOptionError, RadPressError
from .files import atomic_writer, fsync_dir
from .pixels import PixelSpec, read_dataset
from .validate import check_uid, is_image
from .policy import Policy, get_strategy

__all__ = ["Store", "Artifact", "StoreError", "sha256_file", "uid_key"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    patient_key TEXT PRIMARY KEY, patient_id TEXT, name TEXT, birth_date TEXT);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY, patient_key TEXT REFERENCES patients, date TEXT, description TEXT,
    accession TEXT, strategy INTEGER, created REAL, demo INTEGER DEFAULT 0, ratio REAL);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY, study_uid TEXT REFERENCES studies, modality TEXT, number INTEGER,
    description TEXT, body_part TEXT);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY, series_uid TEXT REFERENCES series, sop_class TEXT, number INTEGER,
    rows INTEGER, columns INTEGER, frames INTEGER, samples INTEGER, bits_allocated INTEGER, bits_stored INTEGER,
    photometric TEXT, transfer_syntax TEXT, uncompressed_bytes INTEGER, lossy INTEGER, created REAL);
CREATE TABLE IF NOT EXISTS artifacts (
    sop_uid TEXT REFERENCES instances, variant TEXT, ratio REAL NOT NULL DEFAULT 0, codec TEXT,
    transfer_syntax TEXT, bytes INTEGER, checksum TEXT, path TEXT, created REAL,
    achieved_ratio REAL, PRIMARY KEY (sop_uid, variant, ratio));
CREATE TABLE IF NOT EXISTS conflicts (
    sop_uid TEXT, checksum TEXT, path TEXT, source TEXT, created REAL, PRIMARY KEY (sop_uid, checksum));
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, study_uid TEXT, state TEXT, total INTEGER DEFAULT 0,
    done INTEGER DEFAULT 0, failed INTEGER DEFAULT 0, bytes INTEGER DEFAULT 0, params TEXT, message TEXT,
    created REAL, started REAL, finished REAL, cancel INTEGER DEFAULT 0, peak_rss_mb REAL DEFAULT 0);
CREATE TABLE IF NOT EXISTS job_items (
    job_id INTEGER REFERENCES jobs, sop_uid TEXT, state TEXT, error TEXT, PRIMARY KEY (job_id, sop_uid));
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL, user TEXT, what TEXT, old TEXT, new TEXT);
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password_hash TEXT, role TEXT, created REAL);
CREATE TABLE IF NOT EXISTS demo_instances (sop_uid TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS study_readers (study_uid TEXT, user TEXT, PRIMARY KEY (study_uid, user));
CREATE TABLE IF NOT EXISTS sessions (digest TEXT PRIMARY KEY, user TEXT, created REAL);
CREATE TABLE IF NOT EXISTS login_failures (key TEXT, at REAL);
CREATE TABLE IF NOT EXISTS masters (
    sop_uid TEXT PRIMARY KEY, state TEXT, reason TEXT, codec TEXT, transfer_syntax TEXT, original_transfer_syntax TEXT,
    original_bytes INTEGER, original_checksum TEXT, pixel_digest TEXT, checked_by TEXT, created REAL);
CREATE TABLE IF NOT EXISTS access_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL, user TEXT, role TEXT, action TEXT, study_uid TEXT, sop_uid TEXT, address TEXT);
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures(key, at);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS studies_date ON studies(date);
CREATE INDEX IF NOT EXISTS studies_accession ON studies(accession);
CREATE INDEX IF NOT EXISTS studies_description ON studies(description COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS patients_name ON patients(name COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS patients_id ON patients(patient_id);
CREATE INDEX IF NOT EXISTS patients_birth_date ON patients(birth_date);
CREATE INDEX IF NOT EXISTS studies_patient ON studies(patient_key);
"""

# Changes to tables that already exist, applied in order once each: the index
# records how many ran in PRAGMA user_version.  Append only; never edit an
# entry that has shipped.  An INSERT into a table that gains a column here
# must name its columns.
MIGRATIONS: tuple[str, ...] = (
    "ALTER TABLE job_items ADD COLUMN warning TEXT",  # a lossy copy that missed its target ratio
    "ALTER TABLE studies ADD COLUMN lossy_codec TEXT",  # the codec a per-study ratio was chosen for
    "ALTER TABLE jobs ADD COLUMN owner TEXT",  # the runner (host:pid:token) holding a running job's lease
    "ALTER TABLE jobs ADD COLUMN lease REAL",  # when that lease ends unless renewed
    "ALTER TABLE instances ADD COLUMN lossy_ratio REAL",  # an already-lossy original: its cumulative ratio
    "ALTER TABLE instances ADD COLUMN lossy_methods TEXT",  # and its Lossy Image Compression Methods (\\-joined)
    "ALTER TABLE patients ADD COLUMN sex TEXT",  # Patient's Sex (0010,0040), for the Studies list
    "ALTER TABLE conflicts ADD COLUMN reason TEXT",  # what differs from the stored original (core.housekeeping), JSON
    "ALTER TABLE instances ADD COLUMN signed INTEGER",  # Pixel Representation (0028,0103): which lossless codec can take it
)


log = logging.getLogger(__name__)

# A file without a live owner that nobody wrote for this long is abandoned (writers rename, then commit a row).
QUIET_SECONDS = 600
WRITE_WAIT_S = 30  # seconds a write transaction waits for this process's others, as long as for another process's

_INSERT_ARTIFACT = ("INSERT OR REPLACE INTO artifacts (sop_uid, variant, ratio, codec, transfer_syntax, bytes, checksum, "
                    "path, created, achieved_ratio) VALUES (?,?,?,?,?,?,?,?,?,?)")


def index_journal() -> str:
    """RADPRESS_INDEX_JOURNAL: WAL (default; every process on the index's host) or DELETE, for an archive whose Celery
    workers on other machines open it over NFS (WAL's shared memory does not cross hosts)."""
    journal = os.environ.get("RADPRESS_INDEX_JOURNAL", "WAL").upper()
    if journal not in ("WAL", "DELETE"):
        raise InvalidOptionError(f"RADPRESS_INDEX_JOURNAL={journal!r} is not a journal mode the index uses.",
                                 hint="Use WAL (one host) or DELETE (workers on other hosts, over NFS).")
    return journal


class StoreError(RadPressError):
    http_status = 404


@dataclass(frozen=True)
class Artifact:
    sop_uid: str
    variant: str
    ratio: float
    codec: str
    transfer_syntax: str
    bytes: int
    checksum: str
    path: Path
    achieved_ratio: float | None


def uid_key(uid: str) -> str:
    """The name the archive files an instance under: a hash of its validated UID, never the DICOM text itself."""
    return hashlib.sha256(check_uid(uid, "SOP Instance UID (0008,0018)").encode("ascii")).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


class Store:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        for sub in ("originals", "artifacts", "conflicts", "tmp", "cache"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "index.sqlite"
        self._local = threading.local()
        self._writer = threading.RLock()
        conn = self._connection()
        conn.executescript(SCHEMA)
        self._migrate(conn)
        self._private()

    def _private(self) -> None:
        """The index (password hashes, patient names) and the images are for the service user only: 0700 / 0600."""
        self.root.chmod(0o700)
        for path in self.root.iterdir():
            path.chmod(0o700 if path.is_dir() else 0o600)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring an index made by an earlier RadPress up to :data:`MIGRATIONS`."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for statement in MIGRATIONS[version:]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={len(MIGRATIONS)}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- database -------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            journal = index_journal()
            conn.execute(f"PRAGMA journal_mode={journal}")
            conn.execute(f"PRAGMA synchronous={'NORMAL' if journal == 'WAL' else 'FULL'}")
            conn.execute("PRAGMA foreign_keys=OFF")
            conn.create_function("casefold", 1, _casefold, deterministic=True)  # SQLite's lower() folds ASCII only
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A transaction: committed on success, rolled back on error.

        This process's threads take turns on a lock first, each woken the moment the one before commits; in
        SQLite's busy handler they would poll with sleeps growing to 100 ms (other processes still wait there).
        """
        conn = self._connection()
        queued = self._writer.acquire(timeout=WRITE_WAIT_S)  # after that, SQLite's own wait (and its error)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if queued:
                self._writer.release()

    def query(self, sql: str, params=()) -> list[sqlite3.Row]:
        return self._connection().execute(sql, params).fetchall()

    # -- paths ------------------------------------------------------------------
    def tmp_path(self, suffix: str = "") -> Path:
        """A staging name no other writer uses; the owner's pid in it tells :meth:`check` whether it is in flight."""
        return self.root / "tmp" / f"{time.time_ns()}-{os.getpid()}-{threading.get_ident()}{suffix}"

    def original_path(self, sop_uid: str) -> Path:
        key = uid_key(sop_uid)
        return self.root / "originals" / key[:2] / f"{key}.dcm"

    def artifact_path(self, sop_uid: str, variant: str, ratio: float, codec: str) -> Path:
        key = uid_key(sop_uid)
        tag = f"{variant}-{ratio:g}" if ratio else variant
        name = f"{tag}.png" if variant == "thumbnail" else f"{tag}.mp4" if variant == "cine" else f"{tag}.{codec}.dcm"
        return self.root / "artifacts" / key[:2] / key / name

    def conflict_path(self, sop_uid: str, checksum: str) -> Path:
        return self.root / "conflicts" / f"{uid_key(sop_uid)}.{checksum}.dcm"

    # -- originals --------------------------------------------------------------
    def add_original(self, staged: Path, ds: Dataset, source: str, checksum: str | None = None) -> str:
        """Move a staged, validated file into the archive; returns stored / duplicate / conflict.

        The file is linked at its place first (fsynced, never over another
        file: whoever links first holds the place), outside the write lock, so
        the lock is held for the rows only.  Deciding is one write transaction:
        two uploads of one SOP Instance UID cannot both be "stored", and the
        file kept is the one whose row was committed.  *checksum*: the staged
        file's SHA-256 when its writer hashed it on the way in.
        """
        sop_uid = check_uid(_text(ds, "SOPInstanceUID"), "SOP Instance UID (0008,0018)")
        checksum = checksum or sha256_file(staged)
        target = self.original_path(sop_uid)
        try:
            rows = _original_rows(ds, checksum, target, staged.stat().st_size)  # the bytes of the file placed
            placed = _place_if_free(staged, target)
            with self.connect() as db:
                row = db.execute("SELECT checksum, path FROM artifacts WHERE sop_uid=? AND variant='original'", (sop_uid,)).fetchone()
                if row is None and placed:
                    try:
                        self._index_original(db, target, ds, checksum, rows)
                    except BaseException:
                        target.unlink()  # never acknowledged: the transaction rolls back with it
                        raise
                    return "stored"
                if row is not None and placed:
                    if Path(row["path"]) == target and row["checksum"] == checksum:
                        return "stored"  # a concurrent ingest of these bytes found our file first and indexed it
                    target.unlink()  # the place was free, yet the original is stored elsewhere: not ours to fill
                if row is None and target.exists():  # placed by an ingest not committed yet, or just before a crash
                    self._index_original(db, target, read_dataset(target), sha256_file(target))
                    row = db.execute("SELECT checksum FROM artifacts WHERE sop_uid=? AND variant='original'", (sop_uid,)).fetchone()
                if row is None:  # its file vanished between our attempt and the lock
                    _place_new(staged, target)
                    try:
                        self._index_original(db, target, ds, checksum, rows)
                    except BaseException:
                        target.unlink()
                        raise
                    return "stored"
                if row["checksum"] == checksum or db.execute(
                        "SELECT 1 FROM conflicts WHERE sop_uid=? AND checksum=?", (sop_uid, checksum)).fetchone() or db.execute(
                        "SELECT 1 FROM masters WHERE sop_uid=? AND state='master' AND original_checksum=?",  # strategy 5
                        (sop_uid, checksum)).fetchone():
                    return "duplicate"
                target = self.conflict_path(sop_uid, checksum)
                if not target.exists():  # else these very bytes were placed just before a crash
                    _place_new(staged, target)
                db.execute("INSERT INTO conflicts (sop_uid, checksum, path, source, created) VALUES (?,?,?,?,?)",
                           (sop_uid, checksum, str(target), source, time.time()))
                return "conflict"
        finally:
            staged.unlink(missing_ok=True)

    def _index_original(self, db: sqlite3.Connection, target: Path, ds: Dataset, checksum: str,
                        rows: list[tuple[str, tuple]] | None = None) -> None:
        """The rows of an original placed at *target*, inside the caller's transaction (*rows*: made beforehand by
        :func:`_original_rows`, so the write lock is held for the statements only)."""
        for sql, params in rows or _original_rows(ds, checksum, target, target.stat().st_size):
            db.execute(sql, params)

    # -- artifacts --------------------------------------------------------------
    def put_artifact(self, sop_uid: str, variant: str, ratio: float, codec: str, transfer_syntax: str,
                     data: bytes, achieved_ratio: float | None = None) -> Artifact:
        _refuse_original(variant)
        path = self.artifact_path(sop_uid, variant, ratio, codec)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as fh:
            fh.write(data)
        return self._index_artifact(sop_uid, variant, ratio, codec, transfer_syntax, path, achieved_ratio,
                                    (len(data), hashlib.sha256(data).hexdigest()))

    def put_artifact_file(self, sop_uid: str, variant: str, ratio: float, codec: str, transfer_syntax: str,
                          staged: Path, achieved_ratio: float | None = None) -> Artifact:
        """Like :meth:`put_artifact` for a file already written (fsynced) elsewhere on this file system."""
        _refuse_original(variant)
        path = self.artifact_path(sop_uid, variant, ratio, codec)
        path.parent.mkdir(parents=True, exist_ok=True)
        _place(staged, path)
        return self._index_artifact(sop_uid, variant, ratio, codec, transfer_syntax, path, achieved_ratio)

    def _index_artifact(self, sop_uid, variant, ratio, codec, transfer_syntax, path: Path, achieved_ratio,
                        written: tuple[int, str] | None = None) -> Artifact:
        """*written*: the size and checksum of the bytes just written, else read from the file."""
        size, checksum = written or (path.stat().st_size, sha256_file(path))
        with self.connect() as db:
            if not db.execute("SELECT 1 FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone():
                path.unlink(missing_ok=True)  # deleted while this copy was made (core.housekeeping): nothing may bring it back
                raise StoreError(f"Instance {sop_uid} was deleted while its {variant} copy was made.")
            replaced = db.execute("SELECT path FROM artifacts WHERE sop_uid=? AND variant=? AND ratio=?",
                                  (sop_uid, variant, ratio)).fetchone()
            db.execute(_INSERT_ARTIFACT,
                       (sop_uid, variant, ratio, codec, transfer_syntax, size, checksum, str(path), time.time(), achieved_ratio))
        if replaced and Path(replaced["path"]) != path:  # the same copy in another codec (the policy changed): its file goes too
            Path(replaced["path"]).unlink(missing_ok=True)
        return Artifact(sop_uid, variant, ratio, codec, transfer_syntax, size, checksum, path, achieved_ratio)

    def remove_artifact(self, artifact: Artifact) -> None:
        if artifact.variant == "original":
            raise InvalidOptionError("Originals are never deleted.")
        with self.connect() as db:
            db.execute("DELETE FROM artifacts WHERE sop_uid=? AND variant=? AND ratio=?", (artifact.sop_uid, artifact.variant, artifact.ratio))
        artifact.path.unlink(missing_ok=True)

    def artifacts(self, sop_uid: str | None = None, study_uid: str | None = None) -> list[Artifact]:
        if study_uid is not None:
            rows = self.query(
                "SELECT a.* FROM artifacts a JOIN instances i USING (sop_uid) JOIN series s USING (series_uid) "
                "WHERE s.study_uid=? ORDER BY a.sop_uid", (study_uid,))
        elif sop_uid is not None:
            rows = self.query("SELECT * FROM artifacts WHERE sop_uid=?", (sop_uid,))
        else:
            rows = self.query("SELECT * FROM artifacts")
        return [_artifact(r) for r in rows]

    def artifact(self, sop_uid: str, variant: str, ratio: float = 0) -> Artifact | None:
        rows = self.query("SELECT * FROM artifacts WHERE sop_uid=? AND variant=? AND ratio=?", (sop_uid, variant, ratio))
        return _artifact(rows[0]) if rows else None

    # -- reading the index ------------------------------------------------------
    def instance(self, sop_uid: str) -> sqlite3.Row:
        rows = self.query(
            "SELECT i.*, s.study_uid, s.modality, s.body_part, s.description AS series_description, "
            "st.description AS study_description, st.ratio AS study_ratio, st.lossy_codec AS study_codec, st.patient_key FROM instances i JOIN series s USING (series_uid) "
            "JOIN studies st USING (study_uid) WHERE i.sop_uid=?", (sop_uid,))
        if not rows:
            raise StoreError(f"No instance with SOP Instance UID {sop_uid} in the archive.")
        return rows[0]

    def instances(self, study_uid: str | None) -> list[sqlite3.Row]:
        """A study's instances in display order; every study's (ordered by study) when *study_uid* is None."""
        return self.query(
            "SELECT i.*, s.study_uid, s.modality, s.body_part, s.description AS series_description, "
            "st.description AS study_description, st.ratio AS study_ratio, st.lossy_codec AS study_codec, p.name AS patient_name, p.patient_id FROM instances i "
            "JOIN series s USING (series_uid) JOIN studies st USING (study_uid) JOIN patients p USING (patient_key) "
            + ("WHERE s.study_uid=? " if study_uid is not None else "")
            + "ORDER BY s.study_uid, s.number, s.series_uid, i.number, i.sop_uid", (study_uid,) if study_uid is not None else ())

    def study(self, study_uid: str) -> sqlite3.Row:
        rows = self.query(
            "SELECT st.*, p.name AS patient_name, p.patient_id FROM studies st JOIN patients p USING (patient_key) "
            "WHERE study_uid=?", (study_uid,))
        if not rows:
            raise StoreError(f"No study with Study Instance UID {study_uid} in the archive.")
        return rows[0]

    def studies(self) -> list[sqlite3.Row]:
        return self.query(
            "SELECT st.*, p.name AS patient_name, p.patient_id, p.birth_date, p.sex, "
            "(SELECT group_concat(DISTINCT modality) FROM series s WHERE s.study_uid = st.study_uid) AS modalities, "
            "(SELECT count(*) FROM series s WHERE s.study_uid = st.study_uid) AS series, "
            "(SELECT count(*) FROM instances i JOIN series s USING (series_uid) WHERE s.study_uid = st.study_uid) AS instances, "
            "(SELECT count(*) FROM instances i JOIN series s USING (series_uid) WHERE s.study_uid = st.study_uid "
            " AND i.lossy) AS lossy_originals, "  # originals that were already lossy when they came in
            "(SELECT min(a.achieved_ratio) FROM artifacts a JOIN instances i USING (sop_uid) JOIN series s USING (series_uid) "
            " WHERE s.study_uid = st.study_uid AND a.variant = 'lossy') AS lossy_ratio_min, "  # achieved, not requested
            "(SELECT max(a.achieved_ratio) FROM artifacts a JOIN instances i USING (sop_uid) JOIN series s USING (series_uid) "
            " WHERE s.study_uid = st.study_uid AND a.variant = 'lossy') AS lossy_ratio_max "
            "FROM studies st JOIN patients p USING (patient_key) ORDER BY st.date DESC, st.study_uid")

    # -- policy -----------------------------------------------------------------
    def policy(self) -> Policy:
        rows = self.query("SELECT value FROM settings WHERE key='policy'")
        return Policy.stored(json.loads(rows[0]["value"])) if rows else Policy()

    def set_policy(self, policy: Policy, user: str = "system") -> None:
        old = self.policy()
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES ('policy', ?)", (json.dumps(policy.validated().to_dict()),))
            db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                       (time.time(), user, "policy", json.dumps(old.to_dict()), json.dumps(policy.to_dict())))

    def study_strategy(self, study_uid: str, policy: Policy | None = None) -> int:
        """The study's own strategy, else the policy's for its modality (Policy.strategy_for), else the clinic's."""
        override = self.study(study_uid)["strategy"]
        return int(override) if override else (policy or self.policy()).strategy_for(self.study_modalities(study_uid))

    def study_modalities(self, study_uid: str) -> dict[str, int]:
        """Instances with pixels per modality: what a per-modality policy goes by."""
        rows = self.query("SELECT s.modality, count(*) AS n FROM instances i JOIN series s USING (series_uid) "
                          "WHERE s.study_uid=? AND i.rows > 0 GROUP BY s.modality", (study_uid,))
        return {r["modality"] or "": r["n"] for r in rows}

    def set_study_strategy(self, study_uid: str, strategy: int | None, user: str = "system") -> None:
        if strategy is not None:
            get_strategy(strategy)
        old = self.study(study_uid)["strategy"]
        with self.connect() as db:
            db.execute("UPDATE studies SET strategy=? WHERE study_uid=?", (strategy, study_uid))
            db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                       (time.time(), user, f"strategy of study {study_uid}", json.dumps(old), json.dumps(strategy)))

    def set_study_ratio(self, study_uid: str, ratio: float | None, user: str = "system", codec: str | None = None) -> None:
        """A per-study lossy ratio, with the codec it was chosen for, overriding the clinic's (None: follow them)."""
        from .codecs import check_ratio, get_codec

        if ratio is not None:
            ratio = check_ratio(float(ratio), True)
        if codec is not None:
            get_codec(codec, True)
        old = self.study(study_uid)
        with self.connect() as db:
            db.execute("UPDATE studies SET ratio=?, lossy_codec=? WHERE study_uid=?", (ratio, codec if ratio else None, study_uid))
            db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                       (time.time(), user, f"lossy ratio of study {study_uid}", json.dumps([old["lossy_codec"], old["ratio"]]),
                        json.dumps([codec, ratio])))

    # -- consistency ------------------------------------------------------------
    def check(self, verify: bool = False) -> dict:
        """Repair after a crash; safe while other processes use the archive.

        Rows whose derived file vanished are dropped.  Originals are compared
        with the index (size; the SHA-256 too with *verify*) and a vanished or
        replaced one is reported, never "repaired".  A temporary file is
        removed only when its owner process (pid in its name) is gone, or,
        without a pid, when nobody wrote it for :data:`QUIET_SECONDS`; a
        derived file no row names likewise.  An original without a row was
        placed just before a crash (or by an ingest committing right now): it is
        indexed unless its row appeared meanwhile, and never deleted.
        """
        report = {key: [] for key in ("orphan_files", "missing_files", "missing_originals", "replaced_originals",
                                      "reindexed_originals", "unindexed_originals", "in_flight",
                                      "mastered_originals_removed", "master_mismatches")}
        known = set()
        for row in self.query("SELECT * FROM artifacts"):
            path = Path(row["path"])
            known.add(path)
            if row["variant"] == "original":
                self._check_original(row, path, verify, report)
            elif not path.exists():
                report["missing_files"].append(str(path))
                with self.connect() as db:
                    db.execute("DELETE FROM artifacts WHERE sop_uid=? AND variant=? AND ratio=? AND path=?",
                               (row["sop_uid"], row["variant"], row["ratio"], row["path"]))
        known |= {Path(r["path"]) for r in self.query("SELECT path FROM conflicts")}
        now = time.time()
        for sub in ("originals", "artifacts", "tmp"):
            for path in sorted((self.root / sub).rglob("*")):
                if not path.is_file() or path in known:
                    continue
                owner = _owner_pid(path)
                if sub == "originals" and path.suffix == ".dcm":
                    self._reindex(path, report)  # decided under the write lock, so safe beside a live ingest
                elif _alive(owner) if owner is not None else _recent(path, now):
                    report["in_flight"].append(str(path))
                else:
                    report["orphan_files"].append(str(path))
                    path.unlink(missing_ok=True)
        if verify:  # strategy 5: each lossless master still decodes (independently) to its original's pixels
            from .master import verify_masters

            report["master_mismatches"] = verify_masters(self)
        for key in ("missing_originals", "replaced_originals", "unindexed_originals", "master_mismatches"):
            for item in report[key]:
                log.error("archive check: %s: %s", key.replace("_", " "), item)
        return report

    def _check_original(self, row: sqlite3.Row, path: Path, verify: bool, report: dict) -> None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            report["missing_originals"].append(row["sop_uid"])
            return
        if size != row["bytes"] or verify and sha256_file(path) != row["checksum"]:
            report["replaced_originals"].append(row["sop_uid"])

    def _reindex(self, path: Path, report: dict) -> None:
        """Index an original found without a row, unless it fails ingest's checks or its UID is taken."""
        from .validate import read_checked

        try:
            ds = read_checked(path)
        except RadPressError as exc:
            report["unindexed_originals"].append(f"{path}: {exc}")
            return
        checksum = sha256_file(path)
        with self.connect() as db:  # decided under the write lock: a concurrent ingest may have just committed it
            taken = db.execute("SELECT path FROM artifacts WHERE variant='original' AND (sop_uid=? OR path=?)",
                               (str(ds.SOPInstanceUID), str(path))).fetchone()
            if taken is None:
                self._index_original(db, path, ds, checksum)
                report["reindexed_originals"].append(str(path))
            elif Path(taken["path"]) != path and _leftover_of_master(db, ds, path, checksum):
                report["mastered_originals_removed"].append(str(path))  # a crash came between the switch and the unlink
            elif Path(taken["path"]) != path:
                report["unindexed_originals"].append(f"{path}: its SOP Instance UID is stored at {taken['path']}")


_NO_IMAGE = PixelSpec(rows=0, columns=0, samples=0, bits_allocated=0, bits_stored=0, signed=False, photometric="", frames=0)


def _casefold(text):
    """Patient names match case-insensitively in every script (MÜLLER finds Müller; SQLite's LIKE folds ASCII only)."""
    return text.casefold() if isinstance(text, str) else text


def _leftover_of_master(db: sqlite3.Connection, ds: Dataset, path: Path, checksum: str) -> bool:
    from .master import leftover_original

    return leftover_original(db, str(ds.SOPInstanceUID), path, checksum)


def _refuse_original(variant: str) -> None:
    if variant == "original":
        raise InvalidOptionError("Originals are added by ingest, never replaced.")


def _int(value) -> int | None:
    """An IS value for an INTEGER column; None when it is not a number SQLite can hold."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if -(1 << 63) <= number < 1 << 63 else None


def _original_rows(ds: Dataset, checksum: str, target: Path, size: int) -> list[tuple[str, tuple]]:
    """The statements that index an original stored at *target* (*size* bytes): patient, study, series, instance,
    artifact."""
    from .derive import lossy_history
    from .pixels import pixel_spec

    sop_uid = _text(ds, "SOPInstanceUID")
    spec = pixel_spec(ds) if is_image(ds) else _NO_IMAGE  # a report, plan, PDF ...: rows 0, nothing to compress
    now = time.time()
    patient_key = f"{_text(ds, 'PatientID')}|{_text(ds, 'PatientName')}"
    return [
        ("INSERT OR IGNORE INTO patients (patient_key, patient_id, name, birth_date, sex) VALUES (?,?,?,?,?)",
         (patient_key, _text(ds, "PatientID"), _text(ds, "PatientName"), _text(ds, "PatientBirthDate"),
          _text(ds, "PatientSex"))),
        ("INSERT OR IGNORE INTO studies (study_uid, patient_key, date, description, accession, strategy, created, "
         "demo, ratio) VALUES (?,?,?,?,?,NULL,?,0,NULL)",
         (_text(ds, "StudyInstanceUID"), patient_key, _text(ds, "StudyDate"), _text(ds, "StudyDescription"),
          _text(ds, "AccessionNumber"), now)),
        ("INSERT OR IGNORE INTO series (series_uid, study_uid, modality, number, description, body_part) "
         "VALUES (?,?,?,?,?,?)",
         (_text(ds, "SeriesInstanceUID"), _text(ds, "StudyInstanceUID"), _text(ds, "Modality"),
          _int(ds.get("SeriesNumber")), _text(ds, "SeriesDescription"), _text(ds, "BodyPartExamined"))),
        ("INSERT INTO instances (sop_uid, series_uid, sop_class, number, rows, columns, frames, samples, "
         "bits_allocated, bits_stored, photometric, transfer_syntax, uncompressed_bytes, lossy, lossy_ratio, "
         "lossy_methods, created, signed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
         (sop_uid, _text(ds, "SeriesInstanceUID"), _text(ds, "SOPClassUID"), _int(ds.get("InstanceNumber")),
          spec.rows, spec.columns, spec.frames, spec.samples, spec.bits_allocated, spec.bits_stored,
          _text(ds, "PhotometricInterpretation"), str(ds.file_meta.TransferSyntaxUID),
          spec.frame_bytes * spec.frames, *lossy_history(ds).to_index(), now, int(spec.signed))),
        (_INSERT_ARTIFACT.replace("INSERT OR REPLACE", "INSERT"),
         (sop_uid, "original", 0, "", str(ds.file_meta.TransferSyntaxUID), size, checksum, str(target), now, None)),
    ]


def _artifact(row: sqlite3.Row) -> Artifact:
    return Artifact(row["sop_uid"], row["variant"], row["ratio"], row["codec"], row["transfer_syntax"], row["bytes"],
                    row["checksum"], Path(row["path"]), row["achieved_ratio"])


def _place_new(staged: Path, target: Path) -> None:
    """fsync a staged file and link it at *target*, which must not exist (FileExistsError): nothing is overwritten.

    A *target* on another file system (originals on their own volume) gets a
    complete copy beside it first, linked the same way.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _fsync_file(staged)
    try:
        os.link(staged, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        copy = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.part")
        try:
            with open(staged, "rb") as src, open(copy, "xb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.link(copy, target)
        finally:
            copy.unlink(missing_ok=True)
    fsync_dir(target.parent)


def _place_if_free(staged: Path, target: Path) -> bool:
    """:func:`_place_new`, False instead of an error when a file is already at *target*."""
    if target.exists():  # the usual duplicate or conflict: no copy made only to be refused
        return False
    try:
        _place_new(staged, target)
    except FileExistsError:
        return False
    return True


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


_PID_IN_NAME = (re.compile(r"^\d+-(\d+)-"), re.compile(r"\.(\d+)-[^.]+\.part$"))


def _owner_pid(path: Path) -> int | None:
    """The writer's pid in a staging name (:meth:`Store.tmp_path`, :func:`core.files.atomic_writer`)."""
    for pattern in _PID_IN_NAME:
        match = pattern.search(path.name)
        if match:
            return int(match.group(1))
    return None


def _alive(pid: int) -> bool:
    """Running: a zombie (exited, not yet reaped by a parent that died too) has written its last."""
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, run by another user
        pass
    return True


def _recent(path: Path, now: float) -> bool:
    try:
        return now - path.stat().st_mtime < QUIET_SECONDS
    except FileNotFoundError:
        return True  # gone meanwhile: its writer finished


def _place(staged: Path, target: Path) -> None:
    """fsync a staged file and rename it into place (same file system)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(staged, "rb+") as fh:
        os.fsync(fh.fileno())
    try:
        os.replace(staged, target)
    except OSError:
        with atomic_writer(target) as out, open(staged, "rb") as src:
            shutil.copyfileobj(src, out)
        staged.unlink(missing_ok=True)
