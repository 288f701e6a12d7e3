"""Bench section "throughput": strategy 1 for a study beside GDCM making lossless JPEG 2000 copies only.

Side by side in one run, on the same files: ``gdcmconv --j2k``, one process
per file, two at a time (``xargs -P2``, the machine's two cores) and one at a
time; and RadPress's job bringing the study, just ingested, to strategy 1
(original + lossless + lossy + thumbnail) with its two worker processes.
GDCM runs at the job workers' niceness (:data:`core.workers.JOB_NICE`), so
that other work on the machine slows both sides alike.  Wall time and CPU
seconds (this process and its children) of each; ingest is timed apart (the
upload, not the copies).  Studies: 64 instances of the real
CT and MR slices of pydicom-data (32 + 32, one study), and the 300-instance CT
series of the archive section.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["measure", "STUDIES"]

# name -> ((sample, count), ...): one study of these series, new UIDs per copy (core.samples.write_series)
STUDIES = {
    "CT+MR 64": (("693_UNCR", 32), ("MR2_UNCR", 32)),
    "CT 300": (("693_UNCR", 300),),
}
WORKERS = 2


def _cpu() -> float:
    """CPU seconds (user + system) of this process and of its children waited for so far, and of the job
    workers' fork server with the workers it has waited for (workers are its children, not ours)."""
    import psutil
    from multiprocessing import forkserver

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    server = forkserver._forkserver._forkserver_pid  # noqa: SLF001 - the stdlib's record of its server
    if server is not None:
        times = psutil.Process(server).cpu_times()
        total += times.user + times.system + times.children_user + times.children_system
    return total


def write_study(series, folder: Path) -> list[Path]:
    """The files of one study made of *series* ((sample, count), ...)."""
    from pydicom.uid import generate_uid

    from .samples import write_series

    study_uid = generate_uid()
    return [f for name, count in series for f in write_series(name, count, folder / name, study_uid=study_uid)]


def gdcmconv(files: list[Path], out: Path, parallel: int) -> dict:
    """``gdcmconv --j2k IN OUT`` per file, *parallel* processes at a time (xargs -P), niced as job workers are."""
    from .workers import JOB_NICE

    out.mkdir(parents=True, exist_ok=True)
    pairs = b"".join(f"{f}\0{out / f.name}\0".encode() for f in files)
    cpu, start = _cpu(), time.perf_counter()
    subprocess.run(["nice", "-n", str(JOB_NICE), "xargs", "-0", "-n2", f"-P{parallel}", "gdcmconv", "--j2k"], input=pairs, check=True,
                   capture_output=True, timeout=1800)
    wall = time.perf_counter() - start
    made = list(out.iterdir())
    if len(made) != len(files):
        raise RuntimeError(f"gdcmconv made {len(made)} of {len(files)} files")
    return {"wall_s": wall, "cpu_s": _cpu() - cpu, "parallel": parallel, "mb": sum(p.stat().st_size for p in made) / 1e6}


def radpress(files: list[Path], data: Path, workers: int = WORKERS) -> dict:
    """Ingest *files*, then time the job that brings their study to strategy 1."""
    from .ingest import ingest
    from .jobs import Jobs
    from .store import Store
    from .workers import warm

    store = Store(data)
    start = time.perf_counter()
    results = list(ingest(store, files))
    ingest_s = time.perf_counter() - start
    study = results[0].study_uid
    warm()  # as the job runner of a running app has done at start-up (Jobs.start)
    jobs = Jobs(store, workers=workers)
    jobs.submit(study)
    cpu, start = _cpu(), time.perf_counter()
    [job] = jobs.run_pending()
    wall = time.perf_counter() - start
    artifacts = [a for a in store.artifacts(study_uid=study) if a.variant != "original"]
    return {"wall_s": wall, "cpu_s": _cpu() - cpu, "ingest_s": ingest_s, "state": job["state"], "done": job["done"],
            "failed": job["failed"], "artifacts": len(artifacts), "variants": sorted({a.variant for a in artifacts}),
            "mb": sum(a.bytes for a in artifacts) / 1e6}


def _one(name: str, series, tmp: Path) -> dict:
    files = write_study(series, tmp / "in")
    row = {"study": name, "instances": len(files), "source_mb": sum(f.stat().st_size for f in files) / 1e6}
    row["gdcm_p2"] = gdcmconv(files, tmp / "gdcm2", 2)  # GDCM first and last, RadPress between: drifting load hits both
    row["radpress"] = radpress(files, tmp / "data")
    row["gdcm_p1"] = gdcmconv(files, tmp / "gdcm1", 1)
    return row


def measure(studies: dict | None = None) -> dict:
    if not shutil.which("gdcmconv"):
        raise RuntimeError("gdcmconv is not installed (Debian package libgdcm-tools; `make bench` installs it)")
    rows = []
    for name, series in (studies or STUDIES).items():
        with tempfile.TemporaryDirectory(prefix="radpress-bench-throughput-") as tmp:
            rows.append(_one(name, series, Path(tmp)))
    checks = []
    for r in rows:
        ours, theirs = r["radpress"], r["gdcm_p2"]
        checks.append({"target": f"strategy 1 ({r['study']}) wall <= gdcmconv --j2k lossless-only, 2 processes",
                       "measured": f"{ours['wall_s']:.1f} s vs {theirs['wall_s']:.1f} s ({ours['wall_s'] / theirs['wall_s']:.2f}x)",
                       "ok": ours["wall_s"] <= theirs["wall_s"]})
        complete = ours["state"] == "done" and not ours["failed"] and ours["artifacts"] == 3 * r["instances"]
        checks.append({"target": f"strategy 1 ({r['study']}): lossless, lossy and thumbnail of every instance",
                       "measured": f"{ours['artifacts']} artifacts for {r['instances']} instances, {ours['failed']} failed",
                       "ok": complete})
    return {"rows": rows, "cpus": os.cpu_count(), "table": _table(rows), "checks": checks}


def _table(rows: list[dict]) -> str:
    from .workers import JOB_NICE

    lines = [f"{'study':<10} {'inst':>5} {'MB':>6}  {'what':<44} {'wall s':>7} {'inst/s':>7} {'CPU s':>7} {'CPU ms/inst':>11}"]
    for r in rows:
        n = r["instances"]
        for label, m in ((f"RadPress strategy 1 ({WORKERS} workers)", r["radpress"]),
                         ("gdcmconv --j2k lossless only, xargs -P2", r["gdcm_p2"]),
                         ("gdcmconv --j2k lossless only, xargs -P1", r["gdcm_p1"])):
            lines.append(f"{r['study']:<10} {n:>5} {r['source_mb']:>6.0f}  {label:<44} {m['wall_s']:>7.1f} {n / m['wall_s']:>7.1f} {m['cpu_s']:>7.1f} {1000 * m['cpu_s'] / n:>11.0f}")
        lines.append(f"{'':<24}(RadPress ingest before it: {r['radpress']['ingest_s']:.1f} s; copies {r['radpress']['mb']:.0f} MB "
                     f"vs GDCM's {r['gdcm_p2']['mb']:.0f} MB; GDCM and the job workers both at nice {JOB_NICE})")
    return "\n".join(lines)
