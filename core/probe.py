"""Probes the bench runs against a live app: requests a hostile client would send, and how they were answered.

Hostile uploads and races (below) and callbacks x roles (at the end).

Each probe sends what an attacker or a broken modality would: DICOM text
shaped like paths, absurd image headers, elements that cannot be parsed,
damaged and malicious archives, and simultaneous uploads of one SOP Instance
UID.  A probe is *clean* when the app answers with a 4xx and a reason (never
a 5xx), writes nothing outside its data directory, leaves nothing staged,
and keeps the acknowledged original byte for byte.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from .samples import sample

__all__ = ["HostileCase", "ProbeResult", "hostile_cases", "try_hostile", "race_trial", "try_races", "measure_probes",
           "patch_zip_member", "overlapping_zip", "zeros_zip", "zeros_tar_gz", "OUTSIDE",
           "probe_callbacks", "run_callback_probe", "callback_bodies", "index_snapshot"]

# Where a path-traversal UID would land if DICOM text ever became a path.
OUTSIDE = Path(tempfile.gettempdir()) / "radpress-probe-outside"
SECONDS_PER_CASE = 15.0  # a bomb must be refused while streaming, well before this


@dataclass(frozen=True)
class HostileCase:
    name: str
    filename: str
    body: bytes


@dataclass
class ProbeResult:
    tried: int = 0
    clean: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, name: str, problem: str | None) -> None:
        self.tried += 1
        if problem is None:
            self.clean += 1
        else:
            self.failures.append(f"{name}: {problem}")


# -- building hostile files ------------------------------------------------------------------------------------
def _mr() -> Dataset:
    """A real multi-frame MR (64 x 64 x 10, 12 bits in 16): small, so a probe is quick."""
    return dcmread(sample("emri_small"))


def _dicom(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def _changed(**changes) -> bytes:
    """The MR sample with new UIDs and *changes* applied (None deletes)."""
    ds = _mr()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return _dicom(ds)


def _raw_value(keyword: str, text: bytes) -> bytes:
    """A valid file whose *keyword* holds *text* as written (pydicom refuses to set a malformed value)."""
    from pydicom.datadict import dictionary_VR
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = dcmread(io.BytesIO(_changed()))
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(text), text, 0, False, True)
    return _dicom(ds)


def _with_tail(tail: bytes) -> bytes:
    """A valid file with raw bytes appended after its pixel data (a private group sorts last)."""
    return _changed() + tail


def patch_zip_member(data: bytes, name: str, *, flags: int | None = None, method: int | None = None) -> bytes:
    """Rewrite a zip member's flag bits or compression method in its local and central headers."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        offset, pos = z.getinfo(name).header_offset, z.start_dir
    fields = [(offset + 6, flags), (offset + 8, method)]
    while out[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack("<HHH", out[pos + 28:pos + 34])
        if out[pos + 46:pos + 46 + n].decode() == name:
            fields += [(pos + 8, flags), (pos + 10, method)]
        pos += 46 + n + m + k
    for at, value in fields:
        if value is not None:
            out[at:at + 2] = struct.pack("<H", value)
    return bytes(out)


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _deflated_zeros(size: int) -> bytes:
    """Raw deflate of *size* zero bytes (a multiple of 1 MiB) without compressing them all: a full-flushed
    block of 1 MiB of zeros is the same bytes every time, so the stream is that block repeated."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(bytes(1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    return block * (size >> 20) + deflate.flush()


def zeros_zip(names: list[str], size: int, *, shared: bool = False) -> bytes:
    """A zip whose members are *size* deflated zero bytes each; *shared*: every name points at one member's data
    (the overlapping-zip bomb)."""
    data, crc = _deflated_zeros(size), zlib.crc32(bytes(size))
    body, central = bytearray(), bytearray()
    for index, name in enumerate(names):
        raw = name.encode()
        fields = (20, 0, zipfile.ZIP_DEFLATED, 0, 0x21, crc, len(data), size, len(raw))
        if not shared or index == 0:
            offset = len(body)
            body += struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields, 0) + raw + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, 0, offset) + raw
    return bytes(body + central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(names), len(names), len(central),
                                                len(body), 0))


def overlapping_zip(count: int, size: int = 20 << 20) -> bytes:
    """*count* names sharing the compressed data of one member of *size* zero bytes."""
    return zeros_zip([f"{i}.dcm" for i in range(count)], size, shared=True)


def zeros_tar_gz(declared: int) -> bytes:
    """A tar.gz of one member of *declared* zero bytes (a multiple of 1 MiB), made without inflating it."""
    header = tarfile.TarInfo("zeros.dcm")
    header.size = declared
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(header.tobuf(format=tarfile.USTAR_FORMAT)) + deflate.flush(zlib.Z_FULL_FLUSH)
    return b"\x1f\x8b\x08\x00\0\0\0\0\x00\x03" + head + _deflated_zeros(declared) + struct.pack("<LL", 0, declared & 0xFFFFFFFF)


def hostile_cases(victim_uid: str) -> list[HostileCase]:
    """Every hostile upload, *victim_uid* being an instance already stored that traversal would overwrite."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about every invalid value these cases are made of
        return _hostile_cases(victim_uid)


def _hostile_cases(victim_uid: str) -> list[HostileCase]:
    outside = str(OUTSIDE)
    uids = {
        "sop uid traversal onto another instance": dict(SOPInstanceUID=f"../{victim_uid[-2:]}/{victim_uid}"),
        "sop uid absolute path": dict(SOPInstanceUID=outside),
        "sop uid deep traversal": dict(SOPInstanceUID="../" * 12 + outside.lstrip("/")),
        "sop uid with NUL": dict(SOPInstanceUID="1.2\x00.3"),
        "sop uid of 299 characters": dict(SOPInstanceUID="1" + ".1" * 149),
        "sop uid with leading zeros": dict(SOPInstanceUID="1.02.003"),
        "sop uid empty": dict(SOPInstanceUID=""),
        "study uid traversal": dict(StudyInstanceUID="../../" + victim_uid),
        "series uid absolute": dict(SeriesInstanceUID=outside),
        "sop class uid with letters": dict(SOPClassUID="1.2.840.x"),
        "no study uid": dict(StudyInstanceUID=None),
    }
    headers = {
        "rows 0": dict(Rows=0), "rows 65535": dict(Rows=65535), "columns 0": dict(Columns=0),
        "bits allocated 0": dict(BitsAllocated=0), "bits allocated 7": dict(BitsAllocated=7),
        "bits allocated 12": dict(BitsAllocated=12), "frames 0": dict(NumberOfFrames=0),
        "frames -1": dict(NumberOfFrames=-1), "frames 10^9": dict(NumberOfFrames=10 ** 9),
        "samples 0": dict(SamplesPerPixel=0), "samples 2": dict(SamplesPerPixel=2), "samples 4": dict(SamplesPerPixel=4),
        "high bit beyond bits stored": dict(HighBit=15), "pixel data too short": dict(Rows=1024, Columns=1024),
        "photometric FOO": dict(PhotometricInterpretation="FOO"), "lossy flag 99": dict(LossyImageCompression="99"),
    }
    elements = {
        "unknown VR": struct.pack("<HH2sH", 0x7FE1, 0x0010, b"ZZ", 2) + b"ab",
        "value past the end": struct.pack("<HH2sH", 0x7FE1, 0x0010, b"LO", 200) + b"ab",
        "2 GB length": struct.pack("<HH2sHL", 0x7FE1, 0x1000, b"OB", 0, 0x7FFFFFF0) + b"ab",
        "sequence without delimiter": struct.pack("<HH2sHL", 0x7FE1, 0x1001, b"SQ", 0, 0xFFFFFFFF)
        + struct.pack("<HHL", 0xFFFE, 0xE000, 20) + b"\x10\x00\x10\x00PN\x20\x00abc",
        "US of 3 bytes": struct.pack("<HH2sH", 0x7FE1, 0x0010, b"LO", 2) + b"x "
        + struct.pack("<HH2sH", 0x7FE1, 0x1002, b"US", 3) + b"abc",
    }
    good = _changed()
    deflated = _zip({"a.dcm": good}, zipfile.ZIP_DEFLATED)
    corrupt = bytearray(deflated)
    corrupt[len(corrupt) // 3:len(corrupt) // 3 + 64] = bytes(range(64))
    tgz = _tar_gz({"a.dcm": good})
    archives = {
        "encrypted zip member": ("locked.zip", patch_zip_member(_zip({"a.dcm": good}), "a.dcm", flags=0x1)),
        "zip member compressed with PPMd": ("ppmd.zip", patch_zip_member(_zip({"a.dcm": good}), "a.dcm", method=98)),
        "corrupt deflate data": ("corrupt.zip", bytes(corrupt)),
        "truncated tar.gz": ("cut.tar.gz", tgz[: len(tgz) // 2]),
        "truncated zip": ("cut.zip", deflated[: len(deflated) // 2]),
        "zip with a traversal name": ("slip.zip", _zip({"../../" + outside.lstrip("/") + ".dcm": good})),
        "nested archive": ("nested.zip", _zip({"inner.zip": _zip({"a.dcm": good})})),
        "overlapping zip (200 x 20 MB)": ("overlap.zip", overlapping_zip(200)),
        "tar.gz of 5 GB of zeros": ("zeros.tar.gz", zeros_tar_gz(5 << 30)),
        "tar.gz of 1 GB of zeros": ("zeros1.tar.gz", zeros_tar_gz(1 << 30)),
        "zip of 40 members of 8 MB zeros": ("bombs.zip", zeros_zip([f"{i}.dcm" for i in range(40)], 8 << 20)),
    }
    cases = [HostileCase(f"UID: {k}", "x.dcm", _changed(**v)) for k, v in uids.items()]
    cases += [HostileCase(f"header: {k}", "x.dcm", _changed(**v)) for k, v in headers.items()]
    cases += [HostileCase(f"element: {k}", "x.dcm", _with_tail(v)) for k, v in elements.items()]
    cases += [HostileCase(f"value: {k} 'abc'", "x.dcm", _raw_value(k, b"abc ")) for k in ("RescaleSlope", "WindowWidth")]
    cases += [HostileCase(f"archive: {k}", name, body) for k, (name, body) in archives.items()]
    cases.append(HostileCase("not DICOM", "notes.txt", b"not an image\n" * 100))
    return cases


# -- trying them ---------------------------------------------------------------------------------------------
def _upload(http, base: str, filename: str, body: bytes):
    return http.post(f"{base}/api/upload", params={"name": filename}, data=body,
                     headers={"Content-Type": "application/octet-stream"}, timeout=120)


def _verdict(response, seconds: float) -> str | None:
    """None when the answer is a clean refusal: a 4xx with JSON naming a reason for every file."""
    if response.status_code >= 500:
        return f"HTTP {response.status_code}"
    if not 400 <= response.status_code < 500:
        return f"accepted (HTTP {response.status_code}): {response.text[:200]}"
    try:
        body = response.json()
    except ValueError:
        return "answer is not JSON"
    results = body.get("results")
    if results is None:
        return None if body.get("error") else "no reason given"
    if any(r["status"] != "rejected" or not r["reason"] for r in results):
        return f"not every file refused with a reason: {results}"
    if seconds > SECONDS_PER_CASE:
        return f"took {seconds:.1f} s"
    return None


def try_hostile(http, base: str, data_dir: Path, victim_uid: str) -> ProbeResult:
    """Upload every hostile case; each must be refused cleanly and leave the archive as it was."""
    victim = http.get(f"{base}/download/instance/{victim_uid}", params={"variant": "original"}, timeout=60).content
    result = ProbeResult()
    for case in hostile_cases(victim_uid):
        started = time.monotonic()
        try:
            response = _upload(http, base, case.filename, case.body)
        except OSError as exc:
            result.add(case.name, f"connection failed: {exc}")
            continue
        problem = _verdict(response, time.monotonic() - started)
        staged = list((data_dir / "tmp").iterdir())
        if problem is None and staged:
            problem = f"left staged files {[p.name for p in staged]}"
        if problem is None and any(Path(str(OUTSIDE) + s).exists() for s in ("", ".dcm")):
            problem = f"wrote outside the data directory ({OUTSIDE})"
        now = http.get(f"{base}/download/instance/{victim_uid}", params={"variant": "original"}, timeout=60).content
        if problem is None and now != victim:
            problem = "another instance's original changed"
        result.add(case.name, problem)
    return result


def race_trial(http_factory: Callable, base: str, concurrency: int = 8) -> str | None:
    """*concurrency* uploads of one SOP Instance UID with different content at once; None when clean."""
    ds = _mr()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    bodies = []
    for index in range(concurrency):
        ds.PatientName = f"Race^{index}"
        bodies.append(_dicom(ds))
    answers: dict[int, object] = {}
    barrier = threading.Barrier(concurrency)

    def send(index: int) -> None:
        http = http_factory()
        barrier.wait()
        try:
            answers[index] = _upload(http, base, f"race-{index}.dcm", bodies[index])
        except OSError as exc:
            answers[index] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [i for i, a in answers.items() if isinstance(a, OSError) or a.status_code != 200]
    if failed:
        return f"uploads {failed} answered {[getattr(answers[i], 'status_code', answers[i]) for i in failed]}"
    statuses = {i: a.json()["results"][0]["status"] for i, a in answers.items()}
    stored = [i for i, s in statuses.items() if s == "stored"]
    if len(stored) != 1 or any(s not in ("stored", "conflict", "duplicate") for s in statuses.values()):
        return f"statuses {sorted(statuses.values())}: exactly one must be stored"
    kept = http_factory().get(f"{base}/download/instance/{ds.SOPInstanceUID}", params={"variant": "original"}, timeout=60)
    if kept.content != bodies[stored[0]]:
        return "the original kept is not the one acknowledged as stored"
    return None


def try_races(http_factory: Callable, base: str, trials: int = 3, concurrency: int = 8) -> ProbeResult:
    result = ProbeResult()
    for trial in range(trials):
        result.add(f"race {trial + 1}", race_trial(http_factory, base, concurrency))
    return result


def serve(data: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """Start ``app.py`` in its own process on a free port over *data*; returns the process and its base URL."""
    import requests

    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    environment = {**os.environ, "RADPRESS_DATA": str(data), "HOST": "127.0.0.1", "PORT": str(port),
                   "RADPRESS_DEMO": "0", "RADPRESS_DICOM_PORT": "0", **env}  # no node: 11112 may be another app's
    process = subprocess.Popen([sys.executable, "app.py"], cwd=Path(__file__).resolve().parents[1], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if requests.get(f"{base}/api/health", timeout=5).status_code == 200:
                    return process, base
            except requests.RequestException:  # not listening yet, or too busy to answer in time (a loaded machine)
                time.sleep(0.2)
        raise RuntimeError(f"the app did not start on {base} (exit code {process.poll()})")
    except BaseException:  # never leave the app (and its gunicorn) running behind
        process.terminate()
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            process.kill()
        raise


def measure_probes(trials: int = 3) -> dict:
    """Start the real app (its own process, port and data directory) and run every probe against it."""
    import requests

    from .store import Store
    from .users import Users

    password = secrets.token_urlsafe(16)

    def session():
        http = requests.Session()
        http.auth = ("probe", password)
        return http

    with tempfile.TemporaryDirectory(prefix="radpress-probe-") as tmp:
        data = Path(tmp) / "data"
        Users(Store(data)).add("probe", password, "admin")
        process, base = serve(data)
        try:
            http = session()
            victim = _upload(http, base, "victim.dcm", _changed()).json()["results"][0]["sop_uid"]
            started = time.monotonic()
            hostile = try_hostile(http, base, data, victim)
            hostile_s = time.monotonic() - started
            races = try_races(session, base, trials)
            callbacks = run_callback_probe(base, Store(data), ("probe", password), _changed(PatientName="Probe^Target"))
        finally:
            process.terminate()
            process.wait(30)
    return {
        "hostile": {"tried": hostile.tried, "refused_cleanly": hostile.clean, "failures": hostile.failures,
                    "seconds": hostile_s},
        "races": {"tried": races.tried, "clean": races.clean, "failures": races.failures},
        "callbacks": {k: callbacks[k] for k in ("callbacks", "roles", "tried", "refused", "requests", "leaks", "errors", "changed")},
        "checks": [
            {"target": "hostile inputs refused cleanly", "measured": f"{hostile.clean}/{hostile.tried}",
             "ok": hostile.clean == hostile.tried},
            {"target": "race trials clean (8 uploads of one UID)", "measured": f"{races.clean}/{races.tried}",
             "ok": races.clean == races.tried},
            {"target": "callbacks x roles refused (another study's identifiers)",
             "measured": f"{callbacks['refused']}/{callbacks['tried']} ({callbacks['callbacks']} callbacks x "
                         f"{len(callbacks['roles'])} roles, {callbacks['requests']} requests)",
             "ok": callbacks["refused"] == callbacks["tried"]},
        ],
    }


# -- callbacks x roles ---------------------------------------------------------
CALLBACK_PAGES = ("/study", "/compare", "/viewer", "/lab", "/jobs", "/policy", "/users", "/")
_COUNTERS = ("n_clicks", "n_intervals", "n_submit")
_IMAGE_MARKS = ("data:image", "iVBORw0KGgo", '"z":')


def index_snapshot(db_path) -> str:
    """A digest of every row of every table of the index (to show that a request changed nothing)."""
    import hashlib
    import sqlite3

    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        digest = hashlib.sha256()
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for table in tables:
            rows = sorted(repr(r) for r in conn.execute(f'SELECT * FROM "{table}"'))
            digest.update(f"{table}:{len(rows)}:{rows}".encode())
        return digest.hexdigest()
    finally:
        conn.close()


def _concrete(raw_id: str, value):
    """A component id from /_dash-dependencies; pattern-matching wildcards become *value*."""
    if not raw_id.startswith("{"):
        return raw_id, False
    pattern = json.loads(raw_id)
    wild = any(isinstance(v, list) for v in pattern.values())
    return {k: (value if isinstance(v, list) else v) for k, v in pattern.items()}, wild


def _prop_id(cid, prop: str) -> str:
    return (json.dumps(cid, sort_keys=True, separators=(",", ":")) if isinstance(cid, dict) else cid) + "." + prop


def _input_value(prop: str, choice, target: dict, page: str):
    if prop in _COUNTERS:
        return 1
    if prop == "pathname":
        return page
    if prop == "search":
        return f"?uid={target['study_uid']}&sop={target['sop_uid']}"
    return choice


def callback_bodies(dependency: dict, target: dict, pages=CALLBACK_PAGES) -> list[dict]:
    """Well-formed callback requests carrying *target*'s identifiers in every input and state slot."""
    sop, study = target["sop_uid"], target["study_uid"]
    choices = (sop, study, f"{sop}:0:j2k:10", target.get("series_uid") or sop)
    props = [i["property"] for i in dependency["inputs"]]
    pages = pages if "pathname" in props else ("/",)
    output = dependency["output"]
    specs = output[2:-2].split("...") if output.startswith("..") else [output]
    bodies = []
    for choice in choices:
        for page in pages:
            outputs = []
            for spec in specs:
                raw, prop = spec.rsplit(".", 1) if not spec.startswith("{") else spec.rsplit("}.", 1)
                raw = raw if not spec.startswith("{") else raw + "}"
                cid, wild = _concrete(raw, choice)
                outputs.append([{"id": cid, "property": prop}] if wild else {"id": cid, "property": prop})

            def slots(items):
                out = []
                for item in items:
                    cid, wild = _concrete(item["id"], choice)
                    one = {"id": cid, "property": item["property"],
                           "value": _input_value(item["property"], cid if item["property"] == "id" else choice, target, page)}
                    out.append([one] if wild else one)
                return out

            inputs = slots(dependency["inputs"])
            first = inputs[0][0] if isinstance(inputs[0], list) else inputs[0]
            bodies.append({"output": output, "outputs": outputs if output.startswith("..") else outputs[0],
                           "inputs": inputs, "state": slots(dependency.get("state", [])),
                           "changedPropIds": [_prop_id(first["id"], first["property"])]})
    return bodies


def _leaks(text: str, target: dict) -> list[str]:
    marks = [target["sop_uid"], target["study_uid"], target.get("series_uid"), target.get("patient_name")]
    found = [m for m in marks if m and m in text]
    return found + [m for m in _IMAGE_MARKS if m in text]


def probe_callbacks(base: str, sessions: dict, target: dict, db_path, include_background: bool = True,
                    pages=CALLBACK_PAGES) -> dict:
    """Send every server callback listed by /_dash-dependencies another study's identifiers, as each role.

    *sessions* maps a role to a logged-in ``requests.Session``; *target* names a study none of them may
    open (``study_uid``, ``sop_uid``, ``series_uid``, ``patient_name``).  A (callback, role) pair counts
    as refused when no answer was a 5xx, none carried the target's identifiers, patient name or image
    data, and the index (*db_path*) is unchanged afterwards.
    """
    first = next(iter(sessions.values()))
    dependencies = [d for d in first.get(f"{base}/_dash-dependencies", timeout=30).json() if not d.get("clientside_function")]
    if not include_background:
        dependencies = [d for d in dependencies if not d.get("background")]
    report = {"callbacks": len(dependencies), "roles": sorted(sessions), "tried": 0, "refused": 0, "requests": 0,
              "leaks": [], "errors": [], "changed": []}
    for role, http in sessions.items():
        for dependency in dependencies:
            before = index_snapshot(db_path)
            clean = True
            for body in callback_bodies(dependency, target, pages):
                response = http.post(f"{base}/_dash-update-component", json=body, timeout=60)
                report["requests"] += 1
                if response.status_code >= 500:
                    clean = False
                    report["errors"].append({"role": role, "output": dependency["output"], "status": response.status_code})
                if found := _leaks(response.text, target):
                    clean = False
                    report["leaks"].append({"role": role, "output": dependency["output"], "found": found,
                                            "status": response.status_code})
            if index_snapshot(db_path) != before:
                clean = False
                report["changed"].append({"role": role, "output": dependency["output"]})
            report["tried"] += 1
            report["refused"] += clean
    return report


def run_callback_probe(base: str, store, admin: tuple[str, str], target: bytes | Path) -> dict:
    """Set up and run :func:`probe_callbacks`: the DICOM file *target* is uploaded as a study restricted to
    one other radiologist; a demo login and a radiologist then try every callback with its identifiers.

    The probe compares the index before and after: it starts once the app's jobs for the upload are over.
    """
    import requests

    from .users import Users, set_readers

    http = requests.Session()
    http.auth = admin
    body = target if isinstance(target, bytes) else Path(target).read_bytes()
    stored = http.post(f"{base}/api/upload", files={"file": ("target.dcm", body)}, timeout=120).json()
    study_uid = stored["results"][0]["study_uid"]
    study = http.get(f"{base}/api/studies/{study_uid}", timeout=30).json()
    instance = study["instances"][0]
    found = {"study_uid": study_uid, "sop_uid": instance["sop_uid"], "series_uid": instance["series_uid"],
             "patient_name": study["patient_name"]}
    users = Users(store)
    sessions = {}
    for role, name in (("demo", "probe-demo"), ("radiologist", "probe-radiologist")):
        password = secrets.token_urlsafe(12)
        if users.get(name) is not None:
            users.remove(name)
        users.add(name, password, role)
        sessions[role] = requests.Session()
        sessions[role].post(f"{base}/login", data={"username": name, "password": password}, timeout=30, allow_redirects=False)
    if users.get("probe-reader") is None:
        users.add("probe-reader", secrets.token_urlsafe(12), "radiologist")
    set_readers(store, study_uid, ["probe-reader"], by="probe")
    _settle(http, base, store.db_path)
    report = probe_callbacks(base, sessions, found, store.db_path)
    report["target"] = found
    return report


def _settle(http, base: str, db_path, timeout: float = 300) -> None:
    """Wait until the app's jobs are over, or (an app that runs none) the index stays still for a second."""
    deadline = time.monotonic() + timeout
    last, still_since = None, time.monotonic()
    while time.monotonic() < deadline:
        states = {j["state"] for j in http.get(f"{base}/api/jobs", timeout=30).json()}
        now = index_snapshot(db_path)
        if now != last:
            last, still_since = now, time.monotonic()
        if not states & {"queued", "running"} or ("running" not in states and time.monotonic() - still_since > 1):
            return
        time.sleep(0.2)
