"""The archive on disk: files under a data directory and a SQLite index (WAL).

Every file is written under a temporary name, fsynced and renamed into
place; its index row is committed only afterwards, so a crash leaves at worst
an orphan file (found and removed by :meth:`Store.check`), never a row that
points at nothing.  Originals are never modified or deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pydicom.dataset import Dataset

from .errors import InvalidOptionError, RadPressError
from .files import atomic_writer
from .policy import Policy, get_strategy

__all__ = ["Store", "Artifact", "StoreError", "sha256_file"]

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
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
"""

# Changes to tables that already exist, applied in order once each: the index
# records how many ran in PRAGMA user_version.  Append only; never edit an
# entry that has shipped.  An INSERT into a table that gains a column here
# must name its columns.
MIGRATIONS: tuple[str, ...] = ()


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
        conn = self._connection()
        conn.executescript(SCHEMA)
        self._migrate(conn)

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
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=OFF")
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A transaction: committed on success, rolled back on error."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def query(self, sql: str, params=()) -> list[sqlite3.Row]:
        return self._connection().execute(sql, params).fetchall()

    # -- paths ------------------------------------------------------------------
    def tmp_path(self, suffix: str = "") -> Path:
        return self.root / "tmp" / f"{time.time_ns()}-{os.getpid()}-{threading.get_ident()}{suffix}"

    def original_path(self, sop_uid: str) -> Path:
        return self.root / "originals" / sop_uid[-2:] / f"{sop_uid}.dcm"

    def artifact_path(self, sop_uid: str, variant: str, ratio: float, codec: str) -> Path:
        tag = f"{variant}-{ratio:g}" if ratio else variant
        name = f"{tag}.png" if variant == "thumbnail" else f"{tag}.{codec}.dcm"
        return self.root / "artifacts" / sop_uid[-2:] / sop_uid / name

    # -- originals --------------------------------------------------------------
    def add_original(self, staged: Path, ds: Dataset, source: str) -> str:
        """Move a staged, validated file into the archive; returns stored / duplicate / conflict."""
        sop_uid = _text(ds, "SOPInstanceUID")
        checksum = sha256_file(staged)
        existing = self.query("SELECT checksum FROM artifacts WHERE sop_uid=? AND variant='original'", (sop_uid,))
        if existing:
            if existing[0]["checksum"] == checksum:
                staged.unlink(missing_ok=True)
                return "duplicate"
            if self.query("SELECT 1 FROM conflicts WHERE sop_uid=? AND checksum=?", (sop_uid, checksum)):
                staged.unlink(missing_ok=True)
                return "duplicate"
            target = self.root / "conflicts" / f"{sop_uid}.{checksum[:12]}.dcm"
            _place(staged, target)
            with self.connect() as db:
                db.execute("INSERT OR IGNORE INTO conflicts VALUES (?,?,?,?,?)", (sop_uid, checksum, str(target), source, time.time()))
            return "conflict"

        target = self.original_path(sop_uid)
        _place(staged, target)
        self._index_original(target, ds, checksum)
        return "stored"

    def _index_original(self, target: Path, ds: Dataset, checksum: str) -> None:
        from .derive import is_marked_lossy
        from .pixels import pixel_spec

        sop_uid = _text(ds, "SOPInstanceUID")
        spec = pixel_spec(ds)
        now = time.time()
        patient_key = f"{_text(ds, 'PatientID')}|{_text(ds, 'PatientName')}"
        with self.connect() as db:
            db.execute("INSERT OR IGNORE INTO patients VALUES (?,?,?,?)",
                       (patient_key, _text(ds, "PatientID"), _text(ds, "PatientName"), _text(ds, "PatientBirthDate")))
            db.execute("INSERT OR IGNORE INTO studies VALUES (?,?,?,?,?,NULL,?,0,NULL)",
                       (_text(ds, "StudyInstanceUID"), patient_key, _text(ds, "StudyDate"), _text(ds, "StudyDescription"),
                        _text(ds, "AccessionNumber"), now))
            db.execute("INSERT OR IGNORE INTO series VALUES (?,?,?,?,?,?)",
                       (_text(ds, "SeriesInstanceUID"), _text(ds, "StudyInstanceUID"), _text(ds, "Modality"),
                        _int(ds.get("SeriesNumber")), _text(ds, "SeriesDescription"), _text(ds, "BodyPartExamined")))
            db.execute("INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (sop_uid, _text(ds, "SeriesInstanceUID"), _text(ds, "SOPClassUID"), _int(ds.get("InstanceNumber")),
                        spec.rows, spec.columns, spec.frames, spec.samples, spec.bits_allocated, spec.bits_stored,
                        _text(ds, "PhotometricInterpretation"), str(ds.file_meta.TransferSyntaxUID),
                        spec.frame_bytes * spec.frames, int(is_marked_lossy(ds)), now))
            db.execute("INSERT INTO artifacts VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (sop_uid, "original", 0, "", str(ds.file_meta.TransferSyntaxUID), target.stat().st_size,
                        checksum, str(target), now, None))

    # -- artifacts --------------------------------------------------------------
    def put_artifact(self, sop_uid: str, variant: str, ratio: float, codec: str, transfer_syntax: str,
                     data: bytes, achieved_ratio: float | None = None) -> Artifact:
        _refuse_original(variant)
        path = self.artifact_path(sop_uid, variant, ratio, codec)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as fh:
            fh.write(data)
        return self._index_artifact(sop_uid, variant, ratio, codec, transfer_syntax, path, achieved_ratio)

    def put_artifact_file(self, sop_uid: str, variant: str, ratio: float, codec: str, transfer_syntax: str,
                          staged: Path, achieved_ratio: float | None = None) -> Artifact:
        """Like :meth:`put_artifact` for a file already written (fsynced) elsewhere on this file system."""
        _refuse_original(variant)
        path = self.artifact_path(sop_uid, variant, ratio, codec)
        path.parent.mkdir(parents=True, exist_ok=True)
        _place(staged, path)
        return self._index_artifact(sop_uid, variant, ratio, codec, transfer_syntax, path, achieved_ratio)

    def _index_artifact(self, sop_uid, variant, ratio, codec, transfer_syntax, path: Path, achieved_ratio) -> Artifact:
        size, checksum = path.stat().st_size, sha256_file(path)
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (sop_uid, variant, ratio, codec, transfer_syntax, size, checksum, str(path), time.time(), achieved_ratio))
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
            "st.description AS study_description, st.ratio AS study_ratio, st.patient_key FROM instances i JOIN series s USING (series_uid) "
            "JOIN studies st USING (study_uid) WHERE i.sop_uid=?", (sop_uid,))
        if not rows:
            raise StoreError(f"No instance with SOP Instance UID {sop_uid} in the archive.")
        return rows[0]

    def instances(self, study_uid: str) -> list[sqlite3.Row]:
        return self.query(
            "SELECT i.*, s.study_uid, s.modality, s.body_part, s.description AS series_description, "
            "st.description AS study_description, st.ratio AS study_ratio, p.name AS patient_name, p.patient_id FROM instances i "
            "JOIN series s USING (series_uid) JOIN studies st USING (study_uid) JOIN patients p USING (patient_key) "
            "WHERE s.study_uid=? ORDER BY s.number, s.series_uid, i.number, i.sop_uid", (study_uid,))

    def study(self, study_uid: str) -> sqlite3.Row:
        rows = self.query(
            "SELECT st.*, p.name AS patient_name, p.patient_id FROM studies st JOIN patients p USING (patient_key) "
            "WHERE study_uid=?", (study_uid,))
        if not rows:
            raise StoreError(f"No study with Study Instance UID {study_uid} in the archive.")
        return rows[0]

    def studies(self) -> list[sqlite3.Row]:
        return self.query(
            "SELECT st.*, p.name AS patient_name, p.patient_id, "
            "(SELECT group_concat(DISTINCT modality) FROM series s WHERE s.study_uid = st.study_uid) AS modalities, "
            "(SELECT count(*) FROM instances i JOIN series s USING (series_uid) WHERE s.study_uid = st.study_uid) AS instances "
            "FROM studies st JOIN patients p USING (patient_key) ORDER BY st.date DESC, st.study_uid")

    # -- policy -----------------------------------------------------------------
    def policy(self) -> Policy:
        rows = self.query("SELECT value FROM settings WHERE key='policy'")
        return Policy.from_dict(json.loads(rows[0]["value"])) if rows else Policy()

    def set_policy(self, policy: Policy, user: str = "system") -> None:
        old = self.policy()
        with self.connect() as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES ('policy', ?)", (json.dumps(policy.validated().to_dict()),))
            db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                       (time.time(), user, "policy", json.dumps(old.to_dict()), json.dumps(policy.to_dict())))

    def study_strategy(self, study_uid: str) -> int:
        override = self.study(study_uid)["strategy"]
        return int(override) if override else self.policy().strategy

    def set_study_strategy(self, study_uid: str, strategy: int | None, user: str = "system") -> None:
        if strategy is not None:
            get_strategy(strategy)
        old = self.study(study_uid)["strategy"]
        with self.connect() as db:
            db.execute("UPDATE studies SET strategy=? WHERE study_uid=?", (strategy, study_uid))
            db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                       (time.time(), user, f"strategy of study {study_uid}", json.dumps(old), json.dumps(strategy)))

    def set_study_ratio(self, study_uid: str, ratio: float | None, user: str = "system") -> None:
        """A per-study lossy ratio that overrides the clinic's modality defaults (None: follow them)."""
        from .codecs import check_ratio

        if ratio is not None:
            ratio = check_ratio(float(ratio), True)
        old = self.study(study_uid)["ratio"]
        with self.connect() as db:
            db.execute("UPDATE studies SET ratio=? WHERE study_uid=?", (ratio, study_uid))
            db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                       (time.time(), user, f"lossy ratio of study {study_uid}", json.dumps(old), json.dumps(ratio)))

    # -- consistency ------------------------------------------------------------
    def check(self) -> dict:
        """Remove rows whose file vanished and derived files no row names; index orphan originals.

        An original without a row was placed just before a crash, before its
        row was committed: it is indexed now, never deleted.
        """
        report = {"orphan_files": [], "missing_files": [], "missing_originals": [], "reindexed_originals": []}
        known = set()
        for row in self.query("SELECT * FROM artifacts"):
            path = Path(row["path"])
            known.add(path)
            if not path.exists():
                if row["variant"] == "original":
                    report["missing_originals"].append(row["sop_uid"])
                    continue
                report["missing_files"].append(str(path))
                with self.connect() as db:
                    db.execute("DELETE FROM artifacts WHERE sop_uid=? AND variant=? AND ratio=?", (row["sop_uid"], row["variant"], row["ratio"]))
        known |= {Path(r["path"]) for r in self.query("SELECT path FROM conflicts")}
        for sub in ("originals", "artifacts", "tmp"):
            for path in (self.root / sub).rglob("*"):
                if not path.is_file() or path in known:
                    continue
                if sub == "originals" and path.suffix == ".dcm":
                    from .pixels import read_dataset

                    self._index_original(path, read_dataset(path), sha256_file(path))
                    report["reindexed_originals"].append(str(path))
                    continue
                report["orphan_files"].append(str(path))
                path.unlink(missing_ok=True)
        return report


def _refuse_original(variant: str) -> None:
    if variant == "original":
        raise InvalidOptionError("Originals are added by ingest, never replaced.")


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _artifact(row: sqlite3.Row) -> Artifact:
    return Artifact(row["sop_uid"], row["variant"], row["ratio"], row["codec"], row["transfer_syntax"], row["bytes"],
                    row["checksum"], Path(row["path"]), row["achieved_ratio"])


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
