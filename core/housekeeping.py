"""Housekeeping: deleting a study or a series, and resolving a conflict (one SOP Instance UID, two contents).

These are the only deliberate losses of originals, so each is for administrators
only (:func:`core.users.authorize`, permission ``housekeeping``), asks for
confirmation in every entry point, and is audited with who, what and how much.

Deleting removes the rows and renames every file out of the way in one write
transaction, then unlinks them; a crash in between leaves staging names that
:meth:`core.store.Store.check` removes (their owner's pid is in the name), never
a row without its file or a file the next check would index again.  A job working
on the study is cancelled in the same transaction; a copy a worker finishes
afterwards is refused by the store (its instance is gone), and copies are made
under the instance's lock (:func:`core.archive.make_artifact`), which resolving a
conflict holds while it swaps the original.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import InvalidOptionError, RadPressError, UnsupportedError
from .locks import item_lock
from .store import Store, StoreError, _place_new, sha256_file
from .users import User, authorize
from .validate import check_uid

__all__ = ["Deleted", "delete_study", "delete_series", "conflicts", "conflict_detail", "conflict_preview",
           "resolve_conflict", "note_sender", "RESOLVE_LOCK_TIMEOUT", "REASONS_PER_LIST"]

RESOLVE_LOCK_TIMEOUT = 30.0
REASONS_PER_LIST = 10  # conflicts compared (both files decoded) per listing; the rest on a later one  # waiting for a copy of the instance being made, at most (then 503: try again)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_ATTRIBUTES = 40  # differing attributes listed per conflict


@dataclass(frozen=True)
class Deleted:
    """What a delete removed: the audit entry and the answer of every entry point."""

    study_uid: str
    series_uids: tuple[str, ...]
    instances: int
    files: int
    bytes_freed: int  # originals, copies, conflict copies, codestreams and cached renderings made from them
    study_removed: bool
    jobs_cancelled: tuple[int, ...] = field(default=())

    def to_dict(self) -> dict:
        return asdict(self)


# -- deleting -------------------------------------------------------------------------------------------------------
def delete_study(store: Store, user: User | None, study_uid: str, *, background: bool = False) -> Deleted:
    """Delete a study: its originals, every copy and cache made from them, its index rows; returns what was freed.

    With *background* (a web request) the files, already renamed away and no
    longer indexed, are unlinked by a thread after the answer.
    """
    study_uid = _uid(study_uid, "Study Instance UID")
    authorize(store, user, "housekeeping", study_uid=study_uid)
    return _delete(store, user, study_uid, None, background)


def delete_series(store: Store, user: User | None, study_uid: str, series_uid: str, *, background: bool = False) -> Deleted:
    """Delete one series of a study (the study too when it was its last series)."""
    study_uid, series_uid = _uid(study_uid, "Study Instance UID"), _uid(series_uid, "Series Instance UID")
    authorize(store, user, "housekeeping", study_uid=study_uid)
    if not store.query("SELECT 1 FROM series WHERE series_uid=? AND study_uid=?", (series_uid, study_uid)):
        raise StoreError(f"Study {study_uid} has no series {series_uid}.")
    return _delete(store, user, study_uid, series_uid, background)


def _uid(value, what: str) -> str:
    """A UID from a URL or a command line; anything else is refused before it reaches the index."""
    try:
        return check_uid(value, what)
    except RadPressError as exc:
        raise InvalidOptionError(exc.message, hint="Copy the UID from the Study page or GET /api/studies.") from None


def _delete(store: Store, user: User, study_uid: str, series_uid: str | None, background: bool) -> Deleted:
    """One write transaction decides, removes the rows and renames the files away; unlinking comes after."""
    now = time.time()
    with store.connect() as db:
        other_series = db.execute("SELECT count(*) FROM series WHERE study_uid=? AND series_uid IS NOT ?",
                                  (study_uid, series_uid)).fetchone()[0] if series_uid else 0
        whole = series_uid is None or other_series == 0
        series = [r[0] for r in db.execute("SELECT series_uid FROM series WHERE study_uid=?" + ("" if whole else " AND series_uid=?"),
                                           (study_uid,) if whole else (study_uid, series_uid))]
        sops = [r[0] for r in db.execute(
            f"SELECT sop_uid FROM instances WHERE series_uid IN ({_marks(series)})", series)] if series else []
        paths = [Path(r[0]) for chunk in _chunks(sops) for r in db.execute(
            f"SELECT path FROM artifacts WHERE sop_uid IN ({_marks(chunk)}) UNION ALL "
            f"SELECT path FROM conflicts WHERE sop_uid IN ({_marks(chunk)})", chunk + chunk)]
        # what the caches are keyed by: each original's checksum (strategy 5: the file's before its master too)
        checksums = {r[0] for chunk in _chunks(sops) for r in db.execute(
            f"SELECT checksum FROM artifacts WHERE variant='original' AND sop_uid IN ({_marks(chunk)}) UNION "
            f"SELECT original_checksum FROM masters WHERE sop_uid IN ({_marks(chunk)})", chunk + chunk) if r[0]}
        for chunk in _chunks(sops):
            for table in _instance_tables(db):
                db.execute(f"DELETE FROM {table} WHERE sop_uid IN ({_marks(chunk)})", chunk)
        db.execute(f"DELETE FROM series WHERE series_uid IN ({_marks(series)})", series)
        cancelled: tuple[int, ...] = ()
        if not whole:
            _unmark_demo(db, study_uid)
        else:
            cancelled = _cancel_jobs(db, study_uid)
            patient = db.execute("SELECT patient_key FROM studies WHERE study_uid=?", (study_uid,)).fetchone()[0]
            db.execute("DELETE FROM study_readers WHERE study_uid=?", (study_uid,))
            db.execute("DELETE FROM studies WHERE study_uid=?", (study_uid,))
            db.execute("DELETE FROM patients WHERE patient_key=? AND NOT EXISTS "
                       "(SELECT 1 FROM studies WHERE patient_key=?)", (patient, patient))
        codestreams = _codestreams(store, checksums)
        sizes = sum(_size(p) for p in paths) + sum(_size(p) for p in codestreams)
        what = f"delete study {study_uid}" if series_uid is None else f"delete series {series_uid} of study {study_uid}"
        db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                   (now, user.name, what, json.dumps({"series": series, "instances": len(sops), "files": len(paths)}),
                    json.dumps({"bytes_freed": sizes, "study_removed": whole, "jobs_cancelled": list(cancelled)})))
        staged = _stage_all(store, paths + codestreams)  # last: a failure before rolls the rows back, every file in place
    cached = _purge_caches(store, checksums, study_uid)

    def reclaim():
        _unlink(staged)
        _remove_folders(store, sops)

    if background:
        threading.Thread(target=reclaim, name="radpress-delete", daemon=True).start()
    else:
        reclaim()
    return Deleted(study_uid, tuple(series), len(sops), len(paths), sizes + cached, whole, cancelled)


def _instance_tables(db: sqlite3.Connection) -> list[str]:
    """Every table with rows about an instance (a table added later included), but the access log: who saw it stays."""
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return [t for t in tables if t != "access_log" and
            any(c[1] == "sop_uid" for c in db.execute("SELECT * FROM pragma_table_info(?)", (t,)))]


def _marks(items) -> str:
    return ",".join("?" * len(items))


def _chunks(items: list[str], size: int = 400) -> list[list[str]]:
    """SQLite allows a few hundred parameters per statement: large studies go in slices."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def _cancel_jobs(db: sqlite3.Connection, study_uid: str) -> tuple[int, ...]:
    """Running jobs of the study are asked to stop (their runner ends them); queued and finished ones go with it."""
    queued = [r[0] for r in db.execute("SELECT id FROM jobs WHERE study_uid=? AND state='queued'", (study_uid,))]
    running = [r[0] for r in db.execute("SELECT id FROM jobs WHERE study_uid=? AND state='running'", (study_uid,))]
    db.execute("UPDATE jobs SET cancel=1 WHERE study_uid=? AND state='running'", (study_uid,))
    db.execute("DELETE FROM job_items WHERE job_id IN (SELECT id FROM jobs WHERE study_uid=? AND state!='running')", (study_uid,))
    db.execute("DELETE FROM jobs WHERE study_uid=? AND state!='running'", (study_uid,))
    return tuple(queued + running)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _stage(store: Store, path: Path) -> Path | None:
    """Rename a file out of the way to a name :meth:`Store.check` removes once this process is gone."""
    target = store.tmp_path(".deleting")
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # originals may live on a volume of their own: staged beside themselves
            raise
        target = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.part")
        os.rename(path, target)
    return target


