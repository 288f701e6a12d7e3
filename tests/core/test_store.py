import hashlib
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from core.errors import InvalidHeaderError
from core.ingest import ingest, ingest_stream
from core.samples import sample
from core.store import QUIET_SECONDS, Store, sha256_file
from tests.synthetic import make_dataset, write

MR2 = sample("MR2_UNCR")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "data")


def versions(tmp_path, count):
    """*count* files with one SOP Instance UID and different content."""
    ds = make_dataset(rows=32, columns=32)
    paths = []
    for index in range(count):
        ds.PatientName = f"Version^{index}"
        paths.append(write(ds, tmp_path / "versions" / f"{index}.dcm"))
    return str(ds.SOPInstanceUID), paths


def test_paths_come_from_a_hash_of_the_uid(store):
    uid = "1.2.840.113619.2.55.3"
    key = hashlib.sha256(uid.encode()).hexdigest()
    assert store.original_path(uid) == store.root / "originals" / key[:2] / f"{key}.dcm"
    assert store.artifact_path(uid, "lossy", 7, "j2k").parent == store.root / "artifacts" / key[:2] / key
    assert store.conflict_path(uid, "ab" * 32).name == f"{key}.{'ab' * 32}.dcm"
    for hostile in ("../57/1.2.3", "/etc/passwd", "1.2\x00.3", "1." * 150):
        with pytest.raises(InvalidHeaderError):
            store.original_path(hostile)


def test_an_archive_written_with_the_old_layout_still_reads(store):
    [result] = ingest(store, [MR2])
    stored = store.artifact(result.sop_uid, "original")
    old = store.root / "originals" / result.sop_uid[-2:] / f"{result.sop_uid}.dcm"  # the layout before hashing
    old.parent.mkdir(parents=True, exist_ok=True)
    os.replace(stored.path, old)
    with store.connect() as db:
        db.execute("UPDATE artifacts SET path=? WHERE sop_uid=? AND variant='original'", (str(old), result.sop_uid))
    report = Store(store.root).check(verify=True)
    assert not any(report[k] for k in ("missing_originals", "replaced_originals", "reindexed_originals", "orphan_files"))
    assert store.artifact(result.sop_uid, "original").path.read_bytes() == MR2.read_bytes()
    assert [r.status for r in ingest(store, [MR2])] == ["duplicate"]


def test_eight_threads_one_uid_different_content(store, tmp_path):
    uid, paths = versions(tmp_path, 8)
    results, barrier = {}, threading.Barrier(8)

    def send(path):
        data = path.read_bytes()
        barrier.wait()
        results[path] = ingest_stream(store, io.BytesIO(data), path.name)[0].status

    threads = [threading.Thread(target=send, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(results.values())
    assert statuses == ["conflict"] * 7 + ["stored"]
    [acknowledged] = [p for p, status in results.items() if status == "stored"]
    assert store.artifact(uid, "original").path.read_bytes() == acknowledged.read_bytes()
    conflicts = store.query("SELECT path FROM conflicts")
    assert len(conflicts) == 7 and all(os.path.exists(r["path"]) for r in conflicts)
    assert not list((store.root / "tmp").iterdir())


def test_eight_threads_one_file(store, tmp_path):
    data = write(make_dataset(rows=32, columns=32), tmp_path / "one.dcm").read_bytes()
    results, barrier = [], threading.Barrier(8)

    def send():
        barrier.wait()
        results.append(ingest_stream(store, io.BytesIO(data), "one.dcm")[0].status)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["duplicate"] * 7 + ["stored"] and not store.query("SELECT * FROM conflicts")


def test_four_processes_one_uid_different_content(store, tmp_path):
    uid, paths = versions(tmp_path, 4)
    code = "import sys; from core.ingest import ingest; from core.store import Store; " \
           "print([r.status for r in ingest(Store(sys.argv[1]), [sys.argv[2]])][0])"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(store.root), str(p)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True) for p in paths]
    statuses = {p: proc.communicate(timeout=120)[0].strip() for p, proc in zip(paths, procs)}
    assert sorted(statuses.values()) == ["conflict"] * 3 + ["stored"]
    [acknowledged] = [p for p, status in statuses.items() if status == "stored"]
    assert store.artifact(uid, "original").path.read_bytes() == acknowledged.read_bytes()


def test_an_unindexed_original_is_never_overwritten(store, tmp_path):
    uid, (first, second) = versions(tmp_path, 2)
    target = store.original_path(uid)
    target.parent.mkdir(parents=True)
    shutil.copy(first, target)  # placed just before a crash, row never committed
    [result] = ingest(store, [second])
    assert result.status == "conflict"
    assert target.read_bytes() == first.read_bytes() and store.artifact(uid, "original").path == target


