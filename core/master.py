"""Strategy 5, the lossless master: the original's pixel data replaced by a bit-exact JPEG-LS copy.

This is the only way an original ever leaves the archive, so it is done in an
order where a crash never leaves zero copies: the master (a complete DICOM file,
every other attribute and the SOP Instance UID kept) is written under a
temporary name and renamed beside the artifacts; a second decoder from another
project (libjpeg through pylibjpeg — CharLS encoded it) must return the
original's pixels exactly, and the master must keep every other attribute; then
one transaction points the instance's original row at the master, records the
original's checksum, size, transfer syntax and pixel digest (and the audit
log); only then is the original's file unlinked.  A crash before the switch
leaves an orphan master (removed by :meth:`Store.check`), one after it leaves
the original's file, which the check removes once it sees the recorded switch.

An image the master cannot hold exactly is kept as it came, with the reason:
already lossy-compressed originals (a lossless label would hide the loss;
uncompressed ones marked lossy are mastered and keep Lossy Image Compression
"01" and their history), data in the bits above Bits Stored, very large tiled
images, non-images, and masters no smaller than the original.  A master that
fails the independent check is recorded as ``failed`` for that original (its
checksum): later jobs neither check nor audit it again until the original
changes or :func:`retry_failed_masters` (``check --verify``, an administrator)
asks for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, JPEGLSLossless, RLELossless

from .bigimage import is_large
from .codecs import get_codec
from .compress import compress
from .derive import LOSSLESS_SYNTAXES, _WORD_SIZES  # (the binary VRs core.derive swaps to little endian)
from .errors import CodecError, RadPressError
from .files import fsync_dir, write_dataset
from .locks import item_lock
from .pixels import decode_all, pixel_spec, read_dataset
from .store import Artifact, Store, sha256_file, uid_key

__all__ = ["MASTER_CODEC", "CHECKER", "Master", "MasterCheckFailed", "not_mastered_reason", "master_of", "masters",
           "make_master", "independent_pixels", "pixel_digest", "verify_masters", "retry_failed_masters", "leftover_original"]

MASTER_CODEC = "jpegls"  # the smallest lossless codec for grayscale CT/MR here, and fast (CharLS)
CHECKER = "pylibjpeg"  # pydicom's pylibjpeg plugin: libjpeg (Thomas Richter), another JPEG-LS implementation
# Attributes a master may change: the pixel data and its offset tables, and the colour-by-pixel order encapsulation needs.
_PIXEL_TAGS = {0x7FE00010, 0x7FE00001, 0x7FE00002, 0x00280006}


class MasterCheckFailed(CodecError):
    """The second decoder did not return the original's pixels (or an attribute changed): the original stays."""


@dataclass(frozen=True)
class Master:
    sop_uid: str
    state: str  # "master": the original was replaced; "kept": it stays, for *reason*; "failed": the check refused it
    reason: str
    codec: str
    transfer_syntax: str
    original_transfer_syntax: str
    original_bytes: int
    original_checksum: str
    pixel_digest: str
    checked_by: str
    created: float

    @property
    def mastered(self) -> bool:
        return self.state == "master"

    def header(self) -> str:
        """The X-RadPress-Original value of a download of this instance's "original"."""
        return (f"lossless-master; codec={self.codec}; transfer-syntax={self.transfer_syntax}; "
                f"original-transfer-syntax={self.original_transfer_syntax}; original-bytes={self.original_bytes}; "
                f"original-sha256={self.original_checksum}; checked-by={self.checked_by}")


def _master(row) -> Master:
    return Master(*(row[k] for k in Master.__dataclass_fields__))


# A failed check stands for the original it checked only: a changed original (its checksum) is tried again.
_STANDS = ("LEFT JOIN artifacts a ON a.sop_uid=m.sop_uid AND a.variant='original'",
           "(m.state!='failed' OR a.checksum=m.original_checksum)")