def _stage_all(store: Store, paths: list[Path]) -> list[tuple[Path, Path]]:
    """Every file renamed, or (on an error) none: the renamed ones are put back before the error goes on."""
    done: list[tuple[Path, Path]] = []
    try:
        for path in paths:
            if (moved := _stage(store, path)) is not None:
                done.append((path, moved))
    except BaseException:
        _restore(done)
        raise
    return done


def _restore(staged: list[tuple[Path, Path]]) -> None:
    for path, moved in reversed(staged):
        os.rename(moved, path)


def _unlink(staged: list[tuple[Path, Path]]) -> None:
    for _, moved in staged:
        moved.unlink(missing_ok=True)


def _remove_folders(store: Store, sops: list[str]) -> None:
    """Each instance's folder of copies, whatever a worker may still be writing there (its copy is refused anyway)."""
    from .store import uid_key

    for sop in sops:
        folder = store.root / "artifacts" / (key := uid_key(sop))[:2] / key
        shutil.rmtree(folder, ignore_errors=True)


def _codestreams(store: Store, checksums: set[str]) -> list[Path]:
    """The cached codestreams made from these originals (named after the original's checksum first)."""
    folder = store.root / "cache" / "codestreams"
    return [p for p in folder.iterdir() if p.name[:64] in checksums] if checksums and folder.is_dir() else []


