"""Bench section "ingest": uploads over HTTP and full-size previews, RadPress beside Orthanc.

The same files go to both servers in the same run: a series of 512×512 CT
instances (new UIDs per copy of pydicom-data's 693 slice) posted by 4
parallel clients, one instance per request, as a modality or a gateway sends
them.  RadPress is served as ``make run`` serves it (the launcher: its job
runner and gunicorn's worker processes); Orthanc is Debian's, with its default
settings.  Previews are the full-size PNG of a CT 512² and an MR 1024²
instance (``/instances/{id}/preview`` against ``/preview/<sop>``), one client,
timed on each server at rest before the upload.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import requests

from .bench_orthanc import _free_port, orthanc

__all__ = ["measure", "radpress_server", "upload_rate"]

ADMIN = ("bench", "bench-password-not-secret")
TARGET = 330.0  # instances/s: Orthanc's figure on this machine (issue 13)
PREVIEW_SAMPLES = {"CT 512²": "693_UNCR", "MR 1024²": "MR2_UNCR"}


@contextmanager
def radpress_server(data: Path, timeout: float = 120.0) -> Iterator[tuple[str, int]]:
    """RadPress started as ``make run`` starts it (``python app.py``: the launcher, its job runner and gunicorn's
    workers) on a free port with its own data directory; yields the base URL and the launcher's pid."""
    port = _free_port()
    env = {**os.environ, "RADPRESS_ADMIN_USER": ADMIN[0], "RADPRESS_ADMIN_PASSWORD": ADMIN[1], "RADPRESS_DEMO": "0",
           "RADPRESS_DATA": str(data), "HOST": "127.0.0.1", "PORT": str(port),
           "RADPRESS_DICOM_PORT": "0"}  # no DICOM node: uploads are measured over HTTP, and 11112 may be taken
    root = Path(__file__).resolve().parent.parent
    log_path = data.parent / "radpress.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "app.py"], env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"RadPress did not start: {log_path.read_text(errors='replace')[-800:]}")
                try:
                    if requests.get(f"{base}/api/health", timeout=5).ok:
                        break
                except (requests.ConnectionError, requests.Timeout):
                    pass
                time.sleep(0.2)
            yield base, process.pid
        finally:
            _cancel_jobs(base)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _cancel_jobs(base: str) -> None:
    """The artifact jobs the uploads started are not measured here: cancelled, so that the server stops at once."""
    try:
        for job in requests.get(f"{base}/api/jobs", auth=ADMIN, timeout=30).json():
            if job["state"] in ("queued", "running"):
                requests.post(f"{base}/api/jobs/{job['id']}/cancel", auth=ADMIN, timeout=30)
    except requests.RequestException:
        pass  # a server that does not answer is stopped all the same


def upload_rate(files: list[Path], post: Callable[[requests.Session, bytes, str], str], clients: int = 4,
                latencies: list[float] | None = None) -> tuple[float, list[str]]:
    """Seconds to post every file with *clients* parallel clients (each its own connection), and what each post
    returned; each post's seconds are appended to *latencies*."""
    local = threading.local()
    bodies = [(f.read_bytes(), f.name) for f in files]  # read before the clock starts: the servers are measured, not the disk

    def send(item):
        if not hasattr(local, "http"):
            local.http = requests.Session()
        start = time.perf_counter()
        answer = post(local.http, *item)
        if latencies is not None:
            latencies.append(time.perf_counter() - start)
        return answer

    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        ids = list(pool.map(send, bodies))
        return time.perf_counter() - start, ids


def _cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by a server's processes: its web side and the rest (jobs)."""
    import psutil

    totals = {"web": 0.0, "background": 0.0}
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times, command = process.cpu_times(), " ".join(process.cmdline())
        except psutil.Error:
            continue
        web = "gunicorn" in command or process.pid == pid and "Orthanc" in command
        totals["web" if web else "background"] += times.user + times.system
        if web:
            totals[process.pid] = times.user + times.system
    return totals


def _timed_upload(files: list[Path], warmup: list[Path], post, pid: int, clients: int) -> dict:
    """Instances/s over *files* after *warmup* (connections, logins, caches), the time each upload took as its
    client saw it (median, 90th percentile), and CPU ms per instance by side."""
    upload_rate(warmup, post, clients)
    before, client, latencies = _cpu_seconds(pid), time.process_time(), []
    seconds, _ = upload_rate(files, post, clients, latencies)
    after, client = _cpu_seconds(pid), time.process_time() - client
    n = len(files)
    p90 = statistics.quantiles(latencies, n=10, method="inclusive")[-1] if n > 1 else latencies[0]
    by_process = sorted(((after[p] - before.get(p, 0.0)) / n * 1000 for p in after if isinstance(p, int)), reverse=True)
    return {"per_s": n / seconds, "seconds": seconds, "client_cpu_ms": client / n * 1000,
            "latency_ms": statistics.median(latencies) * 1000, "latency_p90_ms": p90 * 1000,
            "web_cpu_ms_by_process": [round(ms, 2) for ms in by_process if ms > 0.01],  # how the clients were spread
            **{f"{side}_cpu_ms": (after[side] - before[side]) / n * 1000 for side in ("web", "background")}}


def _post_radpress(base: str) -> Callable[[requests.Session, bytes, str], str]:
    def post(http: requests.Session, body: bytes, name: str) -> str:
        response = http.post(f"{base}/api/upload", params={"name": name}, data=body, auth=ADMIN,
                             headers={"Content-Type": "application/dicom"}, timeout=120)
        response.raise_for_status()
        result = response.json()["results"][0]
        if result["status"] != "stored":
            raise RuntimeError(f"RadPress did not store {name}: {result}")
        return result["sop_uid"]

    return post


