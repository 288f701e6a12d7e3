-- The index schema of RadPress before schema versions (git 45260ce^:core/store.py, SCHEMA); PRAGMA user_version 0.
CREATE TABLE IF NOT EXISTS patients (
    patient_key TEXT PRIMARY KEY, patient_id TEXT, name TEXT, birth_date TEXT);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY, patient_key TEXT REFERENCES patients, date TEXT, description TEXT,
    accession TEXT, strategy INTEGER, created REAL, demo INTEGER DEFAULT 0, ratio REAL);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY, study_uid TEXT REFERENCES studies, modality TEXT, number INTEGER,
    description TEXT, body_part TEXT);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY, series_uid TEXT REFERENCES series, sop_class TEXT, number INTEGER,
    rows INTEGER, columns INTEGER, frames INTEGER, samples INTEGER, bits_allocated INTEGER, bits_stored INTEGER,
    photometric TEXT, transfer_syntax TEXT, uncompressed_bytes INTEGER, lossy INTEGER, created REAL);
CREATE TABLE IF NOT EXISTS artifacts (
    sop_uid TEXT REFERENCES instances, variant TEXT, ratio REAL NOT NULL DEFAULT 0, codec TEXT,
    transfer_syntax TEXT, bytes INTEGER, checksum TEXT, path TEXT, created REAL,
    achieved_ratio REAL, PRIMARY KEY (sop_uid, variant, ratio));
CREATE TABLE IF NOT EXISTS conflicts (
    sop_uid TEXT, checksum TEXT, path TEXT, source TEXT, created REAL, PRIMARY KEY (sop_uid, checksum));
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, study_uid TEXT, state TEXT, total INTEGER DEFAULT 0,
    done INTEGER DEFAULT 0, failed INTEGER DEFAULT 0, bytes INTEGER DEFAULT 0, params TEXT, message TEXT,
    created REAL, started REAL, finished REAL, cancel INTEGER DEFAULT 0, peak_rss_mb REAL DEFAULT 0);
CREATE TABLE IF NOT EXISTS job_items (
    job_id INTEGER REFERENCES jobs, sop_uid TEXT, state TEXT, error TEXT, PRIMARY KEY (job_id, sop_uid));
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL, user TEXT, what TEXT, old TEXT, new TEXT);
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password_hash TEXT, role TEXT, created REAL);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
