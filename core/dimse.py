"""The archive as a DICOM network node (PS3.4 / PS3.7): C-ECHO, C-STORE, C-FIND, C-GET and C-MOVE.

A clinic's modalities and PACS speak DIMSE, not HTTP.  Every file they send
goes through the same validated ingest as an upload (:func:`core.ingest.ingest_instance`),
an association's instances are grouped into one job per study when it ends,
queries are answered from the index (:mod:`core.query`), and every study
retrieved passes :func:`core.users.authorize` for the calling node.  A calling
node acts with the administrator's role (DICOM has no login); restrict who may
connect with the calling-AE allow-list and bind to a clinic network only.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian, HTJ2K,
                         HTJ2KLossless, HTJ2KLosslessRPCL, ImplicitVRLittleEndian, JPEG2000, JPEG2000Lossless,
                         JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless,
                         JPEGLSNearLossless, RLELossless, UID)
from pynetdicom import AE, AllStoragePresentationContexts, build_context, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelFind,
                                  PatientRootQueryRetrieveInformationModelGet,
                                  PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove,
                                  Verification)

from . import query
from .errors import InvalidHeaderError, InvalidOptionError, RadPressError
from .ingest import ingest_instance
from .jobs import Jobs
from .pixels import read_dataset
from .store import Store
from .users import User, authorize, record_access
from .validate import check_uid

__all__ = ["Peer", "NodeConfig", "DicomNode", "parse_peers", "format_peers", "stored_peers", "set_peers", "dicom_peers", "find",
           "TRANSFER_SYNTAXES"]

log = logging.getLogger(__name__)

# What C-STORE accepts: uncompressed, deflated, JPEG, JPEG-LS, JPEG 2000, HTJ2K and RLE (ingest decides the rest).
TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian,
                     JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
                     JPEG2000Lossless, JPEG2000, HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K, RLELossless]
_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian}
_LITTLE_ENDIAN = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}  # pynetdicom converts between these only
_AE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # PS3.5 AE VR: 16 characters, no backslash or control characters
_MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1-255

# C-STORE / retrieve statuses (PS3.4 B.2.3, C.4.2.1.5)
_SUCCESS, _CANNOT_UNDERSTAND, _DUPLICATE, _NOT_AUTHORIZED = 0x0000, 0xC000, 0x0111, 0x0124
_IDENTIFIER_INVALID, _UNABLE_TO_PROCESS = 0xA900, 0xC000  # an unknown C-MOVE destination: pynetdicom answers A801


@dataclass(frozen=True)
class Peer:
    """A node C-MOVE may send to: its AE title, host and port."""

    ae_title: str
    host: str
    port: int


def _ae_title(text: str, what: str) -> str:
    title = text.strip()
    if not _AE.fullmatch(title):
        raise InvalidOptionError(f"{what} {text[:40]!r} is not an AE title: 1-16 printable characters, no backslash "
                                 "(PS3.5 AE).")
    return title


def parse_peers(text: str) -> dict[str, Peer]:
    """``AE@host:port,…`` (RADPRESS_DICOM_PEERS) as peers by AE title; a malformed entry is refused by name."""
    peers = {}
    for entry in filter(None, (part.strip() for part in (text or "").split(","))):
        match = re.fullmatch(r"(.+)@([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})", entry)
        if not match or not 1 <= int(match.group(3)) <= 65535:
            raise InvalidOptionError(f"DICOM peer {entry[:80]!r} is not AE@host:port.",
                                     hint="Example: RADPRESS_DICOM_PEERS=PACS@10.0.0.5:104,VIEWER@ws12:11112")
        title = _ae_title(match.group(1), "The peer's AE title")
        if title in peers:  # the second used to replace the first silently: C-MOVE would go to a host nobody chose
            raise InvalidOptionError(f"DICOM peer {title} is given twice ({format_peers({title: peers[title]})} and "
                                     f"{entry[:80]}).", hint="Give each AE title once.")
        peers[title] = Peer(title, match.group(2).strip("[]"), int(match.group(3)))
    return peers


def format_peers(peers: dict[str, Peer]) -> str:
    """The inverse of :func:`parse_peers`."""
    return ",".join(f"{p.ae_title}@{p.host}:{p.port}" for p in peers.values())


def stored_peers(store: Store) -> dict[str, Peer] | None:
    """The C-MOVE destinations an administrator set in the index, or None (RADPRESS_DICOM_PEERS applies)."""
    rows = store.query("SELECT value FROM settings WHERE key='dicom_peers'")
    return parse_peers(json.loads(rows[0]["value"])) if rows else None


def set_peers(store: Store, text: str | None, user: str) -> dict[str, Peer] | None:
    """Replace the C-MOVE destinations (None: back to RADPRESS_DICOM_PEERS); validated first, audited."""
    if text is not None and not isinstance(text, str):
        raise InvalidOptionError("Send the peers as text AE@host:port,… (or null for RADPRESS_DICOM_PEERS).")
    peers = parse_peers(text) if text is not None else None
    old = stored_peers(store)
    with store.connect() as db:
        if peers is None:
            db.execute("DELETE FROM settings WHERE key='dicom_peers'")
        else:
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('dicom_peers', ?)",
                       (json.dumps(format_peers(peers)),))
        db.execute("INSERT INTO audit (at, user, what, old, new) VALUES (?,?,?,?,?)",
                   (time.time(), user, "DICOM peers", json.dumps(None if old is None else format_peers(old)),
                    json.dumps(None if peers is None else format_peers(peers))))
    return peers


def dicom_peers(store: Store, node: "DicomNode | None") -> dict:
    """What the Policy page and /api/dicom/peers show: the peers in force, where they come from, the node's address."""
    configured = node.config.peers if node is not None else parse_peers(os.environ.get("RADPRESS_DICOM_PEERS", ""))
    stored = stored_peers(store)
    return {"peers": format_peers(configured if stored is None else stored), "source": "environment" if stored is None else "index",
            "configured": format_peers(configured),
            "node": None if node is None else {"ae_title": node.config.ae_title, "host": node.config.host, "port": node.port}}


