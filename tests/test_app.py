from app import create_app
from core import CODECS
from core.users import Users


def test_health_and_home_page(tmp_path):
    app = create_app(tmp_path / "data", run_jobs=False, demo=False)
    client = app.server.test_client()
    health = client.get("/api/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "ok" and set(body["codecs"]) == {c.name for c in CODECS}
    assert (tmp_path / "data").is_dir()
    assert client.get("/").status_code == 302  # pages need a login
    page = client.get("/login")
    assert page.status_code == 200 and b"RadPress" in page.data


def test_demo_studies_are_loaded_on_first_start(tmp_path):
    create_app(tmp_path / "data", run_jobs=False, demo=True)
    app = create_app(tmp_path / "data", run_jobs=False, demo=True)  # second start adds nothing
    client = app.server.test_client()
    client.post("/login", data={"demo": "1"})
    studies = client.get("/api/studies").get_json()
    assert sorted(s["modalities"] for s in studies) == ["CR", "CT", "MR", "MR", "US"]
    jobs = app.server.extensions["radpress"]["jobs"].list()
    assert len(jobs) == 5 and all(j["state"] == "queued" for j in jobs)


def test_first_start_creates_an_administrator(tmp_path, capsys):
    app = create_app(tmp_path / "data", run_jobs=False, demo=False)
    password = (tmp_path / "data" / "initial-admin-password.txt").read_text().strip()
    assert password in capsys.readouterr().out
    users = Users(app.server.extensions["radpress"]["store"])
    assert users.authenticate("admin", password).role == "admin"
    create_app(tmp_path / "data", run_jobs=False, demo=False)
    assert [u.name for u in users.list()] == ["admin"]


def test_data_directory_is_for_the_service_user_only(tmp_path):
    import stat

    root = tmp_path / "data"
    create_app(root, run_jobs=False, demo=False)
    root.chmod(0o755)  # as an older RadPress or a careless copy left it
    (root / "index.sqlite").chmod(0o644)
    create_app(root, run_jobs=False, demo=False)
    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(root) == 0o700
    for name in ("index.sqlite", "secret.key", "initial-admin-password.txt"):
        assert mode(root / name) == 0o600, name
    for name in ("originals", "artifacts", "tmp", "cache"):
        assert mode(root / name) == 0o700, name


def _callback_client(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRESS_ADMIN_USER", "admin")
    monkeypatch.setenv("RADPRESS_ADMIN_PASSWORD", "correct-horse")
    app = create_app(tmp_path / "data", run_jobs=False, demo=True)
    client = app.server.test_client()
    assert client.post("/login", data={"username": "admin", "password": "correct-horse"}).status_code == 302
    return client


def test_a_malformed_callback_request_is_a_400(tmp_path, monkeypatch):
    """Outputs that do not match the callback, or a list where a UID goes: 400 with a message, never a 500."""
    client = _callback_client(tmp_path, monkeypatch)
    wrong_outputs = {"output": "whoami.children", "outputs": [], "changedPropIds": ["url.pathname"],
                     "inputs": [{"id": "url", "property": "pathname", "value": "/"}]}
    r = client.post("/_dash-update-component", json=wrong_outputs)
    assert r.status_code == 400 and "could not use its input" in r.get_json()["error"]
    right = client.post("/_dash-update-component", json={**wrong_outputs, "outputs": {"id": "whoami", "property": "children"}})
    assert right.status_code == 200 and "admin (admin)" in right.get_data(as_text=True)
    output = "..lab-curves.figure...lab-latency.children...lab-recommendation.children.."
    for value in (["1.2.3"], {"a": 1}, 7):
        r = client.post("/_dash-update-component", json={
            "output": output, "changedPropIds": ["lab-key.data"], "inputs": [{"id": "lab-key", "property": "data", "value": value}],
            "outputs": [{"id": i, "property": p} for i, p in (("lab-curves", "figure"), ("lab-latency", "children"),
                                                              ("lab-recommendation", "children"))]})
        assert r.status_code == 400 and "must be text" in r.get_json()["error"], (value, r.data[:200])


def test_background_callback_processes_die_with_the_app(tmp_path):
    """kill -9 of the app: the process Dash forked for a running background callback exits too (within seconds)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil

    pid_file = tmp_path / "job.pid"
    script = f"""
import os, sys, time
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from app import background_manager

def job(key, progress_key, args, context):
    Path({str(pid_file)!r}).write_text(str(os.getpid()))
    time.sleep(600)

background_manager(Path({str(tmp_path)!r})).call_job_fn("key", job, (), {{}})
time.sleep(600)
"""
    app = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and app.poll() is None, "the background callback never started"
            time.sleep(0.1)
        job = psutil.Process(int(pid_file.read_text()))
        assert job.ppid() == app.pid and job.is_running()
        os.kill(app.pid, signal.SIGKILL)
        app.wait()
        deadline = time.monotonic() + 10
        while job.is_running() and job.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the background callback process outlived the app"
            time.sleep(0.1)
    finally:
        app.kill()
        if pid_file.exists() and pid_file.read_text() and psutil.pid_exists(int(pid_file.read_text())):
            psutil.Process(int(pid_file.read_text())).kill()


def test_a_bad_setting_at_start_is_one_line_and_exit_2(tmp_path):
    """RADPRESS_ADMIN_PASSWORD shorter than 8 characters used to end the start with a traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "RADPRESS_DATA": str(tmp_path / "data"), "RADPRESS_DEMO": "0", "RADPRESS_ADMIN_USER": "boss",
           "RADPRESS_ADMIN_PASSWORD": "pw", "RADPRESS_DICOM_PORT": "0", "PORT": "0"}
    done = subprocess.run([sys.executable, "app.py"], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == ["RadPress: The password is too short. Use at least 8 characters."]