def _purge_caches(store: Store, checksums: set[str], study_uid: str) -> int:
    """Renderings, transcodes and lab sweeps made from these originals, in one transaction; returns bytes freed (about)."""
    from .archive import _cache

    cache = _cache(store)
    before = cache.volume()
    doomed = [key for key in cache.iterkeys() if isinstance(key, str) and (
        checksums & set(_HEX64.findall(key))
        or key.startswith("lab:") and (cache.get(key) or {}).get("study_uid") == study_uid)]  # a sweep of what changed
    with cache.transact():
        for key in doomed:
            cache.delete(key)
    return max(0, before - cache.volume())


# -- conflicts ------------------------------------------------------------------------------------------------------
def conflicts(store: Store, user: User | None, study_uid: str | None = None) -> list[dict]:
    """Every conflict (of one study with *study_uid*) with what differs, newest first (a reason is worked out once,
    then kept in the index)."""
    if study_uid:
        study_uid = _uid(study_uid, "Study Instance UID")
    authorize(store, user, "housekeeping", study_uid=study_uid or None)
    rows = store.query(
        "SELECT c.*, s.study_uid, st.description AS study_description, p.name AS patient_name, p.patient_id, "
        "a.bytes AS stored_bytes, a.created AS stored_at, a.path AS stored_path FROM conflicts c "
        "LEFT JOIN artifacts a ON a.sop_uid = c.sop_uid AND a.variant = 'original' "
        "LEFT JOIN instances i ON i.sop_uid = c.sop_uid LEFT JOIN series s USING (series_uid) "
        "LEFT JOIN studies st USING (study_uid) LEFT JOIN patients p USING (patient_key) "
        + ("WHERE s.study_uid=? " if study_uid else "") + "ORDER BY c.created DESC", (study_uid,) if study_uid else ())
    out, budget = [], REASONS_PER_LIST
    for row in rows:
        if row["reason"]:
            reason = json.loads(row["reason"])
        elif budget > 0 and row["stored_path"]:
            reason, budget = _remember_reason(store, row), budget - 1
        else:  # comparing decodes both files: a long list is worked through a few at a time, never in one request
            reason = {"summary": "not compared yet (open it, or reload the list)"}
        out.append({"sop_uid": row["sop_uid"], "checksum": row["checksum"], "source": row["source"],
                    "received": row["created"], "bytes": _size(Path(row["path"])), "study_uid": row["study_uid"],
                    "patient_name": row["patient_name"], "patient_id": row["patient_id"],
                    "study_description": row["study_description"], "stored_bytes": row["stored_bytes"],
                    "stored_received": row["stored_at"], "reason": reason["summary"]})
    return out


