"""Bringing files into the archive: single files, folders, zip and tar(.gz) archives.

Each file gets one result (stored, duplicate, conflict, rejected with a
reason, or skipped for DICOMDIR).  Archives are read member by member, with
limits checked before and while extracting, so that path traversal, links
and decompression bombs are refused with a reason instead of filling the disk;
a damaged, encrypted or nested member is refused alone.  Every file, from
any way in (upload, ``python -m core ingest``, a network receiver calling
:func:`ingest_stream`), passes :func:`core.validate.read_checked` before the
archive uses anything in it.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import queue
import shutil
import stat
import tarfile
import threading
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterable, Iterator

from .errors import InvalidHeaderError, NoPixelDataError, NotDicomError, RadPressError, TruncatedError, UnsupportedError
from .store import Store
from .validate import read_checked

__all__ = ["Limits", "IngestResult", "ingest", "ingest_stream", "ingest_instance"]


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 2 << 30
    max_archive_bytes: int = 20 << 30
    max_entries: int = 100_000
    max_expansion: float = 200.0  # uncompressed / compressed size of one archive member or compressed tar
    bomb_floor: int = 32 << 20  # a compressed stream is judged by its expansion once this much came out


@dataclass
class IngestResult:
    name: str
    status: str  # stored | duplicate | conflict | rejected | skipped
    reason: str = ""
    sop_uid: str = ""
    study_uid: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# An instance this size or smaller, sent as one (an upload, C-STORE), is also kept in memory while it is staged and
# parsed from there (a CT or MR slice: ~0.5 MB); larger ones are read back from the staged file.
KEEP_BYTES = 8 << 20


class _Rejected(Exception):
    pass


class _Bomb(_Rejected):
    """The stream expands beyond its budget: the rest of the archive is refused."""


class _LimitedReader:
    """Counts bytes as they are extracted (archive headers can lie about sizes) and hashes them (the store's
    checksum, without reading the staged file again); keeps them while they come to *keep* bytes at most."""

    def __init__(self, raw: BinaryIO, limit: int, what: str, keep: int = 0):
        self.raw, self.limit, self.what, self.count, self.sha256 = raw, limit, what, 0, hashlib.sha256()
        self.keep, self.kept = keep, []

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n and n > 0 else 1 << 20)
        self.count += len(data)
        if self.count > self.limit:
            raise _Rejected(self.what)
        self.sha256.update(data)
        if self.count <= self.keep:
            self.kept.append(data)
        else:
            self.kept.clear()
        return data

    def data(self) -> bytes | None:
        return b"".join(self.kept) if self.keep and self.count <= self.keep else None


def _safe_member_name(name: str) -> str:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise _Rejected("unsafe path in archive (absolute or '..'): refused to prevent writing outside the upload")
    return str(path)


def _screen(name: str, size: int, link: bool, limits: Limits) -> bool:
    """Refuse an unsafe or oversized archive member before extracting it; True for a DICOMDIR to skip."""
    _safe_member_name(name)
    if link:
        raise _Rejected("symbolic link or hard link in archive: refused")
    if size > limits.max_file_bytes:
        raise _Rejected(f"too large: {size} bytes, the limit is {limits.max_file_bytes}")
    return _is_dicomdir(name)


def _is_dicomdir(name: str) -> bool:
    return PurePosixPath(name).name.upper() == "DICOMDIR"


def _stage_stream(store: Store, stream: BinaryIO, limit: int, what: str, suffix: str = ".dcm",
                  instance: bool = True, keep: int = 0) -> tuple[Path, str, bytes | None]:
    """Copy *stream* to a private staging file (pid in its name, so :meth:`Store.check` leaves it alone while we run);
    returns it, the SHA-256 of its bytes and, when they are *keep* bytes at most, the bytes (parsed from memory).

    A staged file is nothing until the store places it, and placing fsyncs it first; for an *instance* that fsync
    starts here (:func:`_start_sync`), beside the validation that comes next (not for an upload that may be an
    archive: it is never placed).
    """
    staged = store.tmp_path(suffix)
    reader = _LimitedReader(stream, limit, what, keep)
    try:
        with open(staged, "xb") as out:
            shutil.copyfileobj(reader, out, 1 << 20)
        if instance:
            _start_sync(staged)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged, reader.sha256.hexdigest(), reader.data()


class _EarlySync:
    """A few threads per process that fsync the staged files handed to them: handing one over never waits (a
    thread started per file made the request wait for the new thread's first turn at the GIL).  Made again in a
    forked child, whose copy of the threads is gone."""

    THREADS = 4  # concurrent fsyncs share the file system's journal commits
    BACKLOG = 64  # beyond this, files are left to the store's own fsync

    def __init__(self):
        self._lock, self._pid, self._queue = threading.Lock(), None, None

    def put(self, path: Path) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._queue = queue.SimpleQueue()
                    for _ in range(self.THREADS):
                        threading.Thread(target=self._run, args=(self._queue,), name="radpress-stage-fsync",
                                         daemon=True).start()
                    self._pid = os.getpid()
        if self._queue.qsize() < self.BACKLOG:
            try:
                self._queue.put(os.open(path, os.O_RDONLY))
            except OSError:  # out of descriptors, say: the store's own fsync still comes
                pass

    @staticmethod
    def _run(jobs: queue.SimpleQueue) -> None:
        while True:
            fd = jobs.get()
            try:
                os.fsync(fd)
            except OSError:
                pass  # the store's own fsync reports it
            finally:
                os.close(fd)


_EARLY_SYNC = _EarlySync()


def _start_sync(path: Path) -> None:
    """Start fsyncing a staged file while the caller validates it, so the disk's wait overlaps that work; a latency
    measure only: the store's own fsync before it places the file is the durability step (it then finds it done)."""
    _EARLY_SYNC.put(path)


def _admit(store: Store, staged: Path, name: str, checksum: str | None = None,
           data: bytes | None = None) -> IngestResult:
    """Validate a staged file as an image (from *data*, its bytes, when the caller holds them) and hand it to the
    store; the staged file is gone afterwards."""
    try:
        ds = read_checked(staged, data)
        status = store.add_original(staged, ds, name, checksum)
    except RadPressError as exc:
        return IngestResult(name, "rejected", _reason(exc, staged))
    finally:
        staged.unlink(missing_ok=True)
    reason = ("same SOP Instance UID as a stored instance, other content: kept aside until an administrator "
              "resolves it (Conflicts page)") if status == "conflict" else ""
    return IngestResult(name, status, reason, str(ds.SOPInstanceUID), str(ds.StudyInstanceUID))


def _admit_member(store: Store, staged: Path, name: str, checksum: str) -> IngestResult:
    """An archive member: an archive inside it is refused (never opened), anything else admitted."""
    if _archive_magic(staged) and not _dicom_magic(staged):
        staged.unlink(missing_ok=True)
        return IngestResult(name, "rejected", "nested archive: not opened (archives inside archives are refused; "
                                              "send the inner archive itself)")
    return _admit(store, staged, name, checksum)


def _dicom_magic(path: Path) -> bool:
    """A Part 10 file: 'DICM' after the 128-byte preamble (which may itself hold a zip or TIFF header)."""
    with open(path, "rb") as fh:
        return fh.read(132)[128:132] == b"DICM"


def _archive_magic(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(262)
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")) or head[257:262] == b"ustar"


def _reason(exc: RadPressError, staged: Path) -> str:
    """"kind: detail", without the staging file's name (the user knows the file by its own name)."""
    kinds = {NotDicomError: "not DICOM", TruncatedError: "truncated", NoPixelDataError: "no pixel data",
             UnsupportedError: "unsupported", InvalidHeaderError: "invalid"}
    label = next((v for k, v in kinds.items() if isinstance(exc, k)), "unreadable")
    detail = exc.message.removeprefix(f"{staged}: ").removeprefix(f"{staged.name}: ")  # read_dataset names a path by its .name
    return f"{label}: {detail}"


_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
# What a damaged member raises while it is inflated.
_STREAM_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, OSError)


def _from_zip(store: Store, path: Path, label: str, limits: Limits) -> Iterator[IngestResult]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        yield IngestResult(label, "rejected", f"truncated: damaged zip archive ({exc})")
        return
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > limits.max_entries:
            yield IngestResult(label, "rejected", f"archive has {len(members)} entries, more than the limit of {limits.max_entries}")
            return
        shared = _overlapping(archive, members)
        # the whole archive may expand like its members: the first few MB freely, then max_expansion
        budget = min(limits.max_archive_bytes, limits.max_expansion * path.stat().st_size + limits.bomb_floor)
        total = 0
        for member in members:
            name = f"{label}/{member.filename}"
            try:
                if _screen(member.filename, member.file_size, stat.S_ISLNK(member.external_attr >> 16), limits):
                    yield IngestResult(name, "skipped", "DICOMDIR index file")
                    continue
                if member in shared:
                    raise _Rejected("decompression bomb: entries share compressed data (overlapping zip)")
                if member.flag_bits & 0x1:
                    raise _Rejected("encrypted: password-protected entries cannot be read; send them unencrypted")
                if member.compress_type not in _ZIP_METHODS:
                    raise _Rejected(f"unsupported: compression method {member.compress_type} "
                                    "(stored, deflate, bzip2 and LZMA are read)")
                if member.file_size > limits.max_expansion * max(member.compress_size, 1) + limits.bomb_floor:
                    raise _Rejected("decompression bomb: expands more than "
                                    f"{limits.max_expansion:g}x ({member.compress_size} → {member.file_size} bytes)")
                total += member.file_size
                if total > budget:
                    raise _Rejected(f"decompression bomb: archive expands beyond {budget:.0f} bytes: rest refused")
                with archive.open(member) as stream:
                    staged, checksum, _ = _stage_stream(store, stream, min(member.file_size, limits.max_file_bytes),
                                           "entry larger than its header says: refused")
            except _Rejected as exc:
                yield IngestResult(name, "rejected", str(exc))
                continue
            except (*_STREAM_ERRORS, NotImplementedError, RuntimeError) as exc:
                yield IngestResult(name, "rejected", f"truncated: damaged archive entry ({exc})")
                continue
            yield _admit_member(store, staged, name, checksum)


def _overlapping(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo]) -> set[zipfile.ZipInfo]:
    """Entries whose compressed data overlaps another's: the shape of a zip bomb that reuses one deflate stream."""
    ordered = sorted(archive.infolist(), key=lambda m: m.header_offset)
    bad = set()
    for here, after in zip(ordered, ordered[1:] + [None]):
        end = here.header_offset + 30 + len(here.orig_filename.encode()) + here.compress_size
        limit = after.header_offset if after is not None else archive.start_dir
        if end > limit:
            bad.update(m for m in (here, after) if m is not None)
    return bad & set(members)


