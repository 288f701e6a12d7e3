"""Bench section "master": disk per storage strategy 1-5 on the 300-instance CT series, beside Orthanc.

Strategy 5 is measured whole: the 300 instances ingested, its job run (each
original replaced by its checked lossless master), the archive's files and
index counted.  Strategy 4 is the 300 originals as stored.  Strategies 1-3
keep the originals plus copies; those copies are measured on a strategy-1 run
of the first :data:`SAMPLE_1` instances of the same series (the same slice
under new UIDs, so every instance's copies are the same size) and scaled to
300 — a full strategy-1 run takes minutes here, see the "archive" and
"throughput" sections.  Orthanc gets the same 300 files twice: stored as
received, and transcoded to JPEG 2000 lossless at ingest by its GDCM plugin.
Counted: the files each archive keeps and its index (RadPress: originals,
artifacts and index.sqlite after a WAL checkpoint; Orthanc: its storage
folder, attachments and SQLite index).  Not counted: RadPress's on-demand LRU
cache (lossy copies and thumbnails made on first request under strategies 2-5).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from .bench_orthanc import J2K_LOSSLESS, orthanc

__all__ = ["measure"]

COUNT = 300
SAMPLE_1 = 30
SAMPLE = "693_UNCR"
MB = 1e6


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _index_bytes(store) -> int:
    store.query("PRAGMA wal_checkpoint(TRUNCATE)")  # the journal is transient: count the index as it rests
    return sum(p.stat().st_size for p in store.root.glob("index.sqlite*"))


def _copies_per_instance(files: list[Path], root: Path) -> dict:
    """Strategy 1 on a sample: bytes per instance of each stored copy, and the job's wall time."""
    from .ingest import ingest
    from .jobs import Jobs
    from .store import Store

    store = Store(root)
    study = list(ingest(store, files))[0].study_uid
    store.set_study_strategy(study, 1)
    jobs = Jobs(store, workers=2)
    jobs.submit(study)
    start = time.perf_counter()
    [job] = jobs.run_pending()
    seconds = time.perf_counter() - start
    per: dict[str, float] = {}
    for artifact in store.artifacts(study_uid=study):
        if artifact.variant != "original":
            per[artifact.variant] = per.get(artifact.variant, 0) + artifact.bytes / len(files)
    return {"per_instance": per, "seconds": seconds, "job": job["state"], "index": _index_bytes(store)}


def _radpress(files: list[Path], root: Path) -> dict:
    from .archive import storage_report
    from .ingest import ingest
    from .jobs import Jobs
    from .master import masters
    from .store import Store

    store = Store(root)
    study = list(ingest(store, files))[0].study_uid
    originals = _bytes(root / "originals")
    index_originals = _index_bytes(store)
    projected = {s["strategy"]: s["bytes"] for s in storage_report(store, study)["strategies"]}
    store.set_study_strategy(study, 5)
    jobs = Jobs(store, workers=2)
    jobs.submit(study)
    start = time.perf_counter()
    [job] = jobs.run_pending()
    seconds = time.perf_counter() - start
    decided = masters(store, study).values()
    return {
        "originals": originals,
        "index_originals": index_originals,
        "masters": _bytes(root / "originals") + _bytes(root / "artifacts"),
        "index": _index_bytes(store),
        "projected_5": projected[5],
        "mastered": sum(m.mastered for m in decided),
        "kept": [m.reason for m in decided if not m.mastered],
        "job": f"{job['state']}: {job['message']}",
        "strategy5_s": seconds,
        "cache": _bytes(root / "cache" / "variants"),
    }


def _orthanc(files: list[Path], transcode: str | None, attempts: int = 2) -> dict:
    """Orthanc's disk after storing *files*; a fresh Orthanc once more if one stopped answering on the way (seen
    here under load with ingest transcoding: the process had exited)."""
    import requests

    attempt = 1
    while True:
        with orthanc(transcode_to=transcode) as server:
            start = time.perf_counter()
            try:
                ids = server.upload_all(files)
            except requests.ConnectionError:
                if attempt == attempts:
                    raise
                attempt += 1
                continue
            seconds = time.perf_counter() - start
            return {"bytes": server.disk_bytes(), "syntax": server.transfer_syntax(ids[0]), "seconds": seconds,
                    "attempts": attempt}