def note_sender(store: Store, results, sender: str) -> None:
    """Say who sent the conflicting copies among an upload's *results* (ingest knows file names only)."""
    rows = [(f" (uploaded by {sender})", r.sop_uid, r.name) for r in results if r.status == "conflict"]
    if rows:
        with store.connect() as db:
            db.executemany("UPDATE conflicts SET source = source || ? WHERE sop_uid=? AND source=?", rows)


def _remember_reason(store: Store, row) -> dict:
    reason = _compare(Path(row["stored_path"]), Path(row["path"]))
    with store.connect() as db:
        db.execute("UPDATE conflicts SET reason=? WHERE sop_uid=? AND checksum=?",
                   (json.dumps(reason), row["sop_uid"], row["checksum"]))
    return reason


def conflict_detail(store: Store, user: User | None, sop_uid: str, checksum: str) -> dict:
    """Both sides of one conflict: sizes, when and from where each came, every attribute that differs, the pixels."""
    row = _conflict(store, user, sop_uid, checksum)
    stored = store.artifact(sop_uid, "original")
    reason = _compare(stored.path, Path(row["path"]))
    return {"sop_uid": sop_uid, "checksum": checksum, "study_uid": store.instance(sop_uid)["study_uid"],
            "stored": {"bytes": stored.bytes, "checksum": stored.checksum, "received": _received(store, sop_uid),
                       "transfer_syntax": stored.transfer_syntax},
            "other": {"bytes": _size(Path(row["path"])), "checksum": checksum, "received": row["created"],
                      "source": row["source"]},
            **reason}


def conflict_preview(store: Store, user: User | None, sop_uid: str, which: str, size: int = 256) -> bytes:
    """A PNG of one side ("stored", or a conflicting copy's checksum), both drawn with the stored original's window:
    a difference in brightness between the two is a difference in the values, never in the display."""
    from .pixels import decode_frame, pixel_spec, read_dataset
    from .render import display_frame, modality_values, shrink_png, window_of

    if which == "stored":
        authorize(store, user, "housekeeping", sop_uid=_uid(sop_uid, "SOP Instance UID"))
    path = store.artifact(sop_uid, "original").path if which == "stored" else Path(_conflict(store, user, sop_uid, which)["path"])
    stored, side = read_dataset(store.artifact(sop_uid, "original").path), read_dataset(path)
    if not _previewable(stored, side):
        raise UnsupportedError("No preview: one side has no image, or one too large to draw here.",
                               hint="The differences are listed; download both files to look at them in a viewer.")
    middle = pixel_spec(stored).frames // 2
    window = None
    if pixel_spec(stored).samples == 1 and pixel_spec(side).samples == 1:
        window = window_of(stored, modality_values(decode_frame(stored, middle), stored, middle), middle)
    return shrink_png(display_frame(side, min(middle, pixel_spec(side).frames - 1), window), size)