def test_a_conflict_placed_just_before_a_crash_is_indexed_not_refused(store, tmp_path):
    uid, (first, second) = versions(tmp_path, 2)
    list(ingest(store, [first]))
    target = store.conflict_path(uid, sha256_file(second))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(second, target)  # placed, row never committed
    assert [r.status for r in ingest(store, [second])] == ["conflict"]
    assert [r["path"] for r in store.query("SELECT path FROM conflicts")] == [str(target)]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_check_leaves_a_live_writers_files_alone(store):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old = time.time() - QUIET_SECONDS - 60
        live = [store.root / "tmp" / f"{time.time_ns()}-{sleeper.pid}-1.dcm-upload",
                store.root / "artifacts" / "ab" / f".lossy-7.j2k.dcm.{sleeper.pid}-x1y2z3.part"]
        dead = [store.root / "tmp" / f"{time.time_ns()}-{_dead_pid()}-1.dcm",
                store.root / "artifacts" / "ab" / f".lossy-7.j2k.dcm.{_dead_pid()}-a1b2c3.part"]
        young = store.root / "tmp" / "no-owner.part"
        for path in live + dead + [young]:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"half")
            os.utime(path, (old, old))  # age alone never condemns a file whose owner lives
        os.utime(young, None)
        report = store.check()
        assert all(p.exists() for p in live + [young]) and not any(p.exists() for p in dead)
        assert sorted(report["in_flight"]) == sorted(map(str, live + [young]))
        assert sorted(report["orphan_files"]) == sorted(map(str, dead))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_check_reports_replaced_and_missing_originals(store, tmp_path):
    (mr,), (ct,) = ingest(store, [MR2]), ingest(store, [sample("693_UNCR")])
    mr_path = store.artifact(mr.sop_uid, "original").path
    data = bytearray(mr_path.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed: only the checksum sees it
    mr_path.chmod(0o644)
    mr_path.write_bytes(bytes(data))
    assert store.check()["replaced_originals"] == []
    assert store.check(verify=True)["replaced_originals"] == [mr.sop_uid]
    mr_path.write_bytes(bytes(data) + b"more")
    assert store.check()["replaced_originals"] == [mr.sop_uid]
    store.artifact(ct.sop_uid, "original").path.unlink()
    report = store.check()
    assert report["missing_originals"] == [ct.sop_uid] and store.artifact(ct.sop_uid, "original") is not None


def test_check_in_one_process_while_another_ingests(store, tmp_path):
    paths = [write(make_dataset(rows=24, columns=24, seed=i), tmp_path / "in" / f"{i}.dcm") for i in range(40)]
    code = "import sys; from core.ingest import ingest; from core.store import Store; " \
           "print(' '.join(r.status for r in ingest(Store(sys.argv[1]), [sys.argv[2]])))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(store.root), str(tmp_path / "in")], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    reports = []
    while proc.poll() is None:
        reports.append(store.check())
    statuses = proc.communicate()[0].split()
    assert statuses == ["stored"] * 40 and len(reports) > 1
    assert not any(r["orphan_files"] or r["missing_originals"] for r in reports)
    rows = store.artifacts()
    assert len(rows) == 40 and all(sha256_file(a.path) == a.checksum for a in rows)
    assert {dcmread(a.path).SOPInstanceUID for a in rows} == {dcmread(p).SOPInstanceUID for p in paths}


def test_check_command_exits_1_for_a_replaced_original_and_logs_it(store, capsys, caplog):
    from core.cli import main

    [mr] = ingest(store, [MR2])
    assert main(["check", "--data", str(store.root), "--verify"]) == 0
    path = store.artifact(mr.sop_uid, "original").path
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["check", "--data", str(store.root)]) == 0  # same size: only --verify reads the content
    assert main(["check", "--data", str(store.root), "--verify"]) == 1
    assert f"replaced originals   {mr.sop_uid}" in capsys.readouterr().out
    assert any(mr.sop_uid in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_a_failed_index_write_leaves_no_unacknowledged_original(store, tmp_path, monkeypatch):
    path = write(make_dataset(rows=32, columns=32), tmp_path / "one.dcm")

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(Store, "_index_original", broken)
    with pytest.raises(OSError):
        list(ingest(store, [path]))
    assert not list((store.root / "originals").rglob("*.dcm")) and not list((store.root / "tmp").iterdir())
    monkeypatch.undo()
    assert [r.status for r in ingest(store, [path])] == ["stored"]


def test_originals_on_another_file_system_are_copied_then_linked(store, tmp_path, monkeypatch):
    import errno

    real_link, calls = os.link, []

    def link(src, dst):
        calls.append(Path(src).parent.name)
        if Path(src).parent.name == "tmp":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    uid, (first, second) = versions(tmp_path, 2)
    assert [r.status for r in ingest(store, [first, second])] == ["stored", "conflict"]
    assert calls == ["tmp", store.original_path(uid).parent.name, "tmp", "conflicts"]
    assert store.artifact(uid, "original").path.read_bytes() == first.read_bytes()
    assert not [p for p in store.root.rglob("*.part")] and not list((store.root / "tmp").iterdir())


def test_a_file_linked_then_indexed_by_a_concurrent_ingest_is_still_stored_once(store, tmp_path, monkeypatch):
    """The original is linked before the write lock: an ingest of the same bytes that comes in between finds
    the file, indexes it and says duplicate; the one that placed it says stored."""
    import core.store as store_module

    data = write(make_dataset(rows=32, columns=32), tmp_path / "one.dcm").read_bytes()
    real, second = store_module._place_if_free, []

    def place_then_let_another_in(staged, target):
        placed = real(staged, target)
        if placed and not second:
            monkeypatch.setattr(store_module, "_place_if_free", real)
            other = threading.Thread(target=lambda: second.append(ingest_stream(store, io.BytesIO(data), "b")[0].status))
            other.start()
            other.join()
        return placed

    monkeypatch.setattr(store_module, "_place_if_free", place_then_let_another_in)
    [first] = ingest_stream(store, io.BytesIO(data), "a")
    assert (first.status, second) == ("stored", ["duplicate"])
    assert store.artifact(first.sop_uid, "original").path.read_bytes() == data
    assert len(store.query("SELECT * FROM artifacts WHERE variant='original'")) == 1
    assert not store.query("SELECT * FROM conflicts") and not list((store.root / "tmp").iterdir())


def test_a_free_place_is_not_filled_when_the_original_is_stored_elsewhere(store, tmp_path):
    """An original whose row names another path (moved on purpose): the same bytes again are a duplicate and
    leave nothing at the usual place."""
    path = write(make_dataset(rows=32, columns=32), tmp_path / "one.dcm")
    [result] = ingest(store, [path])
    usual = store.original_path(result.sop_uid)
    moved = usual.with_name("moved.dcm")
    os.link(usual, moved)
    usual.unlink()
    with store.connect() as db:
        db.execute("UPDATE artifacts SET path=? WHERE sop_uid=? AND variant='original'", (str(moved), result.sop_uid))
    assert [r.status for r in ingest(store, [path])] == ["duplicate"]
    assert not usual.exists() and moved.read_bytes() == path.read_bytes()


def test_the_index_journal_is_delete_for_workers_on_other_hosts(tmp_path, monkeypatch):
    """RADPRESS_INDEX_JOURNAL=DELETE (an index opened over NFS by Celery workers elsewhere): no WAL, and jobs still run."""
    from core.errors import InvalidOptionError
    from core.ingest import ingest
    from core.jobs import Jobs
    from core.store import Store
    from tests.synthetic import make_dataset, write

    monkeypatch.setenv("RADPRESS_INDEX_JOURNAL", "delete")
    store = Store(tmp_path / "data")
    assert store.query("PRAGMA journal_mode")[0][0] == "delete"
    [result] = ingest(store, [write(make_dataset(rows=16, columns=16), tmp_path / "a.dcm")])
    jobs = Jobs(store, workers=1)
    jobs.submit(result.study_uid)
    [job] = jobs.run_pending()  # its worker process opens the index in the same mode
    assert job["state"] == "done" and job["done"] == 1
    assert not (store.root / "index.sqlite-wal").exists() or (store.root / "index.sqlite-wal").stat().st_size == 0
    monkeypatch.setenv("RADPRESS_INDEX_JOURNAL", "memory")
    with pytest.raises(InvalidOptionError, match="RADPRESS_INDEX_JOURNAL='MEMORY'"):
        Store(tmp_path / "other")


def test_threads_of_one_process_take_turns_before_sqlite_is_asked(store):
    """A second thread's write transaction waits for the first on the process's lock, not in SQLite's busy handler
    (which polls with sleeps up to 100 ms): with SQLite's own wait set to zero it still gets its turn."""
    inside, done, order = threading.Event(), threading.Event(), []

    def first():
        with store.connect() as db:
            db.execute("INSERT INTO users (name, password_hash, role) VALUES ('first', 'x', 'admin')")
            inside.set()
            time.sleep(0.3)
            order.append("first")
        done.set()

    def second():
        store._connection().execute("PRAGMA busy_timeout=0")  # SQLite alone would answer 'database is locked'
        inside.wait(10)
        with store.connect() as db:
            order.append("second")
            db.execute("INSERT INTO users (name, password_hash, role) VALUES ('second', 'x', 'admin')")

    errors = []

    def guarded(work):
        def run():
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - the assertion below shows it
                errors.append(exc)
        return threading.Thread(target=run)

    threads = [guarded(first), guarded(second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == [] and order == ["first", "second"]
    assert {r["name"] for r in store.query("SELECT name FROM users")} >= {"first", "second"}
