"""Bench section "studylist": the Studies list over 10,000 indexed studies, asked for as the browser asks.

RadPress runs as ``make run`` runs it (:func:`core.bench_ingest.radpress_server`) on an index of
10,000 generated studies (:func:`core.bench.index_studies`), a few of them restricted to named
readers.  The list's callback (``/_dash-update-component``, the body built from ``/_dash-dependencies``
like dash-renderer builds it) is timed for the first render and for each search and sort, as an
administrator and as a radiologist; QIDO-RS answering the same search over the same index is the reference.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import requests

from .environ import environment

__all__ = ["measure", "SEARCHES", "STUDIES", "TARGET_MS"]

STUDIES = 10_000
TARGET_MS = 1000  # the bound for the first render and a search
REPEAT = 5
# label -> (the list's search fields, its sort, the same search as QIDO-RS matching keys)
SEARCHES = {
    "first render (newest first)": ({}, ("date", "desc"), {}),
    "name 'name1' (prefix)": ({"studies-name": "name1"}, ("date", "desc"), {"PatientName": "name1*"}),
    "patient ID P4242": ({"studies-patient-id": "P4242"}, ("date", "desc"), {"PatientID": "P4242"}),
    "accession A77*": ({"studies-accession": "A77*"}, ("date", "desc"), {"AccessionNumber": "A77*"}),
    "MR, 2024-03-01..2024-06-30": ({"studies-modality": ["MR"], "studies-dates.start_date": "2024-03-01",
                                    "studies-dates.end_date": "2024-06-30"}, ("date", "desc"),
                                   {"ModalitiesInStudy": "MR", "StudyDate": "20240301-20240630"}),
    "sorted by patient name": ({}, ("patient", "asc"), None),
    "sorted by accession, last page": ({"page": 399}, ("accession", "desc"), None),
}
ROLES = (("bench-admin", "bench-admin-password", "admin"), ("bench-rad", "bench-rad-password", "radiologist"))


def measure(studies: int = STUDIES, repeat: int = REPEAT) -> dict:
    from .bench import index_studies
    from .bench_ingest import radpress_server
    from .store import Store
    from .users import Users

    out: dict = {"studies": studies, "rows": []}
    with tempfile.TemporaryDirectory(prefix="radpress-bench-studylist-") as tmp_name:
        data = Path(tmp_name) / "data"
        store = Store(data)
        index_studies(store, studies)
        users = Users(store)
        for name, password, role in ROLES:
            users.add(name, password, role)
        users.add("bench-other", "bench-other-password", "radiologist")
        with store.connect() as db:  # one study in ten is for another radiologist only
            db.executemany("INSERT INTO study_readers (study_uid, user) VALUES (?, 'bench-other')",
                           [(f"2.25.{n}",) for n in range(0, studies, 10)])
        # the list needs no DICOM node (and port 11112 may be another RadPress's)
        with environment(RADPRESS_DICOM_PORT="0"), radpress_server(data) as (base, _pid):
            for name, password, role in ROLES:
                http = requests.Session()
                login = http.post(f"{base}/login", data={"username": name, "password": password}, allow_redirects=False, timeout=30)
                login.raise_for_status()
                dependency = _list_callback(http, base)
                for label, (fields, sort, qido) in SEARCHES.items():
                    body = _body(dependency, fields, sort)
                    times, answer = _timed(lambda: http.post(f"{base}/_dash-update-component", json=body, timeout=60), repeat)
                    count = answer["response"]["studies-count"]["children"]
                    row = {"role": role, "search": label, "median_ms": statistics.median(times), "max_ms": max(times),
                           "count": count, "rows": len(answer["response"]["studies-table"]["data"])}
                    if qido is not None:
                        qido_times, _ = _timed(lambda: http.get(f"{base}/dicom-web/studies", params={**qido, "limit": 25},
                                                                timeout=60), repeat, as_json=False)
                        row["qido_median_ms"] = statistics.median(qido_times)
                    out["rows"].append(row)
    worst = max(out["rows"], key=lambda r: r["median_ms"])
    out["checks"] = [
        {"target": f"Studies list over {studies} studies: first render and each search < {TARGET_MS} ms",
         "measured": f"{worst['median_ms']:.0f} ms (median of the slowest: {worst['search']}, {worst['role']})",
         "ok": all(r["median_ms"] < TARGET_MS for r in out["rows"])},
        {"target": "every search answered a page of rows", "measured": f"{sum(1 for r in out['rows'] if r['rows'])} of {len(out['rows'])}",
         "ok": all(r["rows"] for r in out["rows"])},
    ]
    out["table"] = _table(out)
    return out


def _list_callback(http: requests.Session, base: str) -> dict:
    """The list's callback as dash-renderer knows it (its inputs in order)."""
    dependencies = http.get(f"{base}/_dash-dependencies", timeout=30).json()
    return next(d for d in dependencies if "studies-table.data" in d["output"])


def _body(dependency: dict, fields: dict, sort: tuple[str, str]) -> dict:
    """The request the browser sends when the search fields hold *fields* (id or id.property -> value)."""
    inputs = []
    for item in dependency["inputs"]:
        key, prop = item["id"], item["property"]
        value = fields.get(f"{key}.{prop}", fields.get(key) if prop == "value" else None)
        if (key, prop) == ("studies-table", "page_current"):
            value = fields.get("page", 0)
        elif (key, prop) == ("studies-table", "sort_by"):
            value = [{"column_id": sort[0], "direction": sort[1]}]
        inputs.append({"id": key, "property": prop, "value": value})
    outputs = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in dependency["output"].strip(".").split("...")]
    changed = next((i for i in inputs if i["value"] not in (None, 0) and i["id"] != "studies-table"), inputs[0])
    return {"output": dependency["output"], "outputs": outputs, "inputs": inputs, "state": [],
            "changedPropIds": [f"{changed['id']}.{changed['property']}"]}


def _timed(call, repeat: int, as_json: bool = True) -> tuple[list[float], dict | None]:
    times, answer = [], None
    for _ in range(repeat + 1):  # the first one warms the connection and SQLite's page cache; not counted
        start = time.perf_counter()
        response = call()
        elapsed = (time.perf_counter() - start) * 1000
        response.raise_for_status()
        answer = response.json() if as_json else None
        times.append(elapsed)
    return times[1:], answer


def _table(out: dict) -> str:
    lines = [f"Studies list over {out['studies']} indexed studies (Dash callback over HTTP, {REPEAT} runs; QIDO-RS same search as reference)",
             f"{'role':<12} {'search':<34} {'median ms':>9} {'max ms':>7} {'QIDO ms':>8}  matches"]
    for r in out["rows"]:
        qido = f"{r['qido_median_ms']:.0f}" if "qido_median_ms" in r else "—"
        lines.append(f"{r['role']:<12} {r['search']:<34} {r['median_ms']:>9.0f} {r['max_ms']:>7.0f} {qido:>8}  {r['count']}")
    return "\n".join(lines)