def _conflict(store: Store, user: User | None, sop_uid: str, checksum: str):
    sop_uid = _uid(sop_uid, "SOP Instance UID")
    authorize(store, user, "housekeeping", sop_uid=sop_uid)
    if not isinstance(checksum, str) or not _HEX64.fullmatch(checksum):
        raise InvalidOptionError(f"{str(checksum)[:80]!r} is not the SHA-256 of a conflicting copy (64 hex digits).")
    rows = store.query("SELECT * FROM conflicts WHERE sop_uid=? AND checksum=?", (sop_uid, checksum))
    if not rows:
        raise StoreError(f"Instance {sop_uid} has no conflicting copy {checksum[:12]}….")
    return rows[0]


def _received(store: Store, sop_uid: str) -> float | None:
    rows = store.query("SELECT created FROM artifacts WHERE sop_uid=? AND variant='original'", (sop_uid,))
    return rows[0]["created"] if rows else None


def _compare(stored: Path, other: Path) -> dict:
    """What differs between two files of one SOP Instance UID: attributes (both values) and pixels, as data and one line."""
    from .pixels import read_dataset

    a, b = read_dataset(stored), read_dataset(other)
    attributes = []
    for tag in sorted(set(a.keys()) | set(b.keys())):
        if tag == 0x7FE00010:
            continue
        left, right = a.get(tag), b.get(tag)
        if left is not None and right is not None and left.value == right.value:
            continue
        element = left if left is not None else right
        attributes.append({"tag": f"({tag.group:04X},{tag.element:04X})", "keyword": element.keyword or "(private)",
                           "stored": _shown(left), "other": _shown(right)})
    syntax = (str(a.file_meta.TransferSyntaxUID), str(b.file_meta.TransferSyntaxUID))
    pixels = _compare_pixels(a, b)
    parts = [pixels["summary"]]
    if attributes:
        names = ", ".join(x["keyword"] for x in attributes[:6]) + (" …" if len(attributes) > 6 else "")
        parts.append(f"{len(attributes)} attribute(s) differ: {names}")
    if syntax[0] != syntax[1]:
        parts.append(f"transfer syntax {syntax[0]} vs {syntax[1]}")
    sizes = (_size(stored), _size(other))
    parts.append(f"{sizes[0]:,} vs {sizes[1]:,} bytes")
    return {"summary": "; ".join(parts), "attributes": attributes[:_MAX_ATTRIBUTES], "attributes_total": len(attributes),
            "pixels": pixels, "transfer_syntaxes": list(syntax), "sizes": list(sizes), "previews": _previewable(a, b)}


def _previewable(*datasets) -> bool:
    """Whether :func:`conflict_preview` can draw both sides (images, none too large to decode whole)."""
    from .bigimage import is_large
    from .pixels import pixel_spec
    from .validate import is_image

    return all(is_image(ds) and not is_large(pixel_spec(ds).rows, pixel_spec(ds).columns) for ds in datasets)


def _shown(element) -> str:
    if element is None:
        return "(absent)"
    if element.VR == "SQ":
        return f"{len(element.value)} item(s)"
    text = str(element.value)
    return text if len(text) <= 120 else text[:120] + "…"