def master_of(store: Store, sop_uid: str) -> Master | None:
    rows = store.query(f"SELECT m.* FROM masters m {_STANDS[0]} WHERE m.sop_uid=? AND {_STANDS[1]}", (sop_uid,))
    return _master(rows[0]) if rows else None


def masters(store: Store, study_uid: str | None = None) -> dict[str, Master]:
    """Every instance decided on (mastered, kept with a reason, or refused by the check), by SOP Instance UID."""
    if study_uid is None:
        rows = store.query(f"SELECT m.* FROM masters m {_STANDS[0]} WHERE {_STANDS[1]}")
    else:
        rows = store.query(f"SELECT m.* FROM masters m JOIN instances i USING (sop_uid) JOIN series s USING (series_uid) "
                           f"{_STANDS[0]} WHERE s.study_uid=? AND {_STANDS[1]}", (study_uid,))
    return {r["sop_uid"]: _master(r) for r in rows}


def retry_failed_masters(store: Store, study_uid: str | None = None, user: str = "system") -> list[str]:
    """Forget the failed checks (of one study, or all) so the next job checks those masters again; audited as *user*'s.
    Returns the studies concerned, for which the caller queues a job."""
    with store.connect() as db:
        rows = db.execute("SELECT m.sop_uid, s.study_uid FROM masters m JOIN instances i USING (sop_uid) "
                          "JOIN series s USING (series_uid) WHERE m.state='failed' AND (? IS NULL OR s.study_uid=?)",
                          (study_uid, study_uid)).fetchall()
        for row in rows:
            db.execute("DELETE FROM masters WHERE sop_uid=? AND state='failed'", (row["sop_uid"],))
            db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                       (time.time(), user, f"lossless master of {row['sop_uid']}: to be checked again", json.dumps("failed"),
                        json.dumps(None)))
    return sorted({r["study_uid"] for r in rows})


def not_mastered_reason(row) -> str | None:
    """Why an indexed instance keeps its original under strategy 5 (None: it gets a master), from the index alone."""
    syntax = UID(row["transfer_syntax"] or "")
    if not row["rows"]:
        return "no pixel data: stored as it came"
    if is_large(row["rows"], row["columns"]):
        return "a very large image: kept as it came, served tile by tile"
    if syntax not in LOSSLESS_SYNTAXES:
        return f"already lossy-compressed ({syntax.name or syntax}): kept as it came, never relabelled lossless"
    if syntax == JPEGLSLossless:
        return "already stored as JPEG-LS lossless"
    if syntax.is_encapsulated and syntax != RLELossless:
        # its pixels are what one decoder reads from it (libjpeg for JPEG lossless: the checker itself; OpenJPEG for
        # JPEG 2000); a misreading would be mastered bit-exact and the only correct copy unlinked
        return (f"already losslessly compressed ({syntax.name or syntax}): only one decoder here reads it, so nothing "
                "could confirm the pixels a master would keep; kept as it came")
    if row["bits_allocated"] not in (8, 16) or row["samples"] not in (1, 3) or (row["bits_stored"] or 0) < 2:
        return (f"Bits Allocated {row['bits_allocated']}, Bits Stored {row['bits_stored']}, Samples per Pixel "
                f"{row['samples']}: JPEG-LS holds 2-16 bit samples, 1 or 3 per pixel")
    return None


def pixel_digest(pixels: np.ndarray) -> str:
    """SHA-256 of the decoded pixels (shape, type and little-endian values): what the master must always decode to."""
    pixels = np.ascontiguousarray(pixels)
    head = f"{pixels.shape}|{pixels.dtype.kind}{pixels.dtype.itemsize}|".encode()
    return hashlib.sha256(head + pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()).hexdigest()