@dataclass(frozen=True)
class NodeConfig:
    """Where the node listens, under which AE title, whom it sends to and (optionally) whom it accepts."""

    port: int = 11112
    ae_title: str = "RADPRESS"
    host: str = "127.0.0.1"
    peers: dict[str, Peer] = field(default_factory=dict)
    allowed: frozenset[str] | None = None  # calling AE titles accepted; None: any

    @classmethod
    def from_env(cls, port: int | None = None) -> "NodeConfig":
        """RADPRESS_DICOM_PORT, RADPRESS_AE_TITLE, RADPRESS_DICOM_HOST (else HOST), RADPRESS_DICOM_PEERS, RADPRESS_DICOM_ALLOWED."""
        env = os.environ
        if port is None:
            text = env.get("RADPRESS_DICOM_PORT", "11112")
            if not text.isdigit() or int(text) > 65535:
                raise InvalidOptionError(f"RADPRESS_DICOM_PORT {text[:20]!r} is not a port (0 disables the node).")
            port = int(text)
        allowed = env.get("RADPRESS_DICOM_ALLOWED", "").strip()
        return cls(port=port, ae_title=_ae_title(env.get("RADPRESS_AE_TITLE", "RADPRESS"), "RADPRESS_AE_TITLE"),
                   host=env.get("RADPRESS_DICOM_HOST", env.get("HOST", "127.0.0.1")),
                   peers=parse_peers(env.get("RADPRESS_DICOM_PEERS", "")),
                   allowed=frozenset(_ae_title(a, "RADPRESS_DICOM_ALLOWED entry") for a in allowed.split(",") if a.strip())
                   if allowed else None)


def _refusal(exc: RadPressError) -> Dataset:
    """A query or retrieve that cannot run: A900 for an identifier that breaks a rule, else C000, with the reason."""
    bad_identifier = isinstance(exc, (InvalidOptionError, InvalidHeaderError))
    return _status(_IDENTIFIER_INVALID if bad_identifier else _UNABLE_TO_PROCESS, str(exc))


def _status(code: int, comment: str = "") -> Dataset:
    """A DIMSE status with a reason the sender's log shows (Error Comment is LO: 64 characters)."""
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = comment[:64]
    return status


