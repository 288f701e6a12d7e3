"""What each study should have on disk under its strategy, and getting any variant of an instance.

:func:`plan` compares the artifacts a study has with what its strategy and
the clinic's policy ask for; :func:`make_artifact` produces one (in a worker
process when run by a job); :func:`variant_file` serves a stored artifact or
makes an on-demand one through a size-limited LRU cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from .bigimage import is_large
from .cine import default_mp4, rendered_at_ingest
from .codecs import check_ratio, choose_codec, get_codec
from .compress import compress
from .errors import InvalidOptionError, RadPressError
from .files import atomic_writer
from .locks import item_lock
from .master import MASTER_CODEC, make_master, master_of, masters, not_mastered_reason
from .pixels import decode_frame, pixel_spec, read_dataset
from .policy import Policy, anatomy, check_bound, get_strategy, lossless_codec_for, lossy_setting
from .render import picture_codec, render_version, thumbnail_png
from .store import Artifact, Store, StoreError

__all__ = ["Wanted", "Plan", "plan", "study_wanted", "changed_studies", "save_policy", "make_artifact", "make_artifacts", "variant_file", "storage_report", "Forbidden", "CACHE_LIMIT"]

CACHE_LIMIT = 2 << 30
THUMBNAIL_SIZE = 256


class Forbidden(RadPressError):
    http_status = 403


@dataclass(frozen=True)
class Wanted:
    sop_uid: str
    variant: str
    ratio: float
    codec: str


@dataclass(frozen=True)
class Plan:
    study_uid: str
    strategy: int
    make: tuple[Wanted, ...]
    remove: tuple[Artifact, ...]


def _ratio(policy: Policy, row) -> float:
    """The study's own ratio when one was set, else the clinic's for this modality; never above the CAR bound."""
    return lossy_setting(policy, row).ratio


def wanted_for(policy: Policy, strategy: int, row, signed: bool | None = None) -> set[Wanted]:
    """The artifacts one instance keeps under *strategy* (originals are implied; a non-image keeps only that)."""
    wanted = set()
    if not row["rows"]:  # a report, RT plan, PDF, key object ...: no pixels to compress
        return wanted
    large = is_large(row["rows"], row["columns"])  # made tile by tile as JPEG 2000 (_make_large), whatever the policy says
    for variant in get_strategy(strategy).stored:
        if variant == "lossless":
            codec = "j2k" if large else lossless_codec_for(policy, row, signed)
            wanted.add(Wanted(row["sop_uid"], "lossless", 0, codec))
        elif variant == "lossy" and policy.lossy_enabled and row["photometric"] != "PALETTE COLOR":
            # (palette indices are never compressed lossily: a small error is another colour, so none is planned)
            setting = lossy_setting(policy, row)  # codec and ratio chosen together
            wanted.add(Wanted(row["sop_uid"], "lossy", setting.ratio, "j2k" if large else setting.codec))
        elif variant == "thumbnail":  # drawn by this renderer: a thumbnail another one drew is made again
            wanted.add(Wanted(row["sop_uid"], "thumbnail", 0, picture_codec("png")))
        elif variant == "master" and not_mastered_reason(row) is None:  # strategy 5 (core.master)
            wanted.add(Wanted(row["sop_uid"], "master", 0, MASTER_CODEC))
    if strategy == 1 and rendered_at_ingest(row):  # "everything ready": a US/XA loop's video too
        wanted.add(Wanted(row["sop_uid"], "cine", 0, "h264"))
    return wanted


def _signed(store: Store, rows) -> dict[str, bool]:
    """Pixel Representation of instances indexed before it was recorded: read once from the original's header."""
    from pydicom import dcmread

    found = {}
    for row in rows:
        if row["rows"] and row["signed"] is None and (original := store.artifact(row["sop_uid"], "original")):
            found[row["sop_uid"]] = bool(dcmread(original.path, stop_before_pixels=True).get("PixelRepresentation", 0))
    if found:
        with store.connect() as db:
            db.executemany("UPDATE instances SET signed=? WHERE sop_uid=?", [(int(v), k) for k, v in found.items()])
    return found