def _compare_pixels(a, b) -> dict:
    """Decoded pixels side by side: identical, how many values differ and by how much, or why they cannot be compared."""
    from .bigimage import is_large
    from .pixels import decode_all, pixel_spec
    from .present import dimensions
    from .validate import is_image

    if not (is_image(a) and is_image(b)):
        return {"identical": None, "summary": "no pixel data to compare" if not (is_image(a) or is_image(b))
                else "only one of them has pixel data"}
    sa, sb = pixel_spec(a), pixel_spec(b)
    if (sa.rows, sa.columns, sa.frames, sa.samples) != (sb.rows, sb.columns, sb.frames, sb.samples):
        return {"identical": False, "summary": f"image size differs: {dimensions(sa.columns, sa.rows)} × {sa.frames} frame(s) vs "
                                               f"{dimensions(sb.columns, sb.rows)} × {sb.frames} frame(s)"}
    if is_large(sa.rows, sa.columns):
        same = a.PixelData == b.PixelData
        return {"identical": same, "summary": "pixel data identical" if same else "pixel data differ (very large image: bytes compared)"}
    try:
        pa, pb = decode_all(a).astype(np.int64), decode_all(b).astype(np.int64)
    except RadPressError as exc:
        return {"identical": None, "summary": f"pixels cannot be compared: {exc}"}
    diff = np.abs(pa - pb)
    changed = int(np.count_nonzero(diff))
    if not changed:
        return {"identical": True, "changed": 0, "total": int(diff.size), "max_error": 0, "summary": "pixels identical"}
    return {"identical": False, "changed": changed, "total": int(diff.size), "max_error": int(diff.max()),
            "summary": f"pixels differ: {changed:,} of {diff.size:,} values, by up to {int(diff.max())}"}


def resolve_conflict(store: Store, user: User | None, sop_uid: str, checksum: str, keep: str) -> dict:
    """Keep one side of a conflict and remove the other.

    ``keep="stored"`` removes the conflicting copy; ``keep="other"`` makes it
    the instance's original (indexed from its own header), removes the old
    original with every copy and cache made from it, and returns the study
    whose copies must be made again (the caller queues that job).
    """
    if keep not in ("stored", "other"):
        raise InvalidOptionError(f"keep={str(keep)[:40]!r}: say which copy to keep.", hint='Use "stored" or "other".')
    row = _conflict(store, user, sop_uid, checksum)
    sop_uid, path = row["sop_uid"], Path(row["path"])
    now = time.time()
    if keep == "stored":
        kept = store.artifact(sop_uid, "original").checksum
        with store.connect() as db:
            _take_conflict(db, sop_uid, checksum)
            db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                       (now, user.name, f"conflict of instance {sop_uid}: kept the stored original",
                        json.dumps({"removed": checksum, "source": row["source"], "bytes_freed": _size(path)}),
                        json.dumps({"kept": kept})))
            staged = _stage_all(store, [path])
        _unlink(staged)
        return {"kept": "stored", "sop_uid": sop_uid, "study_uid": store.instance(sop_uid)["study_uid"], "rebuild": None}
    return _keep_other(store, user, row, path, now)