def independent_pixels(source: Path | Dataset) -> np.ndarray:
    """Every frame of a JPEG-LS master (a file or its dataset) decoded by libjpeg (pylibjpeg), not by CharLS that encoded it."""
    from pydicom.pixels import get_decoder

    ds = source if isinstance(source, Dataset) else read_dataset(source)
    spec = pixel_spec(ds)
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    if CHECKER not in decoder.available_plugins:
        raise CodecError(f"The independent JPEG-LS decoder ({CHECKER}: pylibjpeg-libjpeg) is not installed.",
                         hint="make run installs it (requirements.txt).")
    try:
        frames = [decoder.as_array(ds, index=i, decoding_plugin=CHECKER, as_rgb=False)[0] for i in range(spec.frames)]
    except (ValueError, RuntimeError, KeyError) as exc:
        raise MasterCheckFailed(f"The independent decoder could not read the master: {exc}.") from None
    return np.stack([np.asarray(f).reshape(spec.shape) for f in frames])


def _changed_attributes(original: Dataset, master: Dataset) -> list[str]:
    """Attributes of *original* the master lost or changed (pixel data and its encapsulation aside), in sequence
    items too (named ``Sequence[i].Keyword``)."""
    return sorted(_differences(original, master, original.file_meta.TransferSyntaxUID == ExplicitVRBigEndian, ""))


def _differences(original: Dataset, master: Dataset, big_endian: bool, within: str) -> list[str]:
    changed = []
    for tag in set(original.keys()) | set(master.keys()):
        if not within and tag in _PIXEL_TAGS:
            continue
        if tag not in original or tag not in master:
            changed.append(f"{within}{tag}")
            continue
        a, b = original[tag], master[tag]
        name = f"{within}{a.keyword or tag}"
        if a.VR == "SQ" and b.VR == "SQ" and len(a.value) == len(b.value):
            for index, (item, copied) in enumerate(zip(a.value, b.value)):
                changed += _differences(item, copied, big_endian, f"{name}[{index}].")
        elif a.value != (_little_endian(b) if big_endian else b.value):
            changed.append(name)
    return changed


def _little_endian(element):
    """A master's element as its big-endian original holds it: binary words were swapped to little endian on purpose
    (core.derive), so they are swapped back; any other value pydicom decoded whatever the byte order."""
    size = _WORD_SIZES.get(element.VR)
    if size is None or not isinstance(element.value, bytes) or len(element.value) % size:
        return element.value
    return np.frombuffer(element.value, f"<u{size}").astype(f">u{size}").tobytes()


def _unused_bits(ds: Dataset, spec) -> bool:
    """True when the stored words' bits above Bits Stored hold data (overlays, noise) a Bits Stored codestream drops.

    Read from the file's own words (decoders hand back values already masked to Bits Stored): unsigned words must
    have those bits clear, signed ones must repeat the sign bit in them.  A compressed original (RLE, JPEG lossless,
    JPEG 2000) is decoded once more without that masking: an RLE file's high bits were mastered away unseen.
    """
    if spec.bits_stored >= spec.bits_allocated:
        return False
    kind = "i" if spec.signed else "u"
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
        frames = [decoder.as_array(ds, index=i, as_rgb=False, correct_unused_bits=False)[0].ravel() for i in range(spec.frames)]
        words = np.concatenate(frames).astype(np.dtype(f"{kind}{spec.bits_allocated // 8}"))  # same width: bits kept
    else:
        order = ">" if ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian else "<"
        count = spec.rows * spec.columns * spec.samples * spec.frames
        words = np.frombuffer(ds.PixelData, np.dtype(f"{order}{kind}{spec.bits_allocated // 8}"), count=count)
    high = words >> (spec.bits_stored - 1 if spec.signed else spec.bits_stored)  # arithmetic shift when signed
    return bool(np.any((high != 0) & (high != -1))) if spec.signed else bool(np.any(high))


def _audit(store: Store, what: str, old, new) -> None:
    with store.connect() as db:
        db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                   (time.time(), "system", what, json.dumps(old), json.dumps(new)))


