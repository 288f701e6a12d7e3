"""DICOMweb (PS3.18) at ``/dicom-web``: QIDO-RS from the index, WADO-RS with transfer-syntax negotiation, STOW-RS.

The same login, :func:`core.users.authorize` rule and ingest as the rest of
the app.  WADO-RS never fools a reader: ``*`` gives what is stored; Explicit
VR Little Endian gives the decoded stored values; a lossless syntax gives the
stored lossless copy or a cached transcode, bit-exact and with the original
SOP Instance UID; a lossy syntax only when asked for by name and allowed by
the policy, as the lossy-marked derived instance (its own SOP Instance UID,
``X-Lossy-Compression``).  What cannot be served is a 406 with the reason.
"""

from __future__ import annotations

import copy
import io
import math
import os
import re
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from .archive import THUMBNAIL_SIZE, Forbidden, _cache, thumbnail_bytes, variant_file
from .auth import client_address, current_user, require
from .codecs import CODECS, JPEGXLJPEGRecompression, JPEGXLLossless, codec_for_uid
from .compress import compress
from .derive import LossyHistory
from .errors import InvalidOptionError, RadPressError
from .ingest import ingest_instance
from .locks import item_lock
from .pixels import decode_frame, pixel_spec, read_dataset
from .query import INSTANCE_KEYS, SERIES_KEYS, STUDY_KEYS, as_json, find_instances, find_series, find_studies
from .render import encode_image, to_display
from .store import Store, StoreError
from .users import authorize, record_access, visible_instances

__all__ = ["blueprint", "NotAcceptable", "negotiate"]

blueprint = Blueprint("dicomweb", __name__, url_prefix="/dicom-web")

DICOM_JSON = "application/dicom+json"
# Media types of single compressed frames (PS3.18 Table 8.7.3-2) and the lossless syntax each stands for.
FRAME_TYPES = {"image/jphc": UID("1.2.840.10008.1.2.4.201"), "image/jls": UID("1.2.840.10008.1.2.4.80"),
               "image/jp2": UID("1.2.840.10008.1.2.4.90")}
MAX_STOW_BYTES = 20 << 30  # as an uploaded archive (core.ingest.Limits)
# STOW-RS Failure Reason (0008,1197), PS3.18 Table I.2-3 / PS3.4 Annex B
_FAILURE = {"conflict": 0x0111, "rejected": 0xA900, "skipped": 0xC000, "wrong study": 0xA900}


class NotAcceptable(RadPressError):
    """No representation the request accepts can be served (its reason says why)."""

    http_status = 406


def _store() -> tuple[Store, object]:
    """The archive and job queue :func:`core.routes.init_archive` installed."""
    ext = current_app.extensions["radpress"]
    return ext["store"], ext["jobs"]


# -- CORS for a viewer hosted elsewhere (RADPRESS_CORS_ORIGINS=https://viewer.example,...) ----------------
@blueprint.after_request
def _cors(response: Response) -> Response:
    origin = request.headers.get("Origin", "")
    allowed = {o.strip() for o in os.environ.get("RADPRESS_CORS_ORIGINS", "").split(",") if o.strip()}
    if origin and origin in allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = "X-Lossy-Compression, Warning, Content-Type, Content-Length"
        if request.method == "OPTIONS":  # a preflight: no credentials, no data
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Accept, Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
    response.vary.add("Origin")
    return response