def measure(count: int = COUNT) -> dict:
    from .samples import write_series

    with tempfile.TemporaryDirectory(prefix="radpress-bench-master-") as tmp_name:
        tmp = Path(tmp_name)
        files = write_series(SAMPLE, count, tmp / "series")
        source = sum(f.stat().st_size for f in files)
        copies = _copies_per_instance(files[:SAMPLE_1], tmp / "sample")
        radpress = _radpress(files, tmp / "data")
        plain = _orthanc(files, None)
        j2k = _orthanc(files, J2K_LOSSLESS)
    per = {v: copies["per_instance"].get(v, 0) * count for v in ("lossless", "lossy", "thumbnail")}
    originals = radpress["originals"]
    stored = {1: originals + per["lossless"] + per["lossy"] + per["thumbnail"], 2: originals + per["lossless"],
              3: originals + per["lossy"], 4: originals, 5: radpress["masters"]}
    index = {n: radpress["index_originals"] for n in range(1, 5)} | {5: radpress["index"]}
    result = {"instances": count, "source_bytes": source, "sample_1": SAMPLE_1, "copies": copies, "radpress": radpress,
              "files": stored, "index": index, "radpress_total": {n: stored[n] + index[n] for n in stored},
              "orthanc_plain": plain, "orthanc_j2k": j2k}
    result["checks"] = _checks(result)
    result["table"] = _table(result)
    return result


def _checks(r: dict) -> list[dict]:
    ours, theirs = r["radpress_total"][5], r["orthanc_j2k"]["bytes"]
    rp = r["radpress"]
    measured5 = rp["masters"]
    return [
        {"target": f"strategy 5 disk <= Orthanc with JPEG 2000 lossless ingest transcoding ({r['instances']} CT instances)",
         "measured": f"RadPress {ours / MB:.1f} MB, Orthanc {theirs / MB:.1f} MB", "ok": ours <= theirs},
        {"target": "every original replaced only after the independent decoder (pylibjpeg/libjpeg) confirmed its master",
         "measured": f"{rp['mastered']}/{r['instances']} mastered, kept: {rp['kept'][:3]}; {rp['job']}",
         "ok": rp["mastered"] == r["instances"]},
        {"target": "strategy 5 projection (before the job) within 10 % of the disk measured after it",
         "measured": f"projected {rp['projected_5'] / MB:.1f} MB, measured {measured5 / MB:.1f} MB",
         "ok": abs(rp["projected_5"] - measured5) <= 0.1 * measured5},
    ]


def _table(r: dict) -> str:
    rp, total = r["radpress"], r["radpress_total"]
    names = {1: "1 everything ready", 2: "2 original + lossless", 3: "3 original + lossy", 4: "4 original only",
             5: "5 lossless master"}
    lines = [f"disk, {r['instances']} CT instances 512x512 ({r['source_bytes'] / MB:.1f} MB as received)",
             f"{'':34} {'files MB':>9} {'index MB':>9} {'total MB':>9}"]
    for n, name in names.items():
        scaled = f"  (copies scaled from {r['sample_1']})" if n < 4 else ""
        lines.append(f"{'RadPress ' + name:34} {r['files'][n] / MB:>9.1f} {r['index'][n] / MB:>9.1f} {total[n] / MB:>9.1f}{scaled}")
    for key, label in (("orthanc_plain", "Orthanc as received"), ("orthanc_j2k", "Orthanc J2K lossless at ingest")):
        o = r[key]
        again = f", Orthanc started {o['attempts']} times" if o["attempts"] > 1 else ""
        lines.append(f"{label:34} {'':>9} {'':>9} {o['bytes'] / MB:>9.1f}  ({o['seconds']:.1f} s to ingest{again})")
    lines.append(f"strategy 5 job {rp['strategy5_s']:.1f} s ({rp['mastered']} JPEG-LS masters, each decoded again by "
                 f"libjpeg before its original went); strategy-1 "
                 f"sample job {r['copies']['seconds']:.1f} s; not counted: the on-demand cache")
    return "\n".join(lines)