def _keep(store: Store, original: Artifact, reason: str, state: str = "kept") -> Artifact:
    """Record that this instance keeps its original under strategy 5, and why (shown on the Study page); *state*
    ``failed``: the independent check refused its master, for this original (its checksum) only."""
    with store.connect() as db:  # not for an instance deleted meanwhile (core.housekeeping)
        db.execute("INSERT OR REPLACE INTO masters (sop_uid, state, reason, codec, transfer_syntax, original_transfer_syntax, "
                   "original_bytes, original_checksum, pixel_digest, checked_by, created) SELECT ?,?,?,?,?,?,?,?,?,?,? "
                   "WHERE EXISTS (SELECT 1 FROM instances WHERE sop_uid=?)",
                   (original.sop_uid, state, reason, "", original.transfer_syntax, original.transfer_syntax,
                    original.bytes, original.checksum, "", CHECKER if state == "failed" else "", time.time(), original.sop_uid))
    return original


def master_path(store: Store, sop_uid: str) -> Path:
    key = uid_key(sop_uid)
    return store.root / "artifacts" / key[:2] / key / f"master.{MASTER_CODEC}.dcm"


def make_master(store: Store, sop_uid: str) -> Artifact:
    """Replace the original of *sop_uid* by its checked lossless master; returns the instance's original row as it is now.

    Raises :class:`MasterCheckFailed` (the original untouched, the refusal audited) when the
    independent decoder disagrees.
    """
    with item_lock(store.root, f"master:{uid_key(sop_uid)}"):  # once, however many jobs ask
        original = store.artifact(sop_uid, "original")
        if (decided := master_of(store, sop_uid)) is not None:
            if decided.state == "failed":  # checked and refused already (and audited then): not again for this original
                raise MasterCheckFailed(decided.reason, hint="Run `python -m core check --verify` to check it again.")
            return original
        reason = not_mastered_reason(store.instance(sop_uid))
        if reason:
            return _keep(store, original, reason)
        ds = read_dataset(original.path)
        spec = pixel_spec(ds)
        try:
            get_codec(MASTER_CODEC, False).check(spec)
        except RadPressError as exc:
            return _keep(store, original, exc.message)
        if _unused_bits(ds, spec):
            return _keep(store, original, f"the bits above Bits Stored ({spec.bits_stored} of {spec.bits_allocated}) "
                                          "hold data that a lossless codestream of Bits Stored precision would drop")
        before = decode_all(ds)
        staged = store.tmp_path(".dcm")
        try:
            write_dataset(compress(ds, MASTER_CODEC, "lossless").dataset, staged)
            if staged.stat().st_size >= original.bytes:
                return _keep(store, original, f"the JPEG-LS master ({staged.stat().st_size} bytes) is not smaller than "
                                              f"the original ({original.bytes} bytes)")
            target = master_path(store, sop_uid)
            target.parent.mkdir(parents=True, exist_ok=True)
            _rename(staged, target)
        finally:
            staged.unlink(missing_ok=True)
        try:
            _check(store, original, ds, before, target)
        except MasterCheckFailed as exc:
            target.unlink(missing_ok=True)
            _keep(store, original, exc.message, "failed")
            raise
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return _switch(store, original, target, pixel_digest(before))


def _check(store: Store, original: Artifact, ds: Dataset, before: np.ndarray, target: Path) -> None:
    """The master on disk, read back by the independent decoder, must hold the original's pixels and attributes."""
    problems = []
    master = read_dataset(target)
    try:
        after = independent_pixels(master)
    except MasterCheckFailed as exc:
        problems.append(exc.message)
    else:
        if after.shape != before.shape or after.dtype != before.dtype:
            problems.append(f"decoded {after.shape} {after.dtype}, the original {before.shape} {before.dtype}")
        elif not np.array_equal(after, before):
            problems.append(f"{int(np.count_nonzero(after != before))} sample(s) differ")
    if changed := _changed_attributes(ds, master):
        problems.append("attributes changed: " + ", ".join(changed[:10]))
    if problems:
        message = f"The lossless master of {original.sop_uid} failed the independent check ({CHECKER}): {'; '.join(problems)}."
        _audit(store, f"lossless master of {original.sop_uid} refused", None, message)
        raise MasterCheckFailed(message, hint="The original is kept unchanged.")