# -- errors: JSON, never the app's HTML page ----------------------------------------------
@blueprint.route("", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@blueprint.route("/", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@blueprint.route("/<path:_rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def _unknown(_rest=""):
    return jsonify(error=f"No DICOMweb route {request.method} {request.path}.",
                   hint="QIDO-RS /studies, WADO-RS /studies/{study}[/series/{series}[/instances/{sop}]], STOW-RS POST /studies."), 404


# -- QIDO-RS -------------------------------------------------------------------------
_RESERVED = {"limit", "offset", "includefield", "fuzzymatching", "accept"}


def _filters(keys: dict, **path) -> tuple[dict, list[str]]:
    """Query parameters as matching keys by keyword (tags like 00100020 too), and the parameters not supported."""
    from pydicom.datadict import keyword_for_tag

    out, ignored = {}, []
    for key, value in request.args.items(multi=True):
        if key in _RESERVED:
            continue
        keyword = keyword_for_tag(int(key, 16)) if re.fullmatch(r"[0-9A-Fa-f]{8}", key) else key
        if keyword in keys:
            out[keyword] = value
        else:
            ignored.append(key[:64])
    out.update({k: v for k, v in path.items() if v})
    return out, ignored


def _qido(rows: list[dict], ignored: list[str]) -> Response:
    """Every attribute the index holds for each match (PS3.18 lets a server return more than includefield names)."""
    response = Response(_json([as_json(row) for row in rows]), mimetype=DICOM_JSON)
    if ignored:  # PS3.18 §8.3.4.3: unsupported parameters are ignored, with a Warning
        names = ", ".join(re.sub(r"[^\w.-]", "?", k) for k in dict.fromkeys(ignored))
        response.headers["Warning"] = f'299 RadPress "The following parameters are unsupported: {names}"'
    return response


def _json(value) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


def _search(find, store: Store, keys: dict, **path) -> tuple[list[dict], list[str]]:
    filters, ignored = _filters(keys, **path)
    return find(store, current_user(), filters, request.args.get("limit"), request.args.get("offset")), ignored


@blueprint.get("/studies")
@require("view")
def qido_studies():
    store, _ = _store()
    return _qido(*_search(find_studies, store, STUDY_KEYS))


@blueprint.get("/series")
@blueprint.get("/studies/<study>/series")
@require("view")
def qido_series(study=None):
    store, _ = _store()
    if study:
        authorize(store, current_user(), "view", study_uid=study)
    return _qido(*_search(find_series, store, SERIES_KEYS, StudyInstanceUID=study))


@blueprint.get("/instances")
@blueprint.get("/studies/<study>/instances")
@blueprint.get("/studies/<study>/series/<series>/instances")
@require("view")
def qido_instances(study=None, series=None):
    store, _ = _store()
    if study:
        authorize(store, current_user(), "view", study_uid=study)
    return _qido(*_search(find_instances, store, INSTANCE_KEYS, StudyInstanceUID=study, SeriesInstanceUID=series))


# -- selecting what a WADO-RS path names ------------------------------------------------
def _instances(store: Store, study: str, series: str | None = None, sop: str | None = None, action: str = "download") -> list:
    """The visible instance rows a path names (404 when it names nothing, 403 when not this user's)."""
    user = current_user()
    authorize(store, user, action, study_uid=study, sop_uid=sop)  # an instance: in this study and visible to the user
    rows = [store.instance(sop)] if sop else visible_instances(store, user, study)  # one query per frame request
    if series:
        rows = [r for r in rows if r["series_uid"] == series]
    if sop:
        rows = [r for r in rows if r["sop_uid"] == sop]
    if not rows:
        what = f"instance {sop}" if sop else f"series {series}" if series else f"study {study}"
        raise StoreError(f"No {what} in study {study} that you may open.")
    return rows


# -- transfer-syntax negotiation -------------------------------------------------------
def _accept() -> str:
    """The media types asked for: the ``accept`` query parameter (PS3.18 §8.3.3.1, for links), else the Accept header."""
    return request.args.get("accept") or request.headers.get("Accept", "")


def _accepted(header: str, default_type: str) -> list[tuple[str, dict]]:
    """The Accept header as (media type, parameters) in order of preference (q)."""
    items = []
    for n, part in enumerate(re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", header or "")):
        fields = [f.strip() for f in part.split(";") if f.strip()]
        if not fields:
            continue
        params = {}
        for field in fields[1:]:
            key, _, value = field.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", 1))
        except ValueError:
            q = 1.0
        items.append((-q, n, fields[0].lower(), params))
    if not items:
        return [(default_type, {})]
    return [(t, p) for _, _, t, p in sorted(items)]


def negotiate(accept: str) -> list[str]:
    """Transfer syntaxes a WADO-RS instance request accepts, best first (``*`` = as stored)."""
    syntaxes = []
    for media, params in _accepted(accept, "multipart/related"):
        if media not in ("multipart/related", "*/*", "application/dicom"):
            continue
        kind = params.get("type", "application/dicom").lower()
        if media == "multipart/related" and kind not in ("application/dicom", "*/*", "*"):
            continue
        syntaxes.append(params.get("transfer-syntax", str(ExplicitVRLittleEndian)))
    if not syntaxes:
        raise NotAcceptable(f"Cannot answer Accept: {accept!r} with DICOM instances.",
                            hint='Ask for multipart/related; type="application/dicom"[; transfer-syntax=UID or *].')
    return syntaxes


class _Plan:
    """How one instance is served in one transfer syntax (decided before the first byte is sent)."""

    def __init__(self, store: Store, row, syntax: str, alone: bool = True):
        self.store, self.row, self.sop = store, row, row["sop_uid"]
        self.original = store.artifact(self.sop, "original")
        stored = self.original.transfer_syntax
        self.syntax, self.lossy = (stored if syntax == "*" else syntax), False
        if not row["rows"] and not alone and self.syntax != ExplicitVRLittleEndian:
            self.syntax = stored  # a report or PDF in a study asked for in an image syntax: as stored, its part says so
        if self.syntax == stored:
            self.kind = "original"
            return
        if not re.fullmatch(r"[0-9.]{1,64}", self.syntax):
            raise InvalidOptionError(f"transfer-syntax={self.syntax[:80]!r} is not a UID.")
        codec = codec_for_uid(self.syntax)
        if self.syntax == ExplicitVRLittleEndian:
            self.kind = "decoded"
        elif not row["rows"]:
            raise NotAcceptable(f"Instance {self.sop} holds no image; it is served as stored ({stored}).",
                                hint="Ask for transfer-syntax=*.")
        elif codec is None:
            raise NotAcceptable(f"Transfer syntax {self.syntax} ({UID(self.syntax).name}) is not served.",
                                hint="Ask for * (as stored), 1.2.840.10008.1.2.1, or a lossless JPEG 2000, JPEG-LS or HTJ2K syntax.")
        elif self.syntax == JPEGXLJPEGRecompression:  # its codestream must be a recompressed JPEG file, not ours
            raise NotAcceptable(f"Transfer syntax {self.syntax} (JPEG XL JPEG Recompression) holds a recompressed JPEG "
                                "file; only an original stored so is served in it.",
                                hint=f"Ask for {JPEGXLLossless} (JPEG XL lossless) or * (as stored).")
        elif not codec.lossy:
            self.kind, self.codec = "lossless", codec
            if not any(c.name == codec.name and not c.lossy and c.writes and c.is_available for c in CODECS):
                raise NotAcceptable(f"No {codec.label} encoder is installed here.")
        else:
            self._lossy(codec)

    def _lossy(self, codec) -> None:
        """A lossy syntax named by the request: the derived, lossy-marked copy the policy makes (made now), or 406."""
        try:
            vf = variant_file(self.store, self.sop, "lossy")
        except Forbidden as exc:
            raise NotAcceptable(str(exc), hint="Ask for a lossless transfer syntax, or * for the original.") from None
        vf.close()
        if vf.transfer_syntax != self.syntax:
            raise NotAcceptable(f"Lossy copies are made as {vf.transfer_syntax} ({UID(vf.transfer_syntax).name}) "
                                f"here, not {self.syntax} ({codec.label}).", hint=f"Ask for transfer-syntax={vf.transfer_syntax}.")
        self.kind, self.lossy = "lossy", True

    def open(self) -> tuple[bytes | io.BufferedReader, str, dict]:
        """(body, transfer syntax, extra headers)."""
        history = LossyHistory.from_index(self.store.instance(self.sop))
        if self.kind == "original":
            return open(self.original.path, "rb"), self.syntax, _lossy_headers(history)
        if self.kind == "lossy":  # made when planned: now a cache hit
            vf = variant_file(self.store, self.sop, "lossy")
            return vf.stream, self.syntax, _lossy_headers(history.then(vf.lossy_ratio, vf.method))
        if stored := self._stored_lossless():
            return open(stored.path, "rb"), self.syntax, _lossy_headers(history)
        return io.BytesIO(self._transcoded()), self.syntax, _lossy_headers(history)

    def prepare(self) -> None:
        """Make (and cache) a transcode now, so that one that fails is a 4xx before the first byte, not a cut answer."""
        if self.kind in ("decoded", "lossless") and not self._stored_lossless():
            self._transcoded()

    def _stored_lossless(self):
        stored = self.store.artifact(self.sop, "lossless") if self.kind == "lossless" else None
        return stored if stored is not None and stored.transfer_syntax == self.syntax else None

    def _transcoded(self) -> bytes:
        key = f"{self.original.checksum}:wado:{self.syntax}"
        cache = _cache(self.store)
        data = cache.get(key)
        if data is None:
            with item_lock(self.store.root, f"variant:{key}"):
                data = cache.get(key)
                if data is None:
                    data = self._encode()
                    cache.set(key, data)
        return data

    def _encode(self) -> bytes:
        ds = read_dataset(self.original.path)
        if self.kind == "decoded":
            out = _decoded(ds)
        else:
            out = compress(ds, self.codec.name, "lossless").dataset
            out.file_meta.TransferSyntaxUID = UID(self.syntax)  # .201 and .202 are both HTJ2K lossless codestreams
        buffer = io.BytesIO()
        out.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


def _decoded(ds: Dataset) -> Dataset:
    """*ds* as Explicit VR Little Endian with its stored values, decoded frame by frame.

    Everything else, the SOP Instance UID and a lossy history included, is
    copied as it was (binary words of a big-endian file swapped, as
    :func:`core.derive.derived_header` does for compressed copies).
    """
    from .derive import _swap_words

    out = Dataset()
    for tag in ds.keys():
        if tag not in (0x7FE00010, 0x7FE00001, 0x7FE00002):  # Pixel Data and its offset tables
            out.add(copy.deepcopy(ds[tag]))
    out.file_meta = copy.deepcopy(ds.file_meta)
    if ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian:
        _swap_words(out)
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "PixelData" in ds:
        spec = pixel_spec(ds)
        frames = np.stack([decode_frame(ds, i) for i in range(spec.frames)])
        out.PixelData = frames.astype(frames.dtype.newbyteorder("<")).tobytes()
        out["PixelData"].VR = "OB" if spec.bits_allocated <= 8 else "OW"
        out.PhotometricInterpretation = spec.photometric  # what the decoder gave (YBR_FULL_422 comes back YBR_FULL)
        if spec.samples == 3:
            out.PlanarConfiguration = 0  # decoded frames are (rows, columns, samples)
    return out


def _lossy_headers(history: LossyHistory) -> dict:
    value = history.header()
    return {"X-Lossy-Compression": value} if value else {}


def _bulk(parts: list[tuple[dict, bytes]], kind: str) -> Response:
    """Bulk data or frames: multipart/related, or one part as the whole body when the Accept header asks for
    no multipart (OHIF's ``singlepart`` data sources)."""
    preferred = _accepted(_accept(), "multipart/related")[0][0]
    if len(parts) == 1 and preferred not in ("multipart/related", "*/*"):
        headers, payload = parts[0]
        return Response(payload, content_type=headers["Content-Type"])
    return _multipart(parts, kind)


def _multipart(parts, kind: str) -> Response:
    """A streamed multipart/related answer; *parts* yields (headers, body) with body bytes or a file."""
    boundary = uuid.uuid4().hex

    def body():
        for headers, payload in parts:
            yield f"--{boundary}\r\n".encode() + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n"
            if isinstance(payload, (bytes, bytearray)):
                yield bytes(payload)
            else:
                with payload:
                    for chunk in iter(lambda: payload.read(1 << 20), b""):
                        yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return Response(stream_with_context(body()),
                    content_type=f'multipart/related; type="{kind}"; boundary={boundary}')


# -- WADO-RS: instances -----------------------------------------------------------------
@blueprint.get("/studies/<study>")
@blueprint.get("/studies/<study>/series/<series>")
@blueprint.get("/studies/<study>/series/<series>/instances/<sop>")
@require("download")
def retrieve(study, series=None, sop=None):
    store, _ = _store()
    rows = _instances(store, study, series, sop)
    plans, reasons = None, []
    for syntax in negotiate(_accept()):
        try:
            plans = [_Plan(store, row, syntax, alone=sop is not None) for row in rows]
            break
        except NotAcceptable as exc:
            reasons.append(str(exc))
    if plans is None:
        raise NotAcceptable(" ".join(dict.fromkeys(reasons)))
    for plan in plans:
        plan.prepare()
    record_access(store, current_user(), "download", study, sop, client_address())
    first = plans[0].open() if len(plans) == 1 else None
    lossy = sum(p.lossy or bool(p.row["lossy"]) for p in plans)

    def parts():
        for n, plan in enumerate(plans):
            payload, syntax, _headers = first if first is not None and n == 0 else plan.open()
            yield {"Content-Type": f"application/dicom; transfer-syntax={syntax}"}, payload

    response = _multipart(parts(), "application/dicom")
    if first is not None:
        response.headers.update(first[2])
    elif lossy:
        response.headers["X-Lossy-Compression"] = f"instances={lossy}/{len(plans)}"
    return response


# -- WADO-RS: metadata and bulk data ----------------------------------------------------------
def _base() -> str:
    return request.host_url.rstrip("/") + "/dicom-web"


def _header(path: Path) -> Dataset:
    """Everything but the pixel data, binary words little endian (DICOM JSON bulk data is little endian)."""
    from .derive import _swap_words

    ds = read_dataset(path, pixels=False)
    if ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian:
        _swap_words(ds)
    return ds


def _metadata(store: Store, row) -> dict:
    """DICOM JSON of an instance as its frames are served: Photometric Interpretation as decoded
    (YBR_FULL_422 frames come out YBR_FULL), large binary values as bulk data URIs."""
    from .pixels import _DECODED_PHOTOMETRIC

    original = store.artifact(row["sop_uid"], "original")
    ds = _header(original.path)
    if row["rows"] and str(ds.get("PhotometricInterpretation", "")) in _DECODED_PHOTOMETRIC:
        ds.PhotometricInterpretation = _DECODED_PHOTOMETRIC[str(ds.PhotometricInterpretation)]
    url = f"{_base()}/studies/{row['study_uid']}/series/{row['series_uid']}/instances/{row['sop_uid']}"
    body = ds.to_json_dict(bulk_data_threshold=1 << 16,
                           bulk_data_element_handler=lambda elem: f"{url}/bulkdata/{elem.tag:08X}")
    body["00083002"] = {"vr": "UI", "Value": [original.transfer_syntax]}  # Available Transfer Syntax UID
    if row["rows"]:
        body["7FE00010"] = {"vr": "OW" if (row["bits_allocated"] or 8) > 8 else "OB", "BulkDataURI": f"{url}/bulkdata/7FE00010"}
    return body


@blueprint.get("/studies/<study>/metadata")
@blueprint.get("/studies/<study>/series/<series>/metadata")
@blueprint.get("/studies/<study>/series/<series>/instances/<sop>/metadata")
@require("view")
def metadata(study, series=None, sop=None):
    store, _ = _store()
    user = current_user()
    authorize(store, user, "view", study_uid=study, sop_uid=sop)
    rows = [r for r in visible_instances(store, user, study)
            if (series is None or r["series_uid"] == series) and (sop is None or r["sop_uid"] == sop)]
    if not rows:
        raise StoreError(f"No {'instance' if sop else 'series' if series else 'study'} there that you may open.")
    record_access(store, user, "view", study, sop, client_address())
    return Response(_json([_metadata(store, r) for r in rows]), mimetype=DICOM_JSON)


@blueprint.get("/studies/<study>/series/<series>/instances/<sop>/bulkdata/<tag>")
@require("download")
def bulkdata(study, series, sop, tag):
    store, _ = _store()
    row = _instances(store, study, series, sop)[0]
    if not re.fullmatch(r"[0-9A-Fa-f]{8}", tag):
        raise InvalidOptionError(f"Bulk data tag {tag[:20]!r} is not 8 hex digits.")
    if tag.upper() == "7FE00010":
        return _frames(store, row, list(range(1, (row["frames"] or 1) + 1)))
    ds = _header(store.artifact(sop, "original").path)
    elem = ds.get(int(tag, 16))
    if elem is None or not isinstance(elem.value, (bytes, bytearray)):
        raise StoreError(f"Instance {sop} has no bulk data element ({tag[:4]},{tag[4:]}).")
    return _bulk([({"Content-Type": "application/octet-stream"}, bytes(elem.value))], "application/octet-stream")


# -- WADO-RS: frames ----------------------------------------------------------------------
def _frame_list(text: str, frames: int) -> list[int]:
    try:
        numbers = [int(v) for v in text.split(",")]
    except ValueError:
        raise InvalidOptionError(f"Frame list {text[:40]!r} is not comma-separated numbers.", hint="For example frames/1,3.") from None
    bad = [n for n in numbers if not 1 <= n <= frames]
    if bad or len(numbers) > 10_000:
        raise StoreError(f"Frame {bad[0] if bad else ''} is not in this instance (frames 1-{frames}).")
    return numbers


def _frame_syntax(accept: str, photometric: str) -> tuple[str, str]:
    """(media type, transfer syntax) for frames: uncompressed little-endian bytes, or a lossless compressed frame.

    A YBR_* image skips the compressed alternatives: OHIF 3.13.2 shows a
    YBR_FULL frame sent as HTJ2K as three stacked planes, a picture that
    differs from the file.  It gets the next acceptable alternative.
    """
    skipped = photometric.upper().startswith("YBR")
    for media, params in _accepted(accept, "multipart/related"):
        kind = params.get("type", "application/octet-stream").lower() if media == "multipart/related" else media
        if kind in ("*/*", "*", "application/octet-stream"):
            return "application/octet-stream", str(ExplicitVRLittleEndian)
        if kind in FRAME_TYPES and not skipped:
            syntax = params.get("transfer-syntax", "*")
            syntax = FRAME_TYPES[kind] if syntax == "*" else syntax
            codec = codec_for_uid(syntax)
            if codec is not None and not codec.lossy and codec.name == codec_for_uid(FRAME_TYPES[kind]).name:
                return kind, str(syntax)
    if skipped:
        raise NotAcceptable(f"Frames of a {photometric} image are served as application/octet-stream only "
                            f"(not {accept!r}).", hint="Ask for application/octet-stream.")
    raise NotAcceptable(f"Cannot answer Accept: {accept!r} with frames.",
                        hint='Ask for application/octet-stream, or image/jphc, image/jls or image/jp2 (lossless).')


def _frames(store: Store, row, numbers: list[int]) -> Response:
    original = store.artifact(row["sop_uid"], "original")
    if not row["rows"]:
        raise StoreError(f"Instance {row['sop_uid']} holds no image frames.")
    ds = read_dataset(original.path)
    media, syntax = _frame_syntax(_accept(), str(ds.get("PhotometricInterpretation", "")))
    spec = pixel_spec(ds)
    source = None  # a stored dataset whose frames already are codestreams of the wanted codec
    if media != "application/octet-stream":
        stored = store.artifact(row["sop_uid"], "lossless")
        wanted = _writer(syntax).name
        for candidate in (original, stored):
            codec = codec_for_uid(candidate.transfer_syntax) if candidate is not None else None
            if codec is not None and not codec.lossy and codec.name == wanted:
                source = ds if candidate is original else read_dataset(candidate.path)
                break

    def part(n: int) -> bytes:
        if media == "application/octet-stream":
            frame = decode_frame(ds, n - 1)
            return frame.astype(frame.dtype.newbyteorder("<")).tobytes()
        if source is not None:  # the stored lossless copy (or original) of that codec: its codestream as stored
            return get_frame(source.PixelData, n - 1, number_of_frames=spec.frames)
        key = f"{original.checksum}:frame:{syntax}:{n}"  # a viewer asks again for each frame it shows
        data = _cache(store).get(key)
        if data is None:
            data = _writer(syntax).encode(decode_frame(ds, n - 1), spec)
            _cache(store).set(key, data)
        return data

    headers = {"Content-Type": media if media == "application/octet-stream" else f"{media}; transfer-syntax={syntax}"}
    parts = [(headers, part(n)) for n in numbers]  # all made before the first byte: an error is a 4xx, not a cut answer
    response = _bulk(parts, media)
    response.headers.update(_lossy_headers(LossyHistory.from_index(store.instance(row["sop_uid"]))))
    return response


def _writer(syntax: str):
    name = codec_for_uid(syntax).name
    return next(c for c in CODECS if c.name == name and not c.lossy and c.writes)


@blueprint.get("/studies/<study>/series/<series>/instances/<sop>/frames/<frame_list>")
@require("download")
def frames(study, series, sop, frame_list):
    store, _ = _store()
    row = _instances(store, study, series, sop)[0]
    # Not logged one by one: a viewer asks for hundreds of frames after the metadata request that logged the view.
    return _frames(store, row, _frame_list(frame_list, row["frames"] or 1))


# -- WADO-RS: rendered and thumbnails --------------------------------------------------------
def _image_format(accept: str) -> str:
    for media, _params in _accepted(accept, "image/png"):
        if media in ("image/png", "image/*", "*/*"):
            return "png"  # lossless rendering unless JPEG is asked for by name
        if media == "image/jpeg":
            return "jpeg"
    raise NotAcceptable(f"Cannot render as {accept!r}.", hint="Ask for image/png or image/jpeg.")


def _window() -> tuple[float, float] | None:
    value = request.args.get("window")
    if not value:
        return None
    try:
        center, width = (float(v) for v in value.split(",")[:2])
    except ValueError:
        raise InvalidOptionError(f"window={value[:40]!r} is not center,width[,function].", hint="For example window=40,400.") from None
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:  # nan/inf rendered a blank picture (200)
        raise InvalidOptionError(f"The window must be finite with a positive width (got {value[:40]!r}).",
                                 hint="For example window=40,400.")
    return center, width


def _viewport(default: int | None) -> int | None:
    """The longer side of ``viewport=width,height`` (PS3.18 §8.3.5.1.3), or *default*."""
    value = request.args.get("viewport")
    if not value:
        return default
    try:
        sides = [int(v) for v in value.split(",")[:2]]
    except ValueError:
        raise InvalidOptionError(f"viewport={value[:40]!r} is not width,height.", hint="For example viewport=512,512.") from None
    if not all(0 < v <= 8192 for v in sides):
        raise InvalidOptionError(f"viewport={value[:40]!r}: each side must be 1-8192 pixels.")
    return max(sides)


def _rendered(store: Store, row, frame: int, size: int | None = None) -> Response:
    """Frame *frame* as the eye sees it (window from the query), scaled to fit a *size* square if given."""
    fmt = _image_format(_accept())
    window = _window()
    size = _viewport(size)
    if not row["rows"]:
        raise NotAcceptable(f"Instance {row['sop_uid']} holds no image to render.")
    if not 1 <= frame <= (row["frames"] or 1):
        raise StoreError(f"Frame {frame} is not in this instance (frames 1-{row['frames'] or 1}).")
    ds = read_dataset(store.artifact(row["sop_uid"], "original").path)
    pixels = to_display(decode_frame(ds, frame - 1), ds, window, frame - 1)
    if size and max(pixels.shape[:2]) > size:
        from PIL import Image

        image = Image.fromarray(pixels)
        image.thumbnail((size, size), Image.LANCZOS)
        pixels = np.asarray(image)
    response = Response(encode_image(pixels, fmt), mimetype=f"image/{fmt}")
    headers = _lossy_headers(LossyHistory.from_index(store.instance(row["sop_uid"])))
    if fmt == "jpeg":
        headers.setdefault("X-Lossy-Compression", "rendering=JPEG")
    response.headers.update(headers)
    return response


@blueprint.get("/studies/<study>/series/<series>/instances/<sop>/rendered")
@blueprint.get("/studies/<study>/series/<series>/instances/<sop>/frames/<int:frame>/rendered")
@require("view")
def rendered(study, series, sop, frame=1):
    store, _ = _store()
    row = _instances(store, study, series, sop, "view")[0]
    record_access(store, current_user(), "view", study, sop, client_address())
    return _rendered(store, row, frame)


@blueprint.get("/studies/<study>/thumbnail")
@blueprint.get("/studies/<study>/series/<series>/thumbnail")
@blueprint.get("/studies/<study>/series/<series>/instances/<sop>/thumbnail")
@require("view")
def thumbnail(study, series=None, sop=None):
    store, _ = _store()
    rows = [r for r in _instances(store, study, series, sop, "view") if r["rows"]]
    if not rows:
        raise StoreError("Nothing there holds an image for a thumbnail.")
    if _image_format(_accept()) == "jpeg" or request.args.get("window") or request.args.get("viewport"):
        return _rendered(store, rows[0], 1, THUMBNAIL_SIZE)
    data, etag = thumbnail_bytes(store, rows[0]["sop_uid"])
    response = Response(data, mimetype="image/png")
    response.set_etag(etag)
    response.headers.update(_lossy_headers(LossyHistory.from_index(store.instance(rows[0]["sop_uid"]))))
    return response


# -- STOW-RS -----------------------------------------------------------------------
_HEADER_LIMIT = 64 << 10


class _Body:
    """The request body read in chunks, counted against :data:`MAX_STOW_BYTES`."""

    def __init__(self, stream):
        self.stream, self.buffer, self.eof, self.total = stream, b"\r\n", False, 0

    def fill(self) -> None:
        chunk = self.stream.read(1 << 20)
        self.total += len(chunk)
        if self.total > MAX_STOW_BYTES:
            raise InvalidOptionError(f"The body is above {MAX_STOW_BYTES >> 30} GB; send fewer instances per request.")
        self.eof = not chunk
        self.buffer += chunk


def _parts(store: Store, content_type: str, stream) -> Iterator[tuple[dict, Path]]:
    """Each part of a multipart/related body: its headers and its bytes staged in a file (removed by the caller).

    Read as a stream, so a large STOW never sits in memory; a Part 10 file sent
    without its 128-byte preamble (``pydicom.dcmwrite``'s default) gets one.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not (content_type or "").lower().startswith("multipart/related") or not match:
        raise InvalidOptionError(f'STOW-RS takes multipart/related; type="application/dicom" with a boundary, not {content_type[:80]!r}.')
    delimiter = b"\r\n--" + match.group(1).encode("latin-1")
    body = _Body(stream)
    while (at := body.buffer.find(delimiter)) < 0:
        if body.eof:
            raise InvalidOptionError("The STOW-RS body holds no parts (its boundary never appears).")
        body.buffer = body.buffer[-len(delimiter):]
        body.fill()
    body.buffer = body.buffer[at + len(delimiter):]
    while True:
        while len(body.buffer) < 2 and not body.eof:
            body.fill()
        if body.buffer.startswith(b"--"):
            return
        while (end := body.buffer.find(b"\r\n\r\n")) < 0:
            if body.eof or len(body.buffer) > _HEADER_LIMIT:
                raise InvalidOptionError("A part of the multipart body has no blank line after its headers.")
            body.fill()
        headers = {}
        for line in body.buffer[:end].decode("latin-1").splitlines()[1:]:  # the rest of the delimiter line first
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        body.buffer = body.buffer[end + 4:]
        while len(body.buffer) < 132 and not body.eof:
            body.fill()
        path = store.tmp_path(".stow")
        try:
            with open(path, "wb") as out:
                if body.buffer[128:132] != b"DICM" and body.buffer[:2] == b"\x02\x00":
                    out.write(bytes(128) + b"DICM")
                keep = len(delimiter) - 1
                while (at := body.buffer.find(delimiter)) < 0:
                    if body.eof:
                        raise InvalidOptionError("The multipart body ends inside a part (no closing boundary).")
                    if len(body.buffer) > keep:
                        out.write(body.buffer[:-keep])
                        body.buffer = body.buffer[-keep:]
                    body.fill()
                out.write(body.buffer[:at])
            body.buffer = body.buffer[at + len(delimiter):]
            yield headers, path
        finally:
            path.unlink(missing_ok=True)


def _header_uids(path: Path) -> dict:
    """Study, SOP Class and SOP Instance UIDs read before ingest (for a study check and the failure list); {} if unreadable."""
    keywords = ["StudyInstanceUID", "SOPClassUID", "SOPInstanceUID"]
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=keywords)
    except Exception:  # unreadable: ingest rejects it with the reason
        return {}
    values = {k: str(ds.get(k, "") or "") for k in keywords}
    return {k: v for k, v in values.items() if re.fullmatch(r"[0-9.]{1,64}", v)}


@blueprint.post("/studies")
@blueprint.post("/studies/<study>")
@require("upload")
def stow(study=None):
    store, jobs = _store()
    referenced, failed, reasons, studies = [], [], [], set()
    try:
        for n, (headers, path) in enumerate(_parts(store, request.content_type or "", request.stream), start=1):
            _stow_part(store, study, n, headers, path, referenced, failed, reasons, studies)
    except InvalidOptionError as exc:  # a broken body: what came before it is stored and reported
        if not referenced and not failed:
            raise
        failed.append(_failed({}, "rejected"))
        reasons.append(str(exc))
    for uid in sorted(studies):
        jobs.submit(uid)
    out = Dataset()
    if study:
        out.RetrieveURL = f"{_base()}/studies/{study}"
    if referenced:
        out.ReferencedSOPSequence = referenced
    if failed:
        out.FailedSOPSequence = failed
    response = Response(_json(out.to_json_dict()), status=200 if not failed else 202 if referenced else 409, mimetype=DICOM_JSON)
    if reasons:  # the Failure Reason codes say little; the reasons in words (ASCII, one header line)
        text = re.sub(r"[\x00-\x1f]", " ", "; ".join(reasons)[:2000].encode("ascii", "replace").decode().replace('"', "'"))
        response.headers["Warning"] = f'299 RadPress "{text}"'
    return response


def _stow_part(store: Store, study: str | None, n: int, headers: dict, path: Path, referenced: list, failed: list,
               reasons: list, studies: set) -> None:
    """One STOW-RS part through the same ingest as uploads; its outcome is appended to the lists."""
    kind = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
    uids = _header_uids(path)
    if kind != "application/dicom":
        failed.append(_failed(uids, "rejected"))
        reasons.append(f"part {n}: {kind[:40]} is not application/dicom")
        return
    if study is not None and uids.get("StudyInstanceUID", study) != study:
        failed.append(_failed(uids, "wrong study"))
        reasons.append(f"part {n}: belongs to study {uids['StudyInstanceUID']}, not {study}")
        return
    with open(path, "rb") as fh:  # a part is one instance, never an archive (a zip, or zeros read as an empty tar)
        results = [ingest_instance(store, fh, f"stow-part-{n}.dcm")]
    for result in results:
        if result.status in ("stored", "duplicate"):
            row = store.instance(result.sop_uid)
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = row["sop_class"], result.sop_uid
            item.RetrieveURL = f"{_base()}/studies/{row['study_uid']}/series/{row['series_uid']}/instances/{result.sop_uid}"
            referenced.append(item)
            if result.status == "stored":
                studies.add(result.study_uid)
        else:
            failed.append(_failed(uids, result.status))
            reasons.append(f"part {n}: {result.status}" + (f" ({result.reason})" if result.reason else ""))


def _failed(uids: dict, status: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = uids.get("SOPClassUID", "")
    item.ReferencedSOPInstanceUID = uids.get("SOPInstanceUID", "")
    item.FailureReason = _FAILURE.get(status, 0xC000)
    return item
