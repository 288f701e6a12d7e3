"""An archive made before schema versions opens with its data intact and the current columns (PRAGMA user_version)."""

import shutil
import sqlite3
from pathlib import Path

import pytest

from core import store as store_module
from core.jobs import Jobs
from core.samples import sample
from core.store import Store, sha256_file

OLD_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "index_schema_v0.sql"
SOP, SERIES, STUDY = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"


def old_archive(root: Path) -> Path:
    """An index as RadPress wrote it before migrations existed: one study, its original, a user, an interrupted job."""
    original = root / "originals" / SOP[-2:] / f"{SOP}.dcm"  # the old layout: named after the UID
    original.parent.mkdir(parents=True)
    shutil.copyfile(sample("emri_small"), original)
    db = sqlite3.connect(root / "index.sqlite")
    db.executescript(OLD_SCHEMA.read_text())
    db.execute("INSERT INTO patients VALUES ('P1|DOE^JANE', 'P1', 'DOE^JANE', '19700101')")
    db.execute("INSERT INTO studies VALUES (?, 'P1|DOE^JANE', '20200101', 'MR head', 'A1', NULL, 1.0, 0, 9.5)", (STUDY,))
    db.execute("INSERT INTO series VALUES (?, ?, 'MR', 1, 'T1', 'HEAD')", (SERIES, STUDY))
    db.execute("INSERT INTO instances VALUES (?, ?, '1.2.840.10008.5.1.4.1.1.4', 1, 64, 64, 10, 1, 16, 16, 'MONOCHROME2', "
               "'1.2.840.10008.1.2.1', 81920, 0, 1.0)", (SOP, SERIES))
    db.execute("INSERT INTO artifacts VALUES (?, 'original', 0, '', '1.2.840.10008.1.2.1', ?, ?, ?, 1.0, NULL)",
               (SOP, original.stat().st_size, sha256_file(original), str(original)))
    db.execute("INSERT INTO users VALUES ('radiologist', 'hash', 'radiologist', 1.0)")
    db.execute("INSERT INTO jobs (kind, study_uid, state, params, created, started) VALUES ('materialize', ?, 'running', '{}', 1, 1)",
               (STUDY,))
    db.commit()
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()
    return original


def columns(db_path: Path) -> dict[str, list[str]]:
    db = sqlite3.connect(db_path)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    found = {t: sorted(r[1] for r in db.execute(f"PRAGMA table_info({t})")) for t in tables}
    db.close()
    return found


def test_an_archive_from_before_schema_versions_opens_with_its_data(tmp_path):
    original = old_archive(tmp_path / "old")
    before = original.read_bytes()
    store = Store(tmp_path / "old")
    fresh = Store(tmp_path / "fresh")
    assert store.query("PRAGMA user_version")[0][0] == len(store_module.MIGRATIONS) > 0
    assert columns(store.db_path) == columns(fresh.db_path)  # every migration ran: same tables and columns as a new index
    assert store.study(STUDY)["description"] == "MR head" and store.study(STUDY)["ratio"] == 9.5
    assert store.instance(SOP)["modality"] == "MR" and store.instance(SOP)["frames"] == 10
    assert store.artifact(SOP, "original").path.read_bytes() == before
    assert store.query("SELECT role FROM users WHERE name='radiologist'")[0]["role"] == "radiologist"
    # the interrupted job has no runner recorded: it goes back to the queue and completes
    jobs = Jobs(store, workers=1)
    assert jobs.resume() == 1
    [job] = jobs.run_pending()
    assert job["state"] == "done" and job["done"] == 1 and store.artifact(SOP, "lossless") is not None
    assert original.read_bytes() == before  # the original is never touched
    again = Store(tmp_path / "old")  # opening it again runs nothing twice
    assert again.query("PRAGMA user_version")[0][0] == len(store_module.MIGRATIONS)


def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch):
    """The migrations run in one transaction: one that fails leaves the index as it was, at its old version."""
    old_archive(tmp_path / "old")
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS + ("ALTER TABLE no_such_table ADD COLUMN x TEXT",))
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        Store(tmp_path / "old")
    db = sqlite3.connect(tmp_path / "old" / "index.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    assert "owner" not in [r[1] for r in db.execute("PRAGMA table_info(jobs)")]
    assert db.execute("SELECT count(*) FROM instances").fetchone()[0] == 1
    db.close()