def _rename(staged: Path, target: Path) -> None:
    os.replace(staged, target)  # staged was fsynced by write_dataset; same file system (the data directory)
    fsync_dir(target.parent)


def _switch(store: Store, original: Artifact, target: Path, digest: str) -> Artifact:
    """One transaction: the original row now names the master, the switch is recorded; then the original's file goes."""
    size, checksum = target.stat().st_size, sha256_file(target)
    syntax = str(get_codec(MASTER_CODEC, False).transfer_syntax)
    now = time.time()
    store.query("PRAGMA synchronous=FULL")  # the switch must be on disk before the original's file goes (WAL: NORMAL is not)
    try:
        _commit_switch(store, original, target, size, checksum, syntax, digest, now)
    finally:
        store.query("PRAGMA synchronous=NORMAL")
    _remove_original(original.path)
    return store.artifact(original.sop_uid, "original")


def _commit_switch(store: Store, original: Artifact, target: Path, size: int, checksum: str, syntax: str, digest: str,
                   now: float) -> None:
    with store.connect() as db:
        switched = db.execute("UPDATE artifacts SET path=?, bytes=?, checksum=?, transfer_syntax=?, codec=? "
                              "WHERE sop_uid=? AND variant='original' AND checksum=?",
                              (str(target), size, checksum, syntax, MASTER_CODEC, original.sop_uid, original.checksum)).rowcount
        if switched != 1:
            target.unlink(missing_ok=True)  # nothing names it (the transaction rolls back)
            raise CodecError(f"The original of {original.sop_uid} changed while its master was made; nothing was replaced.")
        db.execute("UPDATE instances SET transfer_syntax=? WHERE sop_uid=?", (syntax, original.sop_uid))
        db.execute("INSERT OR REPLACE INTO masters (sop_uid, state, reason, codec, transfer_syntax, original_transfer_syntax, "
                   "original_bytes, original_checksum, pixel_digest, checked_by, created) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (original.sop_uid, "master", "", MASTER_CODEC, syntax, original.transfer_syntax, original.bytes,
                    original.checksum, digest, CHECKER, now))
        db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                   (now, "system", f"original of {original.sop_uid} replaced by its lossless master (strategy 5)",
                    json.dumps({"path": str(original.path), "bytes": original.bytes, "sha256": original.checksum,
                                "transfer_syntax": original.transfer_syntax}),
                    json.dumps({"path": str(target), "bytes": size, "sha256": checksum, "transfer_syntax": syntax,
                                "checked_by": CHECKER, "pixel_sha256": digest})))


def _remove_original(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def leftover_original(db, sop_uid: str, path: Path, checksum: str) -> bool:
    """A crash after the switch left the original's file: remove it when the index recorded exactly it as replaced.

    Called by :meth:`Store.check` inside its write transaction.
    """
    row = db.execute("SELECT original_checksum FROM masters WHERE sop_uid=? AND state='master'", (sop_uid,)).fetchone()
    if row is None or row["original_checksum"] != checksum:
        return False
    _remove_original(path)
    return True


def verify_masters(store: Store) -> list[str]:
    """``check --verify``: every master decoded again by the independent decoder still gives the original's pixels."""
    problems = []
    for master in masters(store).values():
        if not master.mastered:
            continue
        artifact = store.artifact(master.sop_uid, "original")
        try:
            digest = pixel_digest(independent_pixels(artifact.path))
        except RadPressError as exc:
            problems.append(f"{master.sop_uid}: {exc}")
            continue
        if digest != master.pixel_digest:
            problems.append(f"{master.sop_uid}: the master no longer decodes to the original's pixels")
    return problems
