"""HTTP routes of the archive: the API, downloads and thumbnails (a Flask blueprint).

Routes parse the request, call one core function and shape the answer;
every :class:`RadPressError` becomes a JSON ``{"error": ...}`` with its 4xx status.
"""

from __future__ import annotations

import functools
import io
from dataclasses import asdict

from flask import Blueprint, Response, current_app, jsonify, redirect, request, send_file, stream_with_context
from werkzeug.exceptions import HTTPException
from pydicom.uid import UID
from werkzeug.wsgi import wrap_file

from .archive import Forbidden, codestream_path, plan, save_policy, storage_report, variant_file
from .auth import client_address, current_user, require
from .bundle import Member, safe_name, tar_stream, zip_stream
from .codecs import CODECS, check_ratio, get_codec
from .compress import artifact_outcome
from .bigimage import is_large
from .deepzoom import Codestream, DeepZoom
from .dims import DimsConfig, DimsError, apply_chain, expand_byoriginal, normalise, parse_chain
from .derive import LossyHistory
from .errors import InvalidOptionError, RadPressError
from .dicomweb import blueprint as dicomweb_blueprint
from .ingest import ingest_stream
from .housekeeping import (conflict_detail, conflict_preview, conflicts, delete_series, delete_study, note_sender,
                           resolve_conflict)
from .jobs import Jobs
from .master import master_of, masters
from .pixels import read_dataset
from .preview import preview_pixels
from .policy import STRATEGIES, Policy, ratio_warning
from .serving import versioned
from .render import (IMAGE_DEFAULT, IMAGE_TYPES, encode_image, modality_values, preset_window, render_version, to_display,
                     window_presets)
from .store import Store, StoreError
from .labjobs import cancel_lab, start_lab
from .users import (access_log, authorize, readers, record_access, set_readers, visible_instances,
                    visible_jobs, visible_studies)

__all__ = ["blueprint", "init_archive", "archive"]

blueprint = Blueprint("archive", __name__)


def init_archive(server, store: Store, jobs: Jobs, dims: DimsConfig | None = None) -> None:
    server.extensions["radpress"] = {"store": store, "jobs": jobs, "dims": dims or DimsConfig()}
    server.register_blueprint(blueprint)
    server.register_blueprint(dicomweb_blueprint)  # /dicom-web (PS3.18)


def archive() -> tuple[Store, Jobs]:
    ext = current_app.extensions["radpress"]
    return ext["store"], ext["jobs"]


JSON_PREFIXES = ("/api/", "/download/", "/thumbnail/", "/preview/", "/deepzoom/", "/dims/", "/cine/", "/_dash-", "/dicom-web/")
MAX_JOB_ID = (1 << 63) - 1


@blueprint.app_errorhandler(RadPressError)
def _radpress_error(exc: RadPressError):
    response = jsonify(error=str(exc))
    response.status_code = exc.http_status
    if exc.http_status == 401 and not request.path.startswith("/_dash-"):
        response.headers["WWW-Authenticate"] = 'Basic realm="RadPress"'
    if exc.http_status == 503:  # busy making the item (core.locks): worth asking again shortly
        response.headers["Retry-After"] = "30"
    return response


@blueprint.app_errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    if request.path.startswith(JSON_PREFIXES):
        return jsonify(error=exc.description), exc.code
    return exc