def study_wanted(store: Store, study_uid: str, policy: Policy | None = None) -> tuple[int, set[Wanted]]:
    """The strategy a study follows under *policy* (the stored one by default) and the artifacts it then keeps."""
    rows = store.instances(study_uid)
    return _wanted(policy or store.policy(), store.study(study_uid)["strategy"], rows, _signed(store, rows))


def _wanted(policy: Policy, override: int | None, rows, signed: dict[str, bool]) -> tuple[int, set[Wanted]]:
    """A study's own strategy, else its modality's (store.study_strategy), and what its instances keep under it."""
    modalities: dict[str, int] = {}
    for row in rows:
        if row["rows"]:
            modalities[row["modality"] or ""] = modalities.get(row["modality"] or "", 0) + 1
    strategy = int(override) if override else policy.strategy_for(modalities)
    wanted = set()
    for row in rows:
        wanted |= wanted_for(policy, strategy, row, signed.get(row["sop_uid"]))
    return strategy, wanted


def plan(store: Store, study_uid: str) -> Plan:
    strategy, wanted = study_wanted(store, study_uid)
    if any(w.variant == "master" for w in wanted):  # an instance decided on (mastered, or kept with a reason) is done
        decided = masters(store, study_uid)
        wanted = {w for w in wanted if w.variant != "master" or w.sop_uid not in decided}
    have = {(a.sop_uid, a.variant, a.ratio, a.codec): a for a in store.artifacts(study_uid=study_uid) if a.variant != "original"}
    keys = {(w.sop_uid, w.variant, w.ratio, w.codec) for w in wanted}
    make = tuple(sorted((w for w in wanted if (w.sop_uid, w.variant, w.ratio, w.codec) not in have), key=lambda w: (w.sop_uid, w.variant)))
    remove = tuple(a for k, a in have.items() if k not in keys)
    return Plan(study_uid, strategy, make, remove)


_NOT_KIND = frozenset({"sop_uid", "series_uid", "study_uid", "number", "created", "patient_name", "patient_id", "body_part",
                       "study_description", "series_description"})


def changed_studies(store: Store, old: Policy, new: Policy, progress: Callable[[int, int], None] | None = None) -> list[str]:
    """The studies whose artifacts differ between two policies (what each would keep, compared per study).

    Reads the index in two queries and works out what each kind of instance keeps once per policy and
    strategy (an instance keeps the same under both, or its study changes): 0.5 s at 10,000 studies, so a
    saved policy is compared by a job (:mod:`core.policyjobs`), told *progress* (studies compared, of how many)."""
    rows = store.instances(None)
    signed = _signed(store, rows)
    by_study: dict[str, list] = {}
    for row in rows:
        by_study.setdefault(row["study_uid"], []).append(row)
    kept: dict[tuple, frozenset] = {}
    # What wanted_for may read: the row but its identity and its patient, with the body part and the study
    # description only as the anatomy the policy derives from them (policy.anatomy), and the sign read for it.
    columns = itemgetter(*[i for i, k in enumerate(rows[0].keys()) if k not in _NOT_KIND]) if rows else None
    regions: dict[tuple, str] = {}

    def keeps(which: int, policy: Policy, strategy: int, row) -> frozenset:
        text = (row["body_part"] or "", row["study_description"] or "")
        region = regions[text] if text in regions else regions.setdefault(text, anatomy(*text))
        kind = (which, strategy, signed.get(row["sop_uid"]), region, columns(row))
        if kind not in kept:
            kept[kind] = frozenset((w.variant, w.ratio, w.codec) for w in wanted_for(policy, strategy, row, signed.get(row["sop_uid"])))
        return kept[kind]

    changed = []
    studies = store.query("SELECT study_uid, strategy FROM studies ORDER BY study_uid")
    for done, study in enumerate(studies):
        if progress is not None:
            progress(done, len(studies))
        mine = by_study.get(study["study_uid"], [])
        modalities: dict[str, int] = {}
        for row in mine:
            if row["rows"]:
                modalities[row["modality"] or ""] = modalities.get(row["modality"] or "", 0) + 1
        override = study["strategy"]
        before, after = ((int(override) if override else p.strategy_for(modalities)) for p in (old, new))
        if any(keeps(0, old, before, row) != keeps(1, new, after, row) for row in mine):
            changed.append(study["study_uid"])
    if progress is not None:
        progress(len(studies), len(studies))
    return changed