class _Counted:
    """A raw file that counts the bytes read from it (the compressed side of a stream)."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.count = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        return data


class _Budget:
    """The inflated side of a compressed tar: refused as soon as it expands like a bomb, before it is written."""

    def __init__(self, inflated: BinaryIO, compressed: _Counted, limits: Limits):
        self.inflated, self.compressed, self.limits, self.count = inflated, compressed, limits, 0

    def read(self, n: int = -1) -> bytes:
        data = self.inflated.read(n)
        self.count += len(data)
        if self.count > self.limits.max_archive_bytes:
            raise _Bomb(f"decompression bomb: archive expands beyond {self.limits.max_archive_bytes} bytes: rest refused")
        if self.count > self.limits.bomb_floor and self.count > self.limits.max_expansion * self.compressed.count:
            raise _Bomb(f"decompression bomb: {self.compressed.count} compressed bytes expanded to more than "
                            f"{self.count} (over {self.limits.max_expansion:g}x): rest refused")
        return data


def _inflated(raw: BinaryIO, limits: Limits) -> BinaryIO:
    """The tar stream inside a gzip, bzip2 or xz file (or the file itself), under an expansion budget."""
    head = raw.read(6)
    raw.seek(0)
    counted = _Counted(raw)
    openers = {b"\x1f\x8b": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), b"BZh": bz2.BZ2File,
               b"\xfd7zXZ\x00": lzma.LZMAFile}
    opener = next((o for magic, o in openers.items() if head.startswith(magic)), None)
    return _Budget(opener(counted) if opener else counted, counted, limits)


def _from_tar(store: Store, path: Path, label: str, limits: Limits) -> Iterator[IngestResult]:
    """Read as a stream: nothing is inflated that is not counted against the budget, even skipped members."""
    entries, reading = 0, label  # reading: whose bytes come out of the stream now (a member, or the archive)
    with open(path, "rb") as raw:
        try:
            archive = tarfile.open(fileobj=_inflated(raw, limits), mode="r|")
            for member in archive:
                reading = label
                if member.isdir():
                    continue
                entries += 1
                name = f"{label}/{member.name}"
                if entries > limits.max_entries:
                    yield IngestResult(label, "rejected", f"archive has more than {limits.max_entries} entries: rest refused")
                    return
                try:
                    if _screen(member.name, member.size, member.issym() or member.islnk(), limits):
                        yield IngestResult(name, "skipped", "DICOMDIR index file")
                        continue
                    if not member.isfile():
                        raise _Rejected("not a regular file (device, fifo)")
                    reading = name
                    staged, checksum, _ = _stage_stream(store, archive.extractfile(member), member.size,
                                                     "entry larger than declared")
                except _Bomb:
                    raise
                except _Rejected as exc:
                    yield IngestResult(name, "rejected", str(exc))
                    continue
                yield _admit_member(store, staged, name, checksum)
        except _Rejected as exc:
            yield IngestResult(reading, "rejected", str(exc))
        except _STREAM_ERRORS as exc:
            yield IngestResult(reading, "rejected", f"truncated: damaged tar archive ({exc or type(exc).__name__})")


def _from_file(store: Store, path: Path, label: str, limits: Limits, owned: str | None = None,
               data: bytes | None = None) -> Iterator[IngestResult]:
    """*owned*: the SHA-256 of *path* when it is already a private copy in the store's tmp folder (moved, not copied);
    *data*: its bytes, when they were kept."""
    if _is_dicomdir(path.name):
        yield IngestResult(label, "skipped", "DICOMDIR index file")
        return
    if not (data[128:132] == b"DICM" if data is not None else _dicom_magic(path)):  # a DICOM file is never an archive, even when its last bytes look like a zip directory
        if zipfile.is_zipfile(path):
            yield from _from_zip(store, path, label, limits)
            return
        if _is_tar(path):
            yield from _from_tar(store, path, label, limits)
            return
        if _archive_magic(path):
            yield IngestResult(label, "rejected", "truncated: a zip, tar or compressed file that cannot be opened "
                                                  "(cut short or damaged), or a compressed file that is not a tar")
            return
        if path.suffix.lower() in (".tif", ".tiff"):
            yield _from_tiff(store, path, label)
            return
    size = len(data) if data is not None else path.stat().st_size
    if size > limits.max_file_bytes:
        yield IngestResult(label, "rejected", f"too large: {size} bytes, the limit is {limits.max_file_bytes}")
        return
    if owned:
        _start_sync(path)
        yield _admit(store, path, label, owned, data)
        return
    with open(path, "rb") as stream:
        staged, checksum, _ = _stage_stream(store, stream, limits.max_file_bytes, "file grew while reading")
    yield _admit(store, staged, label, checksum)


def _from_tiff(store: Store, path: Path, label: str) -> IngestResult:
    """A TIFF (plain or tiled, any size) becomes a JPEG 2000 lossless Secondary Capture instance, tile by tile."""
    import tifffile

    from .archive import _codestream_cache
    from .bigimage import TiffTiles, encode_pyramid, tiff_header, write_encapsulated

    codestream, staged = store.tmp_path(".j2k"), store.tmp_path(".dcm")
    try:
        source = TiffTiles(path)
        try:
            encode_pyramid(source, codestream)
            header = tiff_header(source, path.stem)
        finally:
            source.close()
        write_encapsulated(header, codestream, staged)
        result = _admit(store, staged, label)
        if result.status == "stored":
            target, _ = _codestream_cache(store, store.artifact(result.sop_uid, "original").checksum, 0, None)
            os.replace(codestream, target)  # the tile source of this image's levels and regions
        return result
    except (UnsupportedError, tifffile.TiffFileError, ValueError, OSError) as exc:
        return IngestResult(label, "rejected", f"unsupported: {exc}")
    finally:
        codestream.unlink(missing_ok=True)
        staged.unlink(missing_ok=True)


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, tarfile.TarError):
        return False


def ingest(store: Store, paths: Iterable[str | os.PathLike], limits: Limits = Limits()) -> Iterator[IngestResult]:
    """Ingest files, folders (recursively, links not followed) and archives."""
    for raw in paths:
        path = Path(raw)
        if path.is_symlink() and path.is_dir():
            yield IngestResult(str(path), "rejected", "symbolic link to a folder: not followed")
        elif path.is_dir():
            for folder, dirs, files in os.walk(path, followlinks=False):
                dirs.sort()
                for name in sorted(files):
                    child = Path(folder) / name
                    if child.is_symlink():
                        yield IngestResult(str(child), "rejected", "symbolic link: not followed")
                        continue
                    yield from _from_file(store, child, str(child), limits)
        elif path.is_file():
            yield from _from_file(store, path, str(path), limits)
        else:
            yield IngestResult(str(path), "rejected", "not found")


def ingest_instance(store: Store, stream: BinaryIO, name: str, limits: Limits = Limits()) -> IngestResult:
    """One DICOM instance from a network receiver (C-STORE): staged in chunks and admitted, never opened as an archive
    (a dataset whose last bytes happen to look like a zip directory is still the instance it is)."""
    try:
        staged, checksum, data = _stage_stream(store, stream, limits.max_file_bytes, "instance larger than the file limit",
                                               keep=KEEP_BYTES)
    except _Rejected as exc:
        return IngestResult(name, "rejected", f"too large: {exc}")
    return _admit(store, staged, name, checksum, data)


def ingest_stream(store: Store, stream: BinaryIO, name: str, limits: Limits = Limits()) -> list[IngestResult]:
    """Ingest an uploaded body: spooled to disk in chunks (held in memory as well only up to :data:`KEEP_BYTES`, to be
    parsed from there), then handled as a file."""
    try:
        upload, checksum, data = _stage_stream(store, stream, limits.max_archive_bytes,
                                               "upload larger than the archive limit", ".dcm-upload", instance=False,
                                               keep=KEEP_BYTES)
    except _Rejected as exc:
        return [IngestResult(name, "rejected", f"too large: {exc}")]
    try:
        return list(_from_file(store, upload, name, limits, owned=checksum, data=data))
    finally:
        upload.unlink(missing_ok=True)