def _post_orthanc(base: str) -> Callable[[requests.Session, bytes, str], str]:
    def post(http: requests.Session, body: bytes, name: str) -> str:
        response = http.post(f"{base}/instances", data=body, headers={"Content-Type": "application/dicom"}, timeout=120)
        response.raise_for_status()
        return response.json()["ID"]

    return post


def _median_ms(get: Callable[[], requests.Response], repeat: int) -> tuple[float, float]:
    """(first request, median of the next *repeat*) in milliseconds; every answer must be a PNG."""
    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        response = get()
        times.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
        if not response.content.startswith(b"\x89PNG"):
            raise RuntimeError(f"not a PNG from {response.url}")
    return times[0], statistics.median(times[1:])


def _settled(base: str, timeout: float = 300.0) -> None:
    """Wait until RadPress has no artifact job queued or running (previews are timed on a server at rest)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = requests.get(f"{base}/api/jobs", auth=ADMIN, timeout=30).json()
        if not any(job["state"] in ("queued", "running") for job in jobs):
            return
        time.sleep(0.5)
    raise RuntimeError(f"RadPress jobs still running after {timeout:.0f} s")


def _previews(get: Callable[[str], requests.Response], ids: dict[str, str], repeat: int) -> dict:
    """First request and median of *repeat* more, per preview sample, in ms."""
    out = {}
    for label, key in ids.items():
        first_ms, median = _median_ms(lambda: get(key), repeat)
        out[f"preview_ms {label}"], out[f"preview_first_ms {label}"] = median, first_ms
    return out


def measure(count: int = 300, clients: int = 4, repeat: int = 15, warmup: int = 8,
            preview_samples: dict[str, str] = PREVIEW_SAMPLES) -> dict:
    """Previews first, on each server at rest (RadPress: once the previewed instances' copies are made), then the
    timed upload of *count* instances after *warmup* ones."""
    from .samples import write_series

    with tempfile.TemporaryDirectory(prefix="radpress-bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        series = write_series("693_UNCR", count + warmup, tmp / "series")
        files, first = series[warmup:], series[:warmup]
        previews = {label: write_series(name, 1, tmp / name)[0] for label, name in preview_samples.items()}
        result = {"instances": count, "clients": clients, "instance_bytes": files[0].stat().st_size,
                  "previews": list(previews)}
        with orthanc() as server:
            ids = {label: server.upload(path) for label, path in previews.items()}
            timed = _previews(lambda oid: server.http.get(f"{server.base}/instances/{oid}/preview", timeout=60), ids, repeat)
            result["orthanc"] = {**_timed_upload(files, first, _post_orthanc(server.base), server.process.pid, clients),
                                 **timed}
        with radpress_server(tmp / "data") as (base, pid):
            ids = {label: upload_rate([path], _post_radpress(base), 1)[1][0] for label, path in previews.items()}
            _settled(base)
            http = requests.Session()
            http.auth = ADMIN
            timed = _previews(lambda sop: http.get(f"{base}/preview/{sop}", timeout=120), ids, repeat)
            result["radpress"] = {**_timed_upload(files, first, _post_radpress(base), pid, clients), **timed}
    result["checks"] = _checks(result)
    result["table"] = _table(result)
    return result


def _checks(r: dict) -> list[dict]:
    ours, theirs = r["radpress"], r["orthanc"]
    checks = [{"target": f"upload ingest >= {TARGET:.0f} instances/s (512x512 CT, {r['clients']} clients, HTTP)",
               "measured": f"RadPress {ours['per_s']:.0f}/s, Orthanc {theirs['per_s']:.0f}/s in the same run",
               "ok": ours["per_s"] >= TARGET}]
    for label in r["previews"]:
        mine, other = ours[f"preview_ms {label}"], theirs[f"preview_ms {label}"]
        checks.append({"target": f"full-size preview {label} no slower than Orthanc's",
                       "measured": f"RadPress {mine:.1f} ms, Orthanc {other:.1f} ms (median)", "ok": mine <= other})
    return checks


def _table(r: dict) -> str:
    ours, theirs = r["radpress"], r["orthanc"]
    rows = [("upload, instances/s", "per_s", ".0f"), ("  one upload, ms (median)", "latency_ms", ".1f"),
            ("  one upload, ms (90th percentile)", "latency_p90_ms", ".1f"), ("  server CPU, ms/instance (web)", "web_cpu_ms", ".2f"),
            ("  server CPU, ms/instance (jobs)", "background_cpu_ms", ".2f"),
            ("  client CPU, ms/instance", "client_cpu_ms", ".2f")]
    for label in r["previews"]:
        rows += [(f"preview {label}, ms (median)", f"preview_ms {label}", ".1f"),
                 (f"preview {label}, first, ms", f"preview_first_ms {label}", ".1f")]
    lines = [f"{'':36} {'RadPress':>10} {'Orthanc':>10}"]
    lines += [f"{label:36} {ours[key]:>10{fmt}} {theirs[key]:>10{fmt}}" for label, key, fmt in rows]
    lines.append(f"{r['instances']} instances of {r['instance_bytes'] / 1e3:.0f} kB, {r['clients']} parallel clients, "
                 "one instance per request; RadPress as `make run` serves it (HTTP Basic checked on every request, the "
                 "study's jobs running), Orthanc with Debian's defaults (no authentication); both fsync each file")
    lines.append("RadPress web CPU by worker process, ms/instance: "
                 + " / ".join(f"{ms:.2f}" for ms in ours["web_cpu_ms_by_process"])
                 + " (keep-alive connections stay on the worker the kernel gave them)")
    return "\n".join(lines)