@blueprint.route("/api/<path:_rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@blueprint.route("/download/<path:_rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@blueprint.route("/thumbnail/<path:_rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@blueprint.route("/preview/<path:_rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@blueprint.route("/deepzoom/<path:_rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@blueprint.route("/dims/<path:_rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
@blueprint.route("/cine/<path:_rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def _unknown_api(_rest):
    """Unknown API paths (also downloads and images: /download/instance/a/b, /dims/<sop>/) answer JSON, not the app's HTML page."""
    return jsonify(error=f"No API route {request.method} {request.path}.", hint="See README.md, section HTTP."), 404


def _check_study(store: Store, study_uid: str, action: str = "view") -> None:
    authorize(store, current_user(), action, study_uid=study_uid)


def _check_instance(store: Store, sop_uid: str, action: str = "view") -> None:
    authorize(store, current_user(), action, sop_uid=sop_uid)


def _logged(action: str, study_uid: str, sop_uid: str | None = None) -> None:
    store, _ = archive()
    record_access(store, current_user(), action, study_uid, sop_uid, client_address())


def _row(row) -> dict:
    return {k: row[k] for k in row.keys()}


# -- status -------------------------------------------------------------------
@blueprint.get("/api/health")
def health():
    """Liveness and readiness (no login): 200 when every check passes, 503 otherwise (core.serving.health)."""
    from .serving import Background, health as check

    store, _ = archive()
    body, status = check(store, current_app.extensions["radpress"].get("background") or Background())
    user = current_user()
    if user is not None and user.role == "admin":  # where the data and the DICOM port are is for administrators only
        body["data_dir"] = str(store.root)
    else:
        body["checks"] = {name: {"ok": c["ok"]} for name, c in body["checks"].items()}
    response = jsonify(**body, codecs=sorted({c.name for c in CODECS if c.is_available}))
    response.status_code = status
    response.cache_control.no_store = True
    return response


# -- ingest -------------------------------------------------------------------
@blueprint.post("/api/upload")
@require("upload")
def upload():
    store, jobs = archive()
    results = []
    if request.files:
        for field in request.files:
            for item in request.files.getlist(field):
                results += ingest_stream(store, item.stream, item.filename or field)
    else:
        name = request.args.get("name") or request.headers.get("X-Filename") or "upload"
        if not request.content_length and request.content_length is not None:
            raise InvalidOptionError("The upload is empty.", hint="Send DICOM files, a folder's files or a zip/tar archive.")
        results += ingest_stream(store, request.stream, name)
    if not results:
        raise InvalidOptionError("The upload is empty.", hint="Send DICOM files, a folder's files or a zip/tar archive.")
    note_sender(store, results, current_user().name)
    studies = sorted({r.study_uid for r in results if r.status == "stored"})
    job_ids = []
    for uid in studies:
        try:
            job_ids.append(jobs.submit(uid))
        except StoreError:  # deleted by an administrator while it was being uploaded (core.housekeeping): nothing to make
            pass
    accepted = any(r.status in ("stored", "duplicate", "conflict") for r in results)
    body = {"results": [r.to_dict() for r in results], "studies": studies, "jobs": job_ids}
    return jsonify(body), 200 if accepted else 422


# -- studies and storage ------------------------------------------------------
@blueprint.get("/api/studies")
@require("view")
def studies():
    store, _ = archive()
    return jsonify(visible_studies(store, current_user()))


def _artifact_json(row, a) -> dict:
    """One stored copy; a lossy one says what ratio it achieved and whether that reached its target."""
    out = {"variant": a.variant, "ratio": a.ratio, "codec": a.codec, "transfer_syntax": a.transfer_syntax,
           "bytes": a.bytes, "achieved_ratio": a.achieved_ratio}
    outcome = artifact_outcome(row, a)
    if outcome:
        out.update(target_reached=outcome.reached, warning=outcome.warning)
    return out


@blueprint.get("/api/studies/<study_uid>")
@require("view")
def study(study_uid):
    store, _ = archive()
    _check_study(store, study_uid)
    user = current_user()
    row = _row(store.study(study_uid))
    row["effective_strategy"] = store.study_strategy(study_uid)
    if user.role == "admin":
        row["readers"] = readers(store, study_uid)
    arts = {}
    for a in store.artifacts(study_uid=study_uid):
        arts.setdefault(a.sop_uid, []).append(a)
    decided = masters(store, study_uid)  # strategy 5: the original is its lossless master, or was kept (with the reason)
    row["instances"] = [dict(_row(i), artifacts=[_artifact_json(i, a) for a in arts.get(i["sop_uid"], [])],
                             master=asdict(decided[i["sop_uid"]]) if i["sop_uid"] in decided else None)
                        for i in visible_instances(store, user, study_uid)]
    _logged("view", study_uid)
    return jsonify(row)


@blueprint.put("/api/studies/<study_uid>/readers")
@require("users")
def put_readers(study_uid):
    """Restrict a study to named radiologists: ``{"readers": ["name", ...]}``; null or [] opens it to every radiologist."""
    store, _ = archive()
    body = request.get_json(silent=True)
    names = body.get("readers") if isinstance(body, dict) else None
    if not isinstance(body, dict) or "readers" not in body or not (
            names is None or (isinstance(names, list) and all(isinstance(n, str) for n in names))):
        raise InvalidOptionError('Send JSON {"readers": ["user", ...]}, or null to open the study to every radiologist.')
    return jsonify(readers=set_readers(store, study_uid, names, by=current_user().name))


@blueprint.get("/api/access-log")
@require("access_log")
def get_access_log():
    """Who viewed or downloaded which study, newest first (``?study=UID&user=NAME&limit=N``)."""
    store, _ = archive()
    return jsonify(access_log(store, request.args.get("study"), request.args.get("user"), _int_arg("limit", 200)))


@blueprint.get("/api/studies/<study_uid>/storage")
@require("storage")
def study_storage(study_uid):
    store, _ = archive()
    _check_study(store, study_uid)
    return jsonify(storage_report(store, study_uid))


# -- housekeeping (administrators): delete, conflicts (core.housekeeping) --------
def _confirmed(uid: str) -> None:
    """Deleting loses originals: the request repeats the UID it deletes (``?confirm=<uid>``), as the UI's dialog does."""
    if request.args.get("confirm") != uid:
        raise InvalidOptionError("Deleting removes the originals for good; confirm it by repeating the UID.",
                                 hint=f"Send DELETE {request.path}?confirm={uid[:64]}")


@blueprint.delete("/api/studies/<study_uid>")
@require("housekeeping")
def delete_study_route(study_uid):
    store, _ = archive()
    _confirmed(study_uid)
    return jsonify(delete_study(store, current_user(), study_uid, background=True).to_dict())


@blueprint.delete("/api/studies/<study_uid>/series/<series_uid>")
@require("housekeeping")
def delete_series_route(study_uid, series_uid):
    store, _ = archive()
    _confirmed(series_uid)
    return jsonify(delete_series(store, current_user(), study_uid, series_uid, background=True).to_dict())


@blueprint.get("/api/conflicts")
@require("housekeeping")
def conflicts_route():
    store, _ = archive()
    return jsonify(conflicts(store, current_user(), request.args.get("study")))


@blueprint.get("/api/conflicts/<sop_uid>/<checksum>")
@require("housekeeping")
def conflict_route(sop_uid, checksum):
    store, _ = archive()
    return jsonify(conflict_detail(store, current_user(), sop_uid, checksum))


@blueprint.get("/api/conflicts/<sop_uid>/<which>/thumbnail")
@require("housekeeping")
def conflict_thumbnail(sop_uid, which):
    """A preview of one side: ``stored`` or the conflicting copy's checksum (both in the stored original's window)."""
    store, _ = archive()
    return Response(conflict_preview(store, current_user(), sop_uid, which), mimetype="image/png")


@blueprint.post("/api/conflicts/<sop_uid>/<checksum>/resolve")
@require("housekeeping")
def resolve_route(sop_uid, checksum):
    """``{"keep": "stored" | "other"}``; keeping the other copy queues the job that makes its copies."""
    store, jobs = archive()
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "keep" not in body:
        raise InvalidOptionError('Send JSON {"keep": "stored"} or {"keep": "other"}.')
    result = resolve_conflict(store, current_user(), sop_uid, checksum, body["keep"])
    result["job"] = jobs.submit(result["rebuild"]) if result["rebuild"] else None
    return jsonify(result)


@blueprint.get("/api/storage")
@require("storage")
def clinic_storage():
    store, _ = archive()
    return jsonify(storage_report(store))


def _lab_state(study_uid: str, act):
    from .lab import LabConfig

    store, jobs = archive()
    config = LabConfig.from_text(request.args.get("codecs"), request.args.get("ratios"))
    return act(store, jobs, current_user(), study_uid, config)


def _lab(study_uid: str, act) -> Response:
    """A quality-lab sweep is a job (core.labjobs): 200 with the result when done, 202 with its job while queued or
    running, 409 with the reason when it failed or was cancelled."""
    state = _lab_state(study_uid, act)
    if state.result is not None:
        return jsonify(state.result)
    body = state.answer()
    if state.state in ("queued", "running"):
        response = jsonify(body)
        response.status_code = 202
        response.headers["Location"] = body["progress"]
        response.headers["Retry-After"] = "1"
        return response
    return jsonify(error=f"The quality-lab sweep for these settings is {state.state}: {body['message'] or 'not started'}.",
                   hint="POST to the same URL to run it again.", **body), 409


@blueprint.get("/api/studies/<study_uid>/lab")
@require("lab")
def study_lab_route(study_uid):
    """The sweep, or its job started or joined (one sweep per study and settings however many ask)."""
    return _lab(study_uid, start_lab)


@blueprint.post("/api/studies/<study_uid>/lab")
@require("lab")
def start_lab_route(study_uid):
    """Like GET, and a sweep that failed or was cancelled is run again."""
    return _lab(study_uid, functools.partial(start_lab, again=True))


@blueprint.delete("/api/studies/<study_uid>/lab")
@require("lab")
def cancel_lab_route(study_uid):
    """Cancel the sweep's job (the user who started it, or an administrator); answers its state."""
    return jsonify(_lab_state(study_uid, cancel_lab).answer())


def _override(field: str, types: tuple[type, ...], example: str, kind: str):
    """A per-study setting from a JSON body ``{field: value}``; null means: follow the clinic default."""
    body = request.get_json(silent=True) or {}
    if field not in body:
        raise InvalidOptionError(f'Send JSON {{"{field}": {example}}}, or null to follow the clinic default.')
    value = body[field]
    if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
        raise InvalidOptionError(f"{field.capitalize()} {value!r} is not {kind}.")
    return value


@blueprint.put("/api/studies/<study_uid>/ratio")
@require("policy")
def set_ratio(study_uid):
    store, jobs = archive()
    _check_study(store, study_uid, "policy")
    ratio = _override("ratio", (int, float), "R", "a number")
    codec = (request.get_json(silent=True) or {}).get("codec")  # the codec the ratio was chosen for
    if codec is not None and not isinstance(codec, str):
        raise InvalidOptionError(f"Codec {codec!r} is not a codec name.", hint='For example "codec": "htj2k".')
    store.set_study_ratio(study_uid, ratio, user=current_user().name, codec=codec)
    return jsonify(ratio=ratio, codec=codec if ratio else None, job=jobs.submit(study_uid))


@blueprint.put("/api/studies/<study_uid>/strategy")
@require("policy")
def set_strategy(study_uid):
    store, jobs = archive()
    _check_study(store, study_uid, "policy")
    strategy = _override("strategy", (int,), "1-5", "a number 1-5")
    store.set_study_strategy(study_uid, strategy, user=current_user().name)
    todo = plan(store, study_uid)
    job = jobs.submit(study_uid) if todo.make or todo.remove else None
    return jsonify(strategy=store.study_strategy(study_uid), job=job, make=len(todo.make), remove=len(todo.remove))


@blueprint.post("/api/studies/<study_uid>/masters/retry")
@require("policy")
def retry_masters(study_uid):
    """Strategy 5: the study's masters the independent check refused are checked again by a job (core.master)."""
    from .master import retry_failed_masters

    store, jobs = archive()
    _check_study(store, study_uid, "policy")
    retried = retry_failed_masters(store, study_uid, current_user().name)
    return jsonify(job=jobs.submit(study_uid) if retried else None)


@blueprint.get("/api/strategies")
@require("view")
def strategies():
    return jsonify([asdict(s) for s in STRATEGIES])


@blueprint.get("/api/policy")
@require("view")
def get_policy():
    store, _ = archive()
    return jsonify(store.policy().to_dict())


@blueprint.put("/api/policy")
@require("policy")
def put_policy():
    store, jobs = archive()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidOptionError("Send the policy as a JSON object.")
    try:
        policy = Policy.from_dict({**store.policy().to_dict(), **body})
    except (TypeError, ValueError) as exc:
        raise InvalidOptionError(f"The policy is not valid: {exc}") from None
    job = save_policy(store, jobs, policy, current_user().name)  # which studies' artifacts change: worked out by this job
    warnings = [w for m, r in policy.ratios.items() if (w := ratio_warning(m.split()[0], float(r), *m.split()[1:2]))]
    return jsonify(policy=policy.to_dict(), warnings=warnings, job=job, progress=f"/api/jobs/{job}",
                   message=f"Saved; working out which studies' copies change (job {job}).")


@blueprint.get("/api/dicom/peers")
@require("policy")
def get_dicom_peers():
    """The DICOM node's C-MOVE destinations (AE@host:port,…): saved by an administrator, else RADPRESS_DICOM_PEERS."""
    from .dimse import dicom_peers

    store, _ = archive()
    return jsonify(dicom_peers(store, current_app.extensions["radpress"].get("dicom")))


@blueprint.put("/api/dicom/peers")
@require("policy")
def put_dicom_peers():
    from .dimse import dicom_peers, set_peers

    store, _ = archive()
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "peers" not in body:
        raise InvalidOptionError('Send {"peers": "AE@host:port,…"} (or null to follow RADPRESS_DICOM_PEERS).')
    set_peers(store, body["peers"], current_user().name)
    return jsonify(dicom_peers(store, current_app.extensions["radpress"].get("dicom")))


# -- jobs ---------------------------------------------------------------------
@blueprint.get("/api/jobs")
@require("view")
def list_jobs():
    """Newest first, ``?page=`` (1-based) of ``?per_page=`` (1-1000, default 100); X-Total-Count and Link say the rest."""
    from .joblist import MAX_PAGE, job_page

    page, per_page = _int_arg("page", 1), _int_arg("per_page", 100)
    if not 0 < page < MAX_PAGE or not 0 < per_page <= 1000:
        raise InvalidOptionError(f"page={page}, per_page={per_page}: a page is 1 or more, and holds 1 to 1000 jobs.")
    _, jobs = archive()
    shown = job_page(jobs, current_user(), page, per_page)
    response = jsonify(shown.jobs)
    response.headers["X-Total-Count"] = str(shown.total)
    links = [f'<{request.base_url}?page={n}&per_page={per_page}>; rel="{rel}"'
             for rel, n in (("prev", shown.page - 1), ("next", shown.page + 1)) if 0 < n <= shown.pages]
    if links:
        response.headers["Link"] = ", ".join(links)
    return response


def _job(job_id: int, action: str) -> dict:
    """A job of a study this user may open (ids beyond SQLite's integers do not exist)."""
    store, jobs = archive()
    if job_id > MAX_JOB_ID:
        raise StoreError(f"No job {job_id}.")
    job = jobs.get(job_id)
    if job["study_uid"] is None:  # a job about the whole archive (a saved policy's comparison): for administrators
        authorize(store, current_user(), "policy")
    _check_study(store, job["study_uid"], action)
    return visible_jobs(store, current_user(), [job])[0]


@blueprint.get("/api/jobs/<int:job_id>")
@require("view")
def get_job(job_id):
    return jsonify(_job(job_id, "view"))


@blueprint.post("/api/jobs/<int:job_id>/cancel")
@require("jobs")
def cancel_job(job_id):
    _, jobs = archive()
    return jsonify(jobs.cancel(_job(job_id, "jobs")["id"]))


# -- downloads ----------------------------------------------------------------
def _variant_args() -> tuple[str, float | None]:
    variant = request.args.get("variant", "original")
    ratio = request.args.get("ratio")
    try:
        return variant, float(ratio) if ratio else None
    except ValueError:
        raise InvalidOptionError(f"ratio={ratio!r} is not a number.", hint="For example ratio=10.") from None


def _history(store: Store, sop_uid: str, ratio: float | None = None, method: str | None = None) -> LossyHistory:
    """The original's own lossy history, then (with *method*) this copy's lossy compression at *ratio*."""
    history = LossyHistory.from_index(store.instance(sop_uid))
    return history.then(ratio, method) if method else history


def _lossy_header(response: Response, history: LossyHistory) -> Response:
    """X-Lossy-Compression on everything made from a lossy image: lossy copies and already-lossy originals."""
    if value := history.header():
        response.headers["X-Lossy-Compression"] = value
    return response


@blueprint.get("/download/instance/<sop_uid>")
@require("download")
def download_instance(sop_uid):
    store, _ = archive()
    _check_instance(store, sop_uid, "download")
    variant, ratio = _variant_args()
    vf = variant_file(store, sop_uid, variant, ratio)
    _logged("download", store.instance(sop_uid)["study_uid"], sop_uid)
    response = Response(wrap_file(request.environ, vf.stream), mimetype="application/dicom", direct_passthrough=True)
    response.headers["Content-Length"] = str(vf.size)
    response.headers["Content-Disposition"] = f'attachment; filename="{safe_name(sop_uid, "instance")}.{variant}.dcm"'
    response.headers["X-Transfer-Syntax"] = vf.transfer_syntax
    response.headers["X-Cache"] = "hit" if vf.from_cache else "miss"
    response.set_etag(vf.etag)
    # Range, If-Range, If-None-Match: 206, 416 and 304 as HTTP asks.
    response.make_conditional(request, accept_ranges=True, complete_length=vf.size)
    _lossy_header(response, _history(store, sop_uid, vf.lossy_ratio, vf.method))
    versioned(response, vf.etag)  # ?v=<the copy's ETag>: that copy, for good
    if variant == "original" and (master := master_of(store, sop_uid)) and master.mastered:
        response.headers["X-RadPress-Original"] = master.header()  # strategy 5: the original's pixels, in its master
    return response


def _bundle_members(store: Store, study_uid: str, variant: str, ratio: float | None) -> list[Member]:
    if variant == "lossy" and not store.policy().lossy_enabled:
        raise Forbidden("Lossy images are switched off for this clinic.")
    rows = visible_instances(store, current_user(), study_uid)
    if not rows:
        raise InvalidOptionError(f"Study {study_uid} has no instances.")
    members, used = [], set()
    for row in rows:
        patient = safe_name(f"{row['patient_name']}_{row['patient_id']}", "patient")
        study_dir = safe_name(f"{store.study(study_uid)['date']}_{row['study_description']}", study_uid)
        series = safe_name(f"{row['series_uid'][-8:]}_{row['modality']}_{row['series_description']}", row["series_uid"])
        stem = safe_name(f"{row['number'] or ''}_{row['sop_uid'][-12:]}", row["sop_uid"])
        name = f"{patient}/{study_dir}/{series}/{stem}.dcm"
        while name in used:
            name = name[:-4] + "_.dcm"
        used.add(name)
        compressed = variant != "original" or UID(row["transfer_syntax"] or "").is_compressed
        members.append(Member(name, _opener(store, row["sop_uid"], variant, ratio), compressed=compressed))
    return members


def _opener(store, sop_uid, variant, ratio):
    def open_member():
        return variant_file(store, sop_uid, variant, ratio).stream

    return open_member


@blueprint.get("/download/study/<study_uid>.<fmt>")
@require("download")
def download_study(study_uid, fmt):
    store, _ = archive()
    if fmt not in ("zip", "tar"):
        raise InvalidOptionError(f"Bundle format {fmt!r} is not offered.", hint="Use .zip or .tar.")
    variant, ratio = _variant_args()
    if variant not in ("original", "lossless", "lossy"):
        raise InvalidOptionError(f"Unknown variant {variant!r}.", hint="Use original, lossless or lossy.")
    if ratio is not None:
        check_ratio(ratio, True)  # before the first byte is streamed: an error later would cut the archive short
    deflate = request.args.get("deflate", "0")
    if deflate not in ("0", "1") or (deflate == "1" and fmt != "zip"):
        raise InvalidOptionError(f"deflate={deflate!r} is not offered for .{fmt}.",
                                 hint="Use deflate=1 (a zip with uncompressed images deflated) or deflate=0 (stored).")
    _check_study(store, study_uid, "download")
    members = _bundle_members(store, study_uid, variant, ratio)
    _logged("download", study_uid)
    if fmt == "tar":
        body = tar_stream(members)
        mimetype = "application/x-tar"
    else:
        body = zip_stream(members, deflate=deflate == "1")
        mimetype = "application/zip"
    response = Response(stream_with_context(body), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{safe_name(study_uid, "study")}.{variant}.{fmt}"'
    lossy = len(members) if variant == "lossy" else sum(bool(r["lossy"]) for r in visible_instances(store, current_user(), study_uid))
    if lossy:
        response.headers["X-Lossy-Compression"] = f"instances={lossy}/{len(members)}"
    done = {sop for sop, m in masters(store, study_uid).items() if m.mastered} if variant == "original" else set()
    if mastered := sum(r["sop_uid"] in done for r in visible_instances(store, current_user(), study_uid)):
        response.headers["X-RadPress-Original"] = f"lossless-master instances={mastered}/{len(members)}"
    return response


@blueprint.get("/thumbnail/<sop_uid>")
@require("view")
def thumbnail(sop_uid):
    from .archive import thumbnail_bytes

    store, _ = archive()
    _check_instance(store, sop_uid)
    data, etag = thumbnail_bytes(store, sop_uid)
    response = send_file(io.BytesIO(data), mimetype="image/png", etag=etag, conditional=True, max_age=3600)
    return versioned(_lossy_header(response, _history(store, sop_uid)), etag)  # ?v=<etag>: immutable (core.archive.thumbnail_versions)


# -- images: progressive previews and DeepZoom ---------------------------------
def _int_arg(name: str, default: int) -> int:
    value = request.args.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise InvalidOptionError(f"{name}={value!r} is not a whole number.") from None


def _image_response(pixels, fmt: str, etag: str, history: LossyHistory) -> Response:
    data = encode_image(pixels, fmt)
    response = Response(data, mimetype=IMAGE_TYPES[fmt])
    response.set_etag(render_version(etag))  # a new renderer: revalidation answers 200 with the new picture
    response.cache_control.max_age = 3600
    return _lossy_header(response, history).make_conditional(request)


@blueprint.get("/preview/<sop_uid>")
@require("view")
def preview(sop_uid):
    """Resolution level K (0 = full, 1 = half, ...) decoded from the codestream's lower levels only."""
    store, _ = archive()
    _check_instance(store, sop_uid)
    variant, ratio = _variant_args()
    level, frame = _int_arg("level", 0), _int_arg("frame", 1) - 1
    pixels, etag, achieved = preview_pixels(store, sop_uid, frame, level, variant, ratio)
    original = store.artifact(sop_uid, "original")
    method = get_codec("j2k", True).method if variant == "lossy" else None
    response = _image_response(pixels, "png", etag, _history(store, sop_uid, achieved, method))
    # lossless and original previews are the original's pixels drawn by this renderer (?v=<its checksum>-r<version>);
    # a lossy one follows the policy
    return versioned(response, render_version(original.checksum[:32]) if variant != "lossy" else None)


def _deepzoom(store: Store, sop_uid: str) -> tuple[Codestream, DeepZoom]:
    path, _ = codestream_path(store, sop_uid, 0, "lossless")
    source = Codestream(path)
    config = current_app.config
    return source, DeepZoom(source.width, source.height, config.get("RADPRESS_TILE_SIZE", 254), config.get("RADPRESS_TILE_OVERLAP", 1))


@blueprint.get("/deepzoom/<sop_uid>.dzi")
@require("view")
def deepzoom_descriptor(sop_uid):
    store, _ = archive()
    _check_instance(store, sop_uid)
    _source, zoom = _deepzoom(store, sop_uid)
    response = _lossy_header(Response(zoom.dzi(), mimetype="application/xml"), _history(store, sop_uid))
    return versioned(response, render_version(store.artifact(sop_uid, "original").checksum[:32]))  # its tiles repeat its v


@blueprint.get("/deepzoom/<sop_uid>_files/<int:level>/<int:col>_<int:row>.<fmt>")
@require("view")
def deepzoom_tile(sop_uid, level, col, row, fmt):
    store, _ = archive()
    if fmt not in ("jpeg", "jpg", "png"):
        raise InvalidOptionError(f"Tile format {fmt!r} is not offered.", hint="Use .jpeg or .png.")
    _check_instance(store, sop_uid)
    fmt = "jpeg" if fmt == "jpg" else fmt
    preset = request.args.get("preset") or IMAGE_DEFAULT  # OpenSeadragon repeats the .dzi URL's query on every tile
    modality = store.instance(sop_uid)["modality"] or ""
    if preset not in window_presets(modality):
        raise InvalidOptionError(f"No window preset {preset!r} for modality {modality or '(none)'}.",
                                 hint=f"Use one of: {', '.join(window_presets(modality))}.")
    original = store.artifact(sop_uid, "original")
    key = f"tile:{render_version(original.checksum[:32])}:{level}:{col}:{row}:{fmt}:{preset}"  # a new renderer: drawn again
    from .archive import _cache

    cache = _cache(store)
    data = cache.get(key)
    if data is None:
        source, zoom = _deepzoom(store, sop_uid)
        ds = read_dataset(original.path)
        window = _tile_window(original.checksum, str(source.path), str(original.path), preset)
        data = encode_image(to_display(zoom.read(source, level, col, row), ds, window), fmt)
        cache.set(key, data)
    response = Response(data, mimetype=IMAGE_TYPES[fmt])
    response.set_etag(key.split(":", 1)[1].replace(":", "-").replace(" ", "_"))
    response.cache_control.max_age = 3600
    return versioned(_lossy_header(response, _history(store, sop_uid)).make_conditional(request),
                     render_version(original.checksum[:32]))


@functools.lru_cache(maxsize=256)
def _tile_window(checksum: str, codestream: str, original: str, preset: str = IMAGE_DEFAULT) -> tuple[float, float] | None:
    """One window for every tile of an image: its own (or its VOI LUT: None), percentiles of the codestream's
    lowest level, or a named preset."""
    ds = read_dataset(original, pixels=False)
    if int(ds.get("SamplesPerPixel", 1) or 1) == 3:
        return None
    source = Codestream(codestream)
    coarse = source.region(source.levels, 0, source.height, 0, source.width)
    window = preset_window(preset, ds, modality_values(coarse, ds))
    return None if window is None else (float(window[0]), float(window[1]))


# -- cines: multi-frame instances as H.264 video (core.cine) --------------------
_CINE_ARGS = ("start", "end", "ranges", "window", "crf")


def _cine_request(sop_uid: str):
    """Authorized like every image route, options checked before any frame is read; limits from RADPRESS_CINE_*."""
    from .cine import CineConfig, parse_options

    store, _ = archive()
    _check_instance(store, sop_uid)
    ext = current_app.extensions["radpress"]
    config = ext.get("cine") or ext.setdefault("cine", CineConfig.from_env())
    return store, config, parse_options(request.args, config)


def _cine_headers(response: Response, store: Store, sop_uid: str, clip) -> Response:
    """Every cine is lossy (H.264), whatever the original was: X-Lossy-Compression always."""
    from .cine import lossy_header

    response.headers["X-Lossy-Compression"] = lossy_header(_history(store, sop_uid))
    response.headers["X-Cine-Frame-Rate"] = f"{clip.fps:g}; source={clip.fps_source}"
    response.headers["X-Cine-Frames"] = str(len(clip.indices))
    response.cache_control.private = True
    response.cache_control.max_age = 3600
    return response


@blueprint.get("/cine/<sop_uid>.mp4")
@require("view")
def cine_mp4(sop_uid):
    """Fast-start H.264 MP4 of a multi-frame instance (``?start=&end=``, ``?ranges=a-b,c-d``, ``?window=C,W``, ``?crf=``)."""
    from .cine import cine_mp4 as make

    store, config, options = _cine_request(sop_uid)
    handle, size, etag, clip, source = make(store, sop_uid, options, config)
    if "Range" not in request.headers:  # a player's many range requests are one viewing
        _logged("view", store.instance(sop_uid)["study_uid"], sop_uid)
    response = Response(wrap_file(request.environ, handle), mimetype="video/mp4", direct_passthrough=True)
    response.headers["Content-Length"] = str(size)
    response.headers["Content-Disposition"] = f'inline; filename="{safe_name(sop_uid, "cine")}.lossy.mp4"'
    response.headers["X-Cache"] = source  # stored (strategy 1, made at ingest), hit or miss
    response.set_etag(etag)
    response.make_conditional(request, accept_ranges=True, complete_length=size)
    return _cine_headers(response, store, sop_uid, clip)


@blueprint.get("/cine/<sop_uid>.m3u8")
@blueprint.get("/cine/<sop_uid>/segment/<int:segment>.ts")
@require("view")
def cine_hls(sop_uid, segment=None):
    """HLS VOD playlist of the same clip as the MP4 (same options), and its MPEG-TS segments of about 2 s."""
    from urllib.parse import urlencode

    from .cine import cine_hls as make

    store, config, options = _cine_request(sop_uid)
    query = urlencode([(k, request.args[k]) for k in _CINE_ARGS if k in request.args])
    data, etag, clip = make(store, sop_uid, options, config, segment,
                            lambda n: f"{sop_uid}/segment/{n}.ts" + (f"?{query}" if query else ""))
    if segment is None:
        _logged("view", store.instance(sop_uid)["study_uid"], sop_uid)
    response = Response(data, mimetype="application/vnd.apple.mpegurl" if segment is None else "video/mp2t")
    response.set_etag(etag)
    return _cine_headers(response.make_conditional(request), store, sop_uid, clip)


# -- DIMS: URL image transforms -------------------------------------------------
_DIMS_TYPES = {**IMAGE_TYPES}


@blueprint.get("/dims/<sop_uid>/<path:commands>")
@require("view")
def dims(sop_uid, commands):
    store, _ = archive()
    config: DimsConfig = current_app.extensions["radpress"]["dims"]
    try:
        return _dims(store, config, sop_uid, commands)
    except DimsError:
        if config.on_failure == "redirect":
            return redirect(f"/download/instance/{sop_uid}?variant=original", 302)
        raise


def _large_level(store: Store, sop_uid: str, chain, config: DimsConfig, variant: str, ratio):
    """A very large image is read at the coarsest codestream level that still serves the requested size."""
    import math

    names = [n for n, _ in chain]
    if "crop" in names:
        raise DimsError("unsupported image", "crop on a very large image; use the DeepZoom tiles", 415, "crop")
    path, _ = codestream_path(store, sop_uid, 0, "lossless" if variant == "original" else variant, ratio)
    source = Codestream(path)
    side = max(source.width, source.height)
    wanted = next((v for n, v in chain if n in ("thumbnail", "resize")), None)
    if wanted is not None and wanted.flag != "%":
        target = max(wanted.width or 0, wanted.height or 0)
    else:
        target = math.sqrt(config.max_output_pixels)
    level = max(0, min(source.levels, int(math.log2(side / max(target, 1))))) if side > target else 0
    return source.region(level, 0, source.height, 0, source.width)


def _lossy_rendering(fmt: str, settings: dict) -> str | None:
    """A display picture encoded lossily (JPEG, lossy WebP or JP2) says so, whatever the DICOM source was."""
    quality = settings.get("quality", 90)
    if fmt == "jpeg" or (fmt == "webp" and not ("optimize" in settings and quality >= 100)) or (fmt == "jp2" and quality < 100):
        return f"format={fmt}; quality={quality}"
    return None


def _dims(store: Store, config: DimsConfig, sop_uid: str, commands: str) -> Response:
    import hashlib

    from pydicom import dcmread

    from .pixels import decode_frame

    chain = parse_chain(commands, config)  # every command checked before any image is read
    try:
        row = store.instance(sop_uid)
    except RadPressError:
        raise DimsError("source not available", f"no instance {sop_uid}", 404) from None
    _check_instance(store, sop_uid)
    original = store.artifact(sop_uid, "original")
    if original.bytes > config.max_source_mb * 1e6:
        raise DimsError("source too large", f"{original.bytes / 1e6:.0f} MB is above the {config.max_source_mb:g} MB limit", 413)
    chain = expand_byoriginal(chain, config, row["rows"] * row["columns"])
    settings = dict(chain)
    key = f"{original.checksum}:{normalise(chain)}"
    etag = hashlib.sha256(key.encode()).hexdigest()[:32]
    from .archive import _cache

    cache = _cache(store)
    # "dims2": results cached before already-lossy originals got their label and header are not served again
    hit = cache.get("dims2:" + key)
    from_cache = hit is not None
    if hit is None:
        variant = settings.get("variant", "original")
        history = _history(store, sop_uid)
        try:
            source = read_dataset(original.path)
            if variant == "lossy":
                vf = variant_file(store, sop_uid, "lossy", settings.get("ratio"))
                try:
                    ds = dcmread(vf.stream)
                finally:
                    vf.close()
                history = history.then(vf.lossy_ratio, vf.method)
            else:
                ds = source
            label = f"LOSSY {history.compressed} ({history.method_names})" if history.lossy else None
            lossy_header = history.header()
            frames = row["frames"]
            if "frame" in settings:
                if settings["frame"] > frames:
                    raise DimsError("invalid command", f"frame {settings['frame']} of {frames}", 400, "frame")
                indices = [settings["frame"] - 1]
            elif settings.get("firstframeonly", True) is False:
                indices = list(range(min(frames, settings.get("limit", frames))))
            else:
                indices = [0]
            window = settings.get("window")
            if is_large(row["rows"], row["columns"]):
                rendered = [to_display(_large_level(store, sop_uid, chain, config, variant, settings.get("ratio")), source, window)]
            else:
                rendered = [to_display(decode_frame(ds, i), source, window, i) for i in indices]
        except DimsError:
            raise
        except RadPressError as exc:
            raise DimsError("source could not be loaded", str(exc), 422) from None
        try:
            data, fmt = apply_chain(rendered, chain, config, label)
        except (ValueError, OSError) as exc:
            raise DimsError("unsupported image", str(exc), 415) from None
        hit = {"data": data, "format": fmt, "lossy": lossy_header}
        cache.set("dims2:" + key, hit)
    response = Response(hit["data"], mimetype=_DIMS_TYPES[hit["format"]])
    response.set_etag(etag)
    response.cache_control.max_age = 86400
    response.cache_control.public = False
    if hit["lossy"]:
        response.headers["X-Lossy-Compression"] = hit["lossy"]
    rendering = _lossy_rendering(hit["format"], dict(chain))
    if rendering:
        response.headers["X-Lossy-Rendering"] = rendering
    response.headers["X-Cache"] = "hit" if from_cache else "miss"
    return response.make_conditional(request)