def _keep_other(store: Store, user: User, row, path: Path, now: float) -> dict:
    """The conflicting copy becomes the original, under the instance's lock (no copy is being made from the old one)."""
    from .validate import read_checked

    sop_uid, checksum = row["sop_uid"], row["checksum"]
    if not path.exists():
        raise StoreError(f"The conflict of {sop_uid} was already resolved by another request; nothing was changed.")
    if sha256_file(path) != checksum:
        raise StoreError(f"The conflicting copy of {sop_uid} no longer matches its checksum; it was not used.",
                         hint="Run python -m core check.")
    ds = read_checked(path)  # indexed from its own header: the study, series and patient may differ
    with item_lock(store.root, f"instance:{sop_uid}", timeout=RESOLVE_LOCK_TIMEOUT):
        old = store.instance(sop_uid)
        old_original = store.artifact(sop_uid, "original")
        target = store.original_path(sop_uid)
        placed = False
        with store.connect() as db:
            _take_conflict(db, sop_uid, checksum)  # first: a request that lost the race changes nothing
            paths = [Path(r[0]) for r in db.execute("SELECT path FROM artifacts WHERE sop_uid=?", (sop_uid,))]
            # what the caches are keyed by: the original's checksum (strategy 5: the file's before its master too)
            replaced = {old_original.checksum} | {r[0] for r in db.execute(
                "SELECT original_checksum FROM masters WHERE sop_uid=? AND state='master'", (sop_uid,))}
            sizes = sum(_size(p) for p in paths)
            # what was made from the old one; a demo mark too: the kept file is not the bundled sample
            for table in set(_instance_tables(db)) - {"conflicts", "job_items"}:
                db.execute(f"DELETE FROM {table} WHERE sop_uid=?", (sop_uid,))
            _unmark_demo(db, old["study_uid"])
            db.execute("UPDATE conflicts SET reason=NULL WHERE sop_uid=?", (sop_uid,))  # now measured against the new one
            staged = _stage_all(store, paths)
            try:
                _place_new(path, target)
                placed = True
                moved = str(ds.StudyInstanceUID) != old["study_uid"]
                if moved or str(ds.SeriesInstanceUID) != old["series_uid"]:  # the kept copy names another series or study
                    _drop_empty(db, old["series_uid"], old["study_uid"] if moved else None)
                store._index_original(db, target, ds, checksum)
                db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                           (now, user.name, f"conflict of instance {sop_uid}: kept the copy received {time.ctime(row['created'])}",
                            json.dumps({"removed": old_original.checksum, "study_uid": old["study_uid"], "bytes_freed": sizes}),
                            json.dumps({"kept": checksum, "source": row["source"], "study_uid": str(ds.StudyInstanceUID)})))
            except BaseException:
                if placed:
                    target.unlink(missing_ok=True)
                _restore(staged)
                raise
    _unlink(staged)
    path.unlink(missing_ok=True)
    _remove_folders(store, [sop_uid])
    _purge_caches(store, replaced, old["study_uid"])
    for path in _codestreams(store, replaced):
        path.unlink(missing_ok=True)
    study_uid = str(ds.StudyInstanceUID)
    return {"kept": "other", "sop_uid": sop_uid, "study_uid": study_uid, "rebuild": study_uid}


def _take_conflict(db: sqlite3.Connection, sop_uid: str, checksum: str) -> None:
    """Remove the conflict's row in the resolving transaction; a second resolution of it (a double click, two admins)
    finds none and is refused before it changes anything."""
    if db.execute("DELETE FROM conflicts WHERE sop_uid=? AND checksum=?", (sop_uid, checksum)).rowcount != 1:
        raise StoreError(f"The conflict of {sop_uid} was already resolved by another request; nothing was changed.")


def _unmark_demo(db: sqlite3.Connection, study_uid: str) -> None:
    """A study none of whose demo samples is left is no demo study: a start-up must never mark its clinic instances."""
    db.execute("UPDATE studies SET demo=0 WHERE study_uid=? AND NOT EXISTS (SELECT 1 FROM demo_instances d JOIN instances i "
               "USING (sop_uid) JOIN series s USING (series_uid) WHERE s.study_uid=?)", (study_uid, study_uid))


def _drop_empty(db: sqlite3.Connection, series_uid: str, study_uid: str | None) -> None:
    """The series, and the study (unless None: kept with its settings), left without instances go, with a patient left alone."""
    db.execute("DELETE FROM series WHERE series_uid=? AND NOT EXISTS (SELECT 1 FROM instances WHERE series_uid=?)",
               (series_uid, series_uid))
    if study_uid and not db.execute("SELECT 1 FROM series WHERE study_uid=?", (study_uid,)).fetchone():
        patient = db.execute("SELECT patient_key FROM studies WHERE study_uid=?", (study_uid,)).fetchone()
        db.execute("DELETE FROM study_readers WHERE study_uid=?", (study_uid,))
        db.execute("DELETE FROM studies WHERE study_uid=?", (study_uid,))
        if patient:
            db.execute("DELETE FROM patients WHERE patient_key=? AND NOT EXISTS (SELECT 1 FROM studies WHERE patient_key=?)",
                       (patient[0], patient[0]))