class DicomNode:
    """One pynetdicom server bound to the archive; :meth:`start` returns the port it listens on."""

    def __init__(self, store: Store, jobs: Jobs, config: NodeConfig):
        self.store, self.jobs, self.config = store, jobs, config
        self._server = None
        self.port = 0
        self._received: dict[int, set[str]] = {}  # association id -> studies stored in it
        self._lock = threading.Lock()
        # Received datasets are spooled to a file as they arrive, not held in memory (a slide can be gigabytes).
        pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
        self.ae = AE(ae_title=config.ae_title)
        self.ae.require_called_aet = False
        if config.allowed is not None:
            self.ae.require_calling_aet = sorted(config.allowed)
        for context in AllStoragePresentationContexts:
            # scp_role / scu_role: accept the role a C-GET requestor proposes for its storage contexts
            self.ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        for sop_class in (Verification, StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelFind,
                          StudyRootQueryRetrieveInformationModelGet, PatientRootQueryRetrieveInformationModelGet,
                          StudyRootQueryRetrieveInformationModelMove, PatientRootQueryRetrieveInformationModelMove):
            self.ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> int:
        handlers = [(evt.EVT_C_ECHO, self._echo), (evt.EVT_C_STORE, self._store), (evt.EVT_C_FIND, self._find),
                    (evt.EVT_C_GET, self._get), (evt.EVT_C_MOVE, self._move), (evt.EVT_CONN_CLOSE, self._closed)]
        try:
            self._server = self.ae.start_server((self.config.host, self.config.port), block=False, evt_handlers=handlers)
        except OSError as exc:  # the port is taken (another RadPress, a PACS) or the address is not this host's
            raise InvalidOptionError(f"The DICOM node cannot listen on {self.config.host}:{self.config.port} ({exc.strerror}).",
                                     hint="Set RADPRESS_DICOM_PORT to a free port (0 runs without the node) or "
                                          "RADPRESS_DICOM_HOST to an address of this machine.") from None
        self.port = self._server.server_address[1]
        log.info("DICOM node %s listening on %s:%d", self.config.ae_title, self.config.host, self.port)
        return self.port

    @property
    def listening(self) -> bool:
        """True while the node's socket is open (``/api/health``)."""
        return self._server is not None and self._server.socket.fileno() != -1

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def peers(self) -> dict[str, Peer]:
        """C-MOVE destinations: those an administrator saved (Policy page, PUT /api/dicom/peers), else the configured ones."""
        stored = stored_peers(self.store)
        return self.config.peers if stored is None else stored

    @staticmethod
    def user(event) -> User:
        """The calling node as a user of :func:`core.users.authorize` (administrator's role: DICOM has no login)."""
        return User(f"DICOM {str(event.assoc.requestor.ae_title).strip()}", "admin")

    # -- C-ECHO / C-STORE ---------------------------------------------------------
    def _echo(self, event) -> int:
        return _SUCCESS

    def _store(self, event) -> Dataset | int:
        """One instance through the validated ingest; its study gets a job when the association ends."""
        try:
            authorize(self.store, self.user(event), "upload")
        except RadPressError as exc:
            return _status(_NOT_AUTHORIZED, str(exc))
        name = f"C-STORE from {self.user(event).name[6:]}"
        with open(event.dataset_path, "rb") as received:  # pynetdicom's spool file (STORE_RECV_CHUNKED_DATASET)
            result = ingest_instance(self.store, received, name)
        if result.status == "rejected":
            log.warning("%s refused: %s", name, result.reason)
            return _status(_CANNOT_UNDERSTAND, result.reason)
        if result.status == "conflict":  # kept aside for an administrator, never served in place of the stored one
            return _status(_DUPLICATE, "conflict: another object with this SOP Instance UID is stored")
        if result.status == "stored":
            with self._lock:
                self._received.setdefault(id(event.assoc), set()).add(result.study_uid)
        return _SUCCESS

    def _closed(self, event) -> None:
        """The association ended (released, aborted or dropped): one job per study it stored into."""
        with self._lock:
            studies = self._received.pop(id(event.assoc), set())
        for study_uid in sorted(studies):
            self.jobs.submit(study_uid)

    # -- C-FIND -----------------------------------------------------------------
    def _find(self, event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """Matches from the index (:mod:`core.query`), each with the keys the request asked for."""
        try:
            matches = find(self.store, self.user(event), event.identifier, _patient_root(event, "find"))
            for found in matches:
                if event.is_cancelled:
                    yield 0xFE00, None
                    return
                found.RetrieveAETitle = self.config.ae_title
                yield 0xFF00, found
        except RadPressError as exc:
            yield _refusal(exc), None

    # -- C-GET / C-MOVE ---------------------------------------------------------
    def _matching(self, event) -> list[str]:
        """The SOP Instance UIDs a retrieve identifier names, each authorized for the calling node."""
        identifier = event.identifier
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        keys = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
        if level not in keys or (level == "PATIENT" and not _patient_root(event, "get", "move")):
            raise InvalidOptionError(f"Query/Retrieve Level (0008,0052) {level[:16]!r} is not "
                                     f"{'PATIENT, ' if _patient_root(event, 'get', 'move') else ''}STUDY, SERIES or IMAGE.")
        clauses, params = [], []
        for lvl, keyword in keys.items():
            value = identifier.get(keyword)
            values = [] if value in (None, "") else [str(v) for v in (value if isinstance(value, (list, tuple)) or
                                                                        hasattr(value, "__iter__") and not isinstance(value, str)
                                                                        else [value])]
            if lvl == level and not values:
                raise InvalidOptionError(f"A {level} retrieve needs {keyword}: it names what to send.")
            if not values:
                continue
            if keyword != "PatientID":
                values = [check_uid(v, keyword) for v in values]
            column = {"PatientID": "p.patient_id", "StudyInstanceUID": "s.study_uid", "SeriesInstanceUID": "i.series_uid",
                      "SOPInstanceUID": "i.sop_uid"}[keyword]
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            params += values
            if lvl == level:
                break
        rows = self.store.query(
            "SELECT i.sop_uid, s.study_uid FROM instances i JOIN series s USING (series_uid) JOIN studies st USING (study_uid) "
            f"JOIN patients p USING (patient_key) WHERE {' AND '.join(clauses)} ORDER BY s.study_uid, s.number, i.number, i.sop_uid",
            params)
        user = self.user(event)
        for row in rows:
            authorize(self.store, user, "download", sop_uid=row["sop_uid"])
        address = str(event.assoc.requestor.address)
        for study_uid in dict.fromkeys(r["study_uid"] for r in rows):  # the access log: who took which study
            record_access(self.store, user, "download", study_uid, address=address)
        return [r["sop_uid"] for r in rows]

    def _get(self, event):
        try:
            sops = self._matching(event)
        except RadPressError as exc:
            yield 1
            yield _refusal(exc), None
            return
        yield len(sops)
        yield from self._send(event, sops, lambda: event.assoc)

    def _move(self, event):
        destination = str(event.move_destination, "ascii", "replace") if isinstance(event.move_destination, bytes) \
            else str(event.move_destination)
        peer = self.peers().get(destination.strip())
        if peer is None:
            log.warning("C-MOVE to unknown destination %r (RADPRESS_DICOM_PEERS)", destination[:16])
            yield None, None
            return
        try:
            sops = self._matching(event)
        except RadPressError as exc:
            yield peer.host, peer.port
            yield 1
            yield _refusal(exc), None
            return
        yield peer.host, peer.port, {"contexts": self._contexts(sops), "ae_title": peer.ae_title}
        yield len(sops)
        yield from self._send(event, sops, lambda: _sub_association(event, peer))

    def _contexts(self, sops: list[str]) -> list:
        """Per SOP class: each stored transfer syntax, and uncompressed for a destination that takes only that."""
        wanted: dict[str, set[str]] = {}
        if sops:
            marks = ",".join("?" * len(sops))
            for row in self.store.query(f"SELECT DISTINCT i.sop_class, a.transfer_syntax FROM instances i JOIN artifacts a "
                                        f"USING (sop_uid) WHERE a.variant IN ('original', 'lossless') AND i.sop_uid IN ({marks})",
                                        sops):
                wanted.setdefault(row["sop_class"], set()).add(row["transfer_syntax"])
        contexts = []
        for sop_class, syntaxes in sorted(wanted.items()):
            for syntax in sorted(syntaxes - _UNCOMPRESSED):
                contexts.append(build_context(sop_class, [syntax]))
            contexts.append(build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
        return contexts[:_MAX_CONTEXTS]

    def _send(self, event, sops: list[str], association):
        """Each instance as stored, else its bit-exact lossless copy, else decoded: whichever the receiver accepted."""
        for sop in sops:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            try:
                yield 0xFF00, self._fit(sop, _accepted(association()))
            except RadPressError as exc:
                log.warning("retrieve of %s failed: %s", sop, exc)
                yield 0xFF00, None  # pynetdicom counts a missing dataset as a failed sub-operation

    def _fit(self, sop: str, accepted: dict[str, set[str]]) -> Dataset:
        row = self.store.instance(sop)
        syntaxes = accepted.get(row["sop_class"], set())
        for variant in ("original", "lossless"):
            artifact = self.store.artifact(sop, variant)
            if artifact is None:
                continue
            syntax = UID(artifact.transfer_syntax)
            if syntax in syntaxes or (syntax in _LITTLE_ENDIAN and syntaxes & _LITTLE_ENDIAN):
                ds = read_dataset(artifact.path)
                if ds.SOPInstanceUID == sop:  # a lossless copy is the same instance; anything else is not sent as it
                    return ds
        ds = read_dataset(self.store.artifact(sop, "original").path)
        if syntaxes & _UNCOMPRESSED and ds.file_meta.TransferSyntaxUID.is_compressed:
            # the same instance decoded: its SOP Instance UID stays; an already-lossy one keeps Lossy Image Compression "01";
            # its stored values too (as_rgb would turn a YBR_FULL original's master into other, RGB values)
            ds.decompress(generate_instance_uid=False, as_rgb=False)
        elif ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian and syntaxes & _LITTLE_ENDIAN:
            from .dicomweb import _decoded  # pynetdicom never swaps bytes: a big-endian file for a little-endian receiver

            ds = _decoded(ds)
        return ds


_FINDERS = {"STUDY": query.find_studies, "SERIES": query.find_series, "IMAGE": query.find_instances}
_LEVEL_KEYS = {"PATIENT": {"PatientID", "PatientName", "PatientBirthDate"} & set(query.STUDY_KEYS),
               "STUDY": set(query.STUDY_KEYS), "SERIES": set(query.SERIES_KEYS), "IMAGE": set(query.INSTANCE_KEYS)}


def find(store: Store, user: User, identifier: Dataset, patient_root: bool) -> Iterator[Dataset]:
    """C-FIND: the identifier's non-empty keys of its level (and above) match; every key it names is returned.

    A key this archive does not index is returned empty (PS3.4 C.2.2.1.4); a
    PATIENT-level query (Patient Root) returns each patient of the matching studies once, with their count.
    """
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in _FINDERS and not (level == "PATIENT" and patient_root):
        raise InvalidOptionError(f"Query/Retrieve Level (0008,0052) {level[:16]!r} is not "
                                 f"{'PATIENT, ' if patient_root else ''}STUDY, SERIES or IMAGE.")
    keys = _LEVEL_KEYS[level]
    asked, filters = [], {}
    for element in identifier:
        keyword = element.keyword
        if not keyword or keyword in ("QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle") or element.VR == "SQ":
            continue
        asked.append(keyword)
        value = element.value
        if keyword in keys and value not in (None, "", b""):
            filters[keyword] = [str(v) for v in value] if isinstance(value, (list, tuple, MultiValue)) else str(value)
    matches = _pages(query.find_studies if level == "PATIENT" else _FINDERS[level], store, user, filters)
    for match in _patients(matches) if level == "PATIENT" else matches:
        answer = Dataset()
        answer.SpecificCharacterSet = "ISO_IR 192"  # the index holds decoded text: answered as UTF-8
        answer.QueryRetrieveLevel = level
        for keyword in asked:
            value = match.get(keyword)
            setattr(answer, keyword, "" if value is None else value)
        yield answer


def _pages(finder, store: Store, user: User, filters: dict) -> Iterator[dict]:
    """Every match, page by page (C-FIND has no limit)."""
    offset = 0
    while True:
        page = finder(store, user, filters, query.MAX_LIMIT, offset)
        yield from page
        if len(page) < query.MAX_LIMIT:
            return
        offset += len(page)


def _patients(studies: Iterator[dict]) -> list[dict]:
    """Each patient of the matching studies once, with Number of Patient Related Studies."""
    patients: dict[tuple, dict] = {}
    for study in studies:
        key = (study["PatientID"], study["PatientName"])
        patient = patients.setdefault(key, {**study, "NumberOfPatientRelatedStudies": 0})
        patient["NumberOfPatientRelatedStudies"] += 1
    return list(patients.values())


def _patient_root(event, *services: str) -> bool:
    abstract = event.context.abstract_syntax
    roots = {"find": PatientRootQueryRetrieveInformationModelFind, "get": PatientRootQueryRetrieveInformationModelGet,
             "move": PatientRootQueryRetrieveInformationModelMove}
    return any(abstract == roots[s] for s in services)


def _accepted(assoc) -> dict[str, set[str]]:
    """Transfer syntaxes the receiving side accepted, per SOP class."""
    accepted: dict[str, set[str]] = {}
    for context in getattr(assoc, "accepted_contexts", []) if assoc is not None else []:
        accepted.setdefault(context.abstract_syntax, set()).add(UID(context.transfer_syntax[0]))
    return accepted


def _sub_association(event, peer: Peer):
    """The association pynetdicom opened to the C-MOVE destination (it keeps no handle for the handler)."""
    for assoc in event.assoc.ae.active_associations:
        if assoc is not event.assoc and assoc.is_requestor and assoc.is_established and \
                str(assoc.acceptor.ae_title).strip() == peer.ae_title and assoc.acceptor.port == peer.port:
            return assoc
    return None