def save_policy(store: Store, jobs, policy: Policy, user: str) -> int:
    """Save the clinic's policy (validated, audited) at once, and queue the job that works out which studies'
    artifacts change and queues a job for each, only those (:mod:`core.policyjobs`); returns that job's id.

    The policy the copies follow until then is kept with the new one under one lock, unless an earlier save's
    comparison is still pending (then the copies still follow that one's)."""
    from .jobs import submit_archive_job  # (core.jobs imports this module)
    from .policyjobs import APPLIED, KIND, POLICY_LOCK

    policy = policy.validated()
    with item_lock(store.root, POLICY_LOCK):
        followed = json.dumps(store.policy().to_dict())
        with store.connect() as db:
            db.execute("INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)", (APPLIED, followed))
        store.set_policy(policy, user=user)
    return submit_archive_job(jobs, KIND, {"user": user})


def _encode(original: Path, variant: str, ratio: float, codec: str) -> tuple[bytes, str, float | None]:
    return _encode_dataset(read_dataset(original), None, variant, ratio, codec)


def _encode_dataset(ds, frames: "_Frames | None", variant: str, ratio: float, codec: str) -> tuple[bytes, str, float | None]:
    """One variant of *ds*, from its frames already decoded when *frames* is given (:func:`make_artifacts`)."""
    if variant == "thumbnail":
        return thumbnail_png(ds, THUMBNAIL_SIZE, None if frames is None else frames[pixel_spec(ds).frames // 2]), "", None
    if variant == "cine":
        return default_mp4(ds), "", None
    result = compress(ds, codec, "lossy" if variant == "lossy" else "lossless", ratio or None, over_bound="cap", decoded=frames)
    buffer = io.BytesIO()
    result.dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), str(result.codec.transfer_syntax), result.ratio


def make_artifact(store: Store, wanted: Wanted) -> Artifact:
    """Under the instance's lock, which resolving a conflict takes too: a copy is never made from an original being replaced."""
    with item_lock(store.root, f"instance:{wanted.sop_uid}"):
        row = store.instance(wanted.sop_uid)
        original = store.artifact(wanted.sop_uid, "original")
        if original is None:
            raise StoreError(f"Instance {wanted.sop_uid} was deleted.")
        if wanted.variant == "master":  # strategy 5: the original replaced by its checked lossless master
            return make_master(store, wanted.sop_uid)
        if is_large(row["rows"], row["columns"]):
            return _make_large(store, wanted, original)
        data, syntax, achieved = _encode(original.path, wanted.variant, wanted.ratio, wanted.codec)
        return store.put_artifact(wanted.sop_uid, wanted.variant, wanted.ratio, wanted.codec, syntax, data, achieved)


# What make_artifacts encodes from one decode; anything else goes through make_artifact.
SHARED_DECODE = ("thumbnail", "lossless", "lossy")  # cheapest first: their writes overlap the lossy encode
FRAME_BUDGET = 256 << 20  # decoded frames kept for the next variant; beyond it a frame is decoded again


class _Frames:
    """An instance's decoded frames by index, each decoded once for every variant made from it (within
    :data:`FRAME_BUDGET`: a long multi-frame instance is never held whole)."""

    def __init__(self, ds, budget: int = FRAME_BUDGET):
        self.ds = ds
        self._kept: dict[int, np.ndarray] = {}
        self._room = budget

    def __getitem__(self, index: int) -> np.ndarray:
        frame = self._kept.get(index)
        if frame is None:
            frame = decode_frame(self.ds, index)
            if frame.nbytes <= self._room:
                self._kept[index] = frame
                self._room -= frame.nbytes
        return frame


def make_artifacts(store: Store, items: list[Wanted]) -> list[Artifact]:
    """One instance's artifacts (*items* all name it), the thumbnail and the lossless and lossy copies made
    from one read and one decode of its original.

    Each file is written (fsync and index) by a second thread while the next
    variant is encoded.  On an error the artifacts already written stay and the
    error is raised.  A very large image, a cine or a lossless master goes
    through :func:`make_artifact`.
    """
    from concurrent.futures import ThreadPoolExecutor

    if not items:
        return []
    sop_uid = items[0].sop_uid
    row = store.instance(sop_uid)
    shared = [] if is_large(row["rows"], row["columns"]) else [w for w in items if w.variant in SHARED_DECODE]
    made = [make_artifact(store, w) for w in items if w not in shared]
    if not shared:
        return made
    with item_lock(store.root, f"instance:{sop_uid}"):  # as make_artifact: never from an original being replaced
        original = store.artifact(sop_uid, "original")
        if original is None:
            raise StoreError(f"Instance {sop_uid} was deleted.")
        ds = read_dataset(original.path)
        frames = _Frames(ds)
        with ThreadPoolExecutor(1, thread_name_prefix="radpress-write") as writer:
            pending = []
            try:
                for w in sorted(shared, key=lambda w: SHARED_DECODE.index(w.variant)):
                    data, syntax, achieved = _encode_dataset(ds, frames, w.variant, w.ratio, w.codec)
                    pending.append(writer.submit(store.put_artifact, w.sop_uid, w.variant, w.ratio, w.codec, syntax, data, achieved))
            finally:
                written = [f.result() for f in pending]  # a failed write raises here
    return made + written


def _pyramid(store: Store, original: Artifact, ratio: float | None) -> tuple[Path, float | None]:
    """The tiled multi-resolution codestream of a very large image, made tile by tile once (under its lock)."""
    path, meta = _codestream_cache(store, original.checksum, 0, ratio)
    if not _cached(path, meta, ratio):
        with item_lock(store.root, f"codestream:{path.name}"):
            if not _cached(path, meta, ratio):
                _build_pyramid(store, original, ratio, path, meta)
    return path, float(meta.read_text()) if meta.exists() else None


def _build_pyramid(store: Store, original: Artifact, ratio: float | None, path: Path, meta: Path) -> None:
    from .bigimage import DicomTiles, encode_pyramid
    from .deepzoom import Codestream, CodestreamTiles

    ds = read_dataset(original.path)
    lossless, _ = _codestream_cache(store, original.checksum, 0, None)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        if not lossless.exists():
            raise InvalidOptionError("This very large compressed image has no tiled codestream to read from.")
        source = CodestreamTiles(Codestream(lossless))
    else:
        source = DicomTiles(original.path, ds)
    encode_pyramid(source, path, ratio)
    if ratio:
        from .pixels import pixel_spec

        with atomic_writer(meta) as fh:
            fh.write(f"{pixel_spec(ds).frame_bytes / path.stat().st_size}".encode())


def _cached(path: Path, meta: Path, ratio: float | None) -> bool:
    """A cached codestream is complete once it and, for a lossy one, its ratio note exist."""
    return path.exists() and (not ratio or meta.exists())


def _make_large(store: Store, wanted: Wanted, original: Artifact) -> Artifact:
    from .bigimage import write_encapsulated
    from .deepzoom import Codestream
    from .derive import derived_header
    from .pixels import pixel_spec
    from .render import shrink_png, to_display

    ds = read_dataset(original.path)
    if wanted.variant == "thumbnail":
        path, _ = _pyramid(store, original, None)
        source = Codestream(path)
        # the coarsest level still at least a thumbnail wide
        level = max(0, min(source.levels, int(math.log2(max(source.width, source.height) / THUMBNAIL_SIZE))))
        coarse = to_display(source.region(level, 0, source.height, 0, source.width), ds)
        return store.put_artifact(wanted.sop_uid, "thumbnail", 0, wanted.codec, "", shrink_png(coarse, THUMBNAIL_SIZE))
    lossy = wanted.variant == "lossy"
    codec = get_codec("j2k", lossy)
    path, achieved = _pyramid(store, original, wanted.ratio if lossy else None)
    header = derived_header(ds, codec, pixel_spec(ds), achieved or 1.0)
    staged = store.tmp_path(".dcm")
    write_encapsulated(header, path, staged)
    return store.put_artifact_file(wanted.sop_uid, wanted.variant, wanted.ratio, "j2k", str(codec.transfer_syntax), staged, achieved)


def _codestream_cache(store: Store, checksum: str, frame: int, ratio: float | None) -> tuple[Path, Path]:
    """Where the codestream of a frame (lossless, or lossy at *ratio*) is kept, and its ratio note."""
    key = hashlib.sha256(f"{checksum}:{frame}:{'lossy' if ratio else 'lossless'}:{ratio}".encode()).hexdigest()
    # named after the original's checksum first: deleting an instance finds every codestream made from it
    path = store.root / "cache" / "codestreams" / f"{checksum}-{key[:32]}.j2k"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, path.with_suffix(".ratio")


def _cache(store: Store):
    import diskcache

    cache = getattr(store, "_variant_cache", None)
    if cache is None:
        cache = diskcache.Cache(str(store.root / "cache" / "variants"), size_limit=CACHE_LIMIT, eviction_policy="least-recently-used")
        store._variant_cache = cache
    return cache


@dataclass
class VariantFile:
    """An open file to send: a stored artifact, or an on-demand one held by the cache."""

    stream: BinaryIO
    etag: str
    size: int
    transfer_syntax: str
    from_cache: bool
    lossy_ratio: float | None = None
    method: str | None = None

    def close(self) -> None:
        self.stream.close()


def _original_file(store: Store, original: Artifact) -> VariantFile:
    """The stored original (or its lossless master); read again if its master replaced it since the row was read."""
    try:
        stream = open(original.path, "rb")
    except FileNotFoundError:
        original = store.artifact(original.sop_uid, "original")
        stream = open(original.path, "rb")
    return VariantFile(stream, original.checksum[:32], original.bytes, original.transfer_syntax, False)


def variant_file(store: Store, sop_uid: str, variant: str, ratio: float | None = None) -> VariantFile:
    """A variant of an instance: stored when the strategy keeps it, else made once and cached (LRU)."""
    row = store.instance(sop_uid)
    policy = store.policy()
    if variant not in ("original", "lossless", "lossy"):
        raise InvalidOptionError(f"Unknown variant {variant!r}.", hint="Use original, lossless or lossy.")
    if variant == "lossy" and not policy.lossy_enabled:
        raise Forbidden("Lossy images are switched off for this clinic.", hint="An administrator can enable them on the Policy page.")
    original = store.artifact(sop_uid, "original")
    if variant == "original" or not row["rows"]:  # a non-image (report, plan, PDF) is served as it came, whatever the variant
        return _original_file(store, original)
    lossy = variant == "lossy"
    codec = lossy_setting(policy, row).codec if lossy else lossless_codec_for(policy, row)
    ratio = check_ratio(float(ratio) if ratio is not None else _ratio(policy, row), True) if lossy else 0.0
    method = get_codec(codec, True).method if lossy else None
    art = store.artifact(sop_uid, variant, ratio)
    if art is not None and art.codec == codec:
        return VariantFile(open(art.path, "rb"), art.checksum[:32], art.bytes, art.transfer_syntax, False, art.achieved_ratio, method)
    if not lossy and (done := master_of(store, sop_uid)) and done.mastered:  # strategy 5: the master is the lossless copy
        return _original_file(store, original)
    key = f"{original.checksum}:{variant}:{ratio:g}:{codec}"
    cache = _cache(store)
    handle, tag = cache.get(key, read=True, tag=True)
    from_cache = handle is not None
    if not from_cache:
        with item_lock(store.root, f"variant:{key}"):  # made once, however many ask at the same time
            handle, tag = cache.get(key, read=True, tag=True)
            from_cache = handle is not None  # made meanwhile by whoever held the lock
            if not from_cache:
                data, syntax, achieved = _encode(original.path, variant, ratio, codec)
                cache.set(key, io.BytesIO(data), read=True, tag=f"{syntax}|{achieved or ''}")
                handle, tag = cache.get(key, read=True, tag=True)
    syntax, achieved = tag.split("|")
    handle.seek(0, io.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    etag = hashlib.sha256(key.encode()).hexdigest()[:32]
    return VariantFile(handle, etag, size, syntax, from_cache, float(achieved) if achieved else None, method)


def storage_report(store: Store, study_uid: str | None = None) -> dict:
    """Bytes per variant now, what each strategy would cost (measured, or estimated from a sample), and what the
    policy costs: each study under the strategy it follows (its own, its modality's or the clinic's)."""
    from .policy import STRATEGIES

    studies = [study_uid] if study_uid else [r["study_uid"] for r in store.studies()]
    policy = store.policy()
    now: dict[str, int] = {}
    cost = {s.number: 0.0 for s in STRATEGIES}
    estimated = {s.number: False for s in STRATEGIES}
    received = 0  # the originals as they came in (a lossless master's original counted at its recorded size)
    followed = {"bytes": 0.0, "estimated": False, "studies": {}}
    for uid in studies:
        strategy_now = store.study_strategy(uid, policy)
        followed["studies"][strategy_now] = followed["studies"].get(strategy_now, 0) + 1
        rows = store.instances(uid)
        arts = store.artifacts(study_uid=uid)
        mastered = {sop: m for sop, m in masters(store, uid).items() if m.mastered}
        for a in arts:
            variant = "master" if a.variant == "original" and a.sop_uid in mastered else a.variant
            now[variant] = now.get(variant, 0) + a.bytes
        received += sum(a.bytes for a in arts if a.variant == "original" and a.sop_uid not in mastered)
        received += sum(m.original_bytes for m in mastered.values())
        by_key = {(a.sop_uid, a.variant): a for a in arts}
        lossless_ratio = _sample_lossless_ratio(store, rows, by_key, policy)
        master_sizes = _master_sizes(store, rows, by_key, lossless_ratio)
        for row in rows:
            original = by_key[(row["sop_uid"], "original")].bytes
            sizes = {"original": original}
            measured = by_key.get((row["sop_uid"], "lossless"))
            sizes["lossless"] = measured.bytes if measured else row["uncompressed_bytes"] / lossless_ratio
            lossy = by_key.get((row["sop_uid"], "lossy"))
            sizes["lossy"] = lossy.bytes if lossy else row["uncompressed_bytes"] / _ratio(policy, row)
            thumb = by_key.get((row["sop_uid"], "thumbnail"))
            sizes["thumbnail"] = thumb.bytes if thumb else 20_000
            sizes["master"] = master_sizes[row["sop_uid"]]
            for strategy in STRATEGIES:
                for variant in strategy.stored:
                    if variant == "lossy" and not policy.lossy_enabled:
                        continue
                    cost[strategy.number] += sizes[variant]
                    if variant != "original" and not by_key.get((row["sop_uid"], variant)):
                        estimated[strategy.number] = True
                    if strategy.number == strategy_now:  # the same sums as the strategy's card, for this study
                        followed["bytes"] += sizes[variant]
                        followed["estimated"] |= variant != "original" and not by_key.get((row["sop_uid"], variant))
    originals = received
    return {
        "study_uid": study_uid,
        "studies": len(studies),
        "bytes_now": now,
        "bytes_total": sum(now.values()),
        "strategies": [
            {"strategy": s.number, "name": s.name, "bytes": int(cost[s.number]), "estimated": estimated[s.number],
             "vs_originals": (cost[s.number] / originals) if originals else None}
            for s in STRATEGIES
        ],
        "policy": {"bytes": int(followed["bytes"]), "estimated": followed["estimated"],
                   "vs_originals": (followed["bytes"] / originals) if originals else None,
                   "studies_per_strategy": followed["studies"]},
    }


def _sample_lossless_ratio(store: Store, rows, by_key, policy: Policy) -> float:
    """Measured lossless ratio where artifacts exist, else from encoding one sample instance."""
    measured = [(r["uncompressed_bytes"], by_key[(r["sop_uid"], "lossless")].bytes) for r in rows if (r["sop_uid"], "lossless") in by_key]
    if measured:
        return sum(u for u, _ in measured) / sum(c for _, c in measured)
    if not rows:
        return 1.0
    original = by_key[(rows[len(rows) // 2]["sop_uid"], "original")]
    codec = lossless_codec_for(policy, rows[len(rows) // 2])
    key = f"{original.checksum}:lossless-ratio:{codec}"  # an encode is ~0.1 s: once per sample, not per request
    cache = _cache(store)
    if (ratio := cache.get(key)) is None:
        with item_lock(store.root, f"variant:{key}"):
            if (ratio := cache.get(key)) is None:
                try:
                    _data, _syntax, achieved = _encode(original.path, "lossless", 0, codec)
                except RadPressError:
                    achieved = None
                ratio = achieved or 1.0
                cache.set(key, ratio)
    return ratio


def _master_sizes(store: Store, rows, by_key, lossless_ratio: float) -> dict[str, float]:
    """Strategy 5 per instance: the master where made, the original where it is kept, else an estimate.

    The estimate takes the ratio of the study's masters, else of its JPEG-LS copies, else *lossless_ratio*
    (the policy's sample): no further encode for a projection.
    """
    decided = masters(store, rows[0]["study_uid"]) if rows else {}
    sizes, todo, measured = {}, [], []
    for row in rows:
        sop = row["sop_uid"]
        if sop in decided or not_mastered_reason(row):
            sizes[sop] = by_key[(sop, "original")].bytes
            by_key[(sop, "master")] = by_key[(sop, "original")]  # measured, not estimated
            if sop in decided and decided[sop].mastered:
                measured.append((row["uncompressed_bytes"], sizes[sop]))
        else:
            todo.append(row)
            if (copy := by_key.get((sop, "lossless"))) and copy.codec == MASTER_CODEC:
                measured.append((row["uncompressed_bytes"], copy.bytes))
    ratio = sum(u for u, _ in measured) / sum(c for _, c in measured) if measured else lossless_ratio
    for row in todo:
        sizes[row["sop_uid"]] = min(by_key[(row["sop_uid"], "original")].bytes, row["uncompressed_bytes"] / ratio)
    return sizes


def thumbnail_bytes(store: Store, sop_uid: str) -> tuple[bytes, str]:
    """The stored thumbnail (drawn by this renderer), or one made from the original and cached."""
    store.instance(sop_uid)
    stored = store.artifact(sop_uid, "thumbnail")
    if stored is not None and stored.codec == picture_codec("png"):
        return stored.path.read_bytes(), stored.checksum[:32]
    original = store.artifact(sop_uid, "original")
    key = _thumbnail_key(original.checksum)
    cache = _cache(store)
    data = cache.get(key)
    if data is None:
        with item_lock(store.root, f"variant:{key}"):
            data = cache.get(key)
            if data is None:
                data = thumbnail_png(read_dataset(original.path), THUMBNAIL_SIZE)
                cache.set(key, data)
    return data, hashlib.sha256(key.encode()).hexdigest()[:32]


def _thumbnail_key(checksum: str) -> str:
    """A thumbnail made on demand, in the cache and (hashed) in its URL: a new renderer draws it again."""
    return f"{render_version(checksum[:32])}:thumbnail:{THUMBNAIL_SIZE}"


def thumbnail_versions(artifacts) -> dict[str, str]:
    """The ETag :func:`thumbnail_bytes` answers with, per instance among *artifacts* (e.g. a study's, read in one
    query), without making any thumbnail: pages link ``/thumbnail/<sop>?v=<version>``, a URL that names its content
    (cached by the browser as immutable)."""
    found: dict[str, dict] = {}
    current = picture_codec("png")
    for a in artifacts:
        if a.variant == "original" or (a.variant == "thumbnail" and a.codec == current):  # (another renderer's: not served)
            found.setdefault(a.sop_uid, {})[a.variant] = a
    return {sop: (pair["thumbnail"].checksum[:32] if "thumbnail" in pair else
                  hashlib.sha256(_thumbnail_key(pair["original"].checksum).encode()).hexdigest()[:32])
            for sop, pair in found.items()}


def lab_key(store: Store, study_uid: str, config=None, sop_uids: set[str] | None = None) -> str:
    """The cache key of a quality-lab sweep: the instances, the settings and the clinic's current codec and ratio
    (which the sweep judges too).  One key, one sweep, however many ask (:mod:`core.labjobs`)."""
    return _lab_inputs(store, study_uid, config, sop_uids)[2]


def cached_lab(store: Store, key: str) -> dict | None:
    """The sweep stored under *key*, or None (not run yet, or evicted from the cache)."""
    return _cache(store).get(key)


def _lab_inputs(store: Store, study_uid: str, config, sop_uids: set[str] | None):
    import json

    from .lab import LabConfig

    config = config or LabConfig()
    store.study(study_uid)
    rows = [r for r in store.instances(study_uid) if sop_uids is None or r["sop_uid"] in sop_uids]
    if not rows:
        raise InvalidOptionError(f"Study {study_uid} has no instances.")
    setting = lossy_setting(store.policy(), rows[0])
    key = "lab:" + hashlib.sha256(json.dumps([study_uid, [r["sop_uid"] for r in rows], repr(config), setting.ratio,
                                              setting.codec]).encode()).hexdigest()
    return rows, setting, key, config


def study_lab(store: Store, study_uid: str, config=None, progress=None, *, refresh: bool = False,
              sop_uids: set[str] | None = None) -> dict:
    """The quality-lab sweep on a stored study (or the instances *sop_uids* of it), at the clinic's current ratio;
    cached per study and settings.  Minutes on a large study: web requests start it as a job (:mod:`core.labjobs`)."""
    from .lab import run_lab

    rows, setting, key, config = _lab_inputs(store, study_uid, config, sop_uids)
    cache = _cache(store)
    if not refresh and (hit := cache.get(key)) is not None:
        return hit
    datasets = [read_dataset(store.artifact(r["sop_uid"], "original").path) for r in rows]
    study = store.study(study_uid)
    result = run_lab(datasets, config, current_ratio=setting.ratio, current_codec=setting.codec,
                     label=f"{study['patient_name']} {study['description'] or ''}".strip(), progress=progress)
    result["study_uid"] = study_uid
    cache.set(key, result)
    return result


def codestream_path(store: Store, sop_uid: str, frame: int = 0, variant: str = "lossless", ratio: float | None = None) -> tuple[Path, float | None]:
    """A JPEG 2000 / HTJ2K codestream file of one frame, for reduced-resolution and region reads.

    Taken from the stored artifact when it is J2K or HTJ2K, otherwise encoded
    once as JPEG 2000 and kept in the cache folder.  Returns the path and, for
    lossy variants, the achieved ratio.  ``original`` reads the lossless
    codestream: same pixels.
    """
    row = store.instance(sop_uid)
    if not 0 <= frame < row["frames"]:
        raise InvalidOptionError(f"Frame {frame + 1} requested but the image has {row['frames']} frame(s).")
    policy = store.policy()
    lossy = variant == "lossy"
    if variant not in ("original", "lossless", "lossy"):
        raise InvalidOptionError(f"Unknown variant {variant!r}.", hint="Use original, lossless or lossy.")
    if lossy and not policy.lossy_enabled:
        raise Forbidden("Lossy images are switched off for this clinic.")
    ratio = check_ratio(float(ratio) if ratio is not None else _ratio(policy, row), True) if lossy else None
    if lossy:  # an asked-for ratio never goes beyond the CAR bound, as for every other lossy copy
        ratio = float(f"{ratio:.2g}")  # two significant digits: ratio=10.0001, 10.0002, ... cannot fill the disk with codestreams
        ratio, _ = check_bound(ratio, row["modality"] or "", row["body_part"] or "", row["study_description"] or "", cap=True)
    original = store.artifact(sop_uid, "original")
    if is_large(row["rows"], row["columns"]):
        return _pyramid(store, original, ratio)
    path, meta = _codestream_cache(store, original.checksum, frame, ratio)
    if not _cached(path, meta, ratio):
        with item_lock(store.root, f"codestream:{path.name}"):
            if not _cached(path, meta, ratio):
                _build_codestream(store, original, frame, ratio, path, meta)
    return path, float(meta.read_text()) if meta.exists() else None


def _build_codestream(store: Store, original: Artifact, frame: int, ratio: float | None, path: Path, meta: Path) -> None:
    """One frame's codestream: cut from a stored J2K/HTJ2K artifact, else encoded from the original."""
    from pydicom.encaps import get_frame

    from .pixels import pixel_spec

    lossy = ratio is not None
    stored = store.artifact(original.sop_uid, "lossy" if lossy else "lossless", ratio or 0)
    achieved = None
    if stored is not None and stored.codec in ("j2k", "htj2k"):
        ds = read_dataset(stored.path)
        data = get_frame(ds.PixelData, frame, number_of_frames=pixel_spec(ds).frames)
        achieved = (stored.achieved_ratio or pixel_spec(ds).frame_bytes / len(data)) if lossy else None
    else:
        from .pixels import decode_frame

        ds = read_dataset(original.path)
        spec = pixel_spec(ds)
        codec = choose_codec("j2k", lossy, spec)
        data = codec.encode(decode_frame(ds, frame), spec, ratio)
        achieved = spec.frame_bytes / len(data) if lossy else None
    if achieved:
        with atomic_writer(meta) as fh:
            fh.write(f"{achieved}".encode())
    with atomic_writer(path) as fh:
        fh.write(data)
