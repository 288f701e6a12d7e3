"""core.launcher's gunicorn settings: connections dealt out among the workers, a port in use refused."""

import os
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests

from core.errors import InvalidOptionError
from core.launcher import ServeConfig, check_port_free, gunicorn_command
from tests.conftest import ADMIN
from tests.test_serving import ROOT, free_port, launch, stop, wait_healthy


def test_each_worker_listens_on_tcp_not_on_a_unix_socket_or_any_port():
    config = ServeConfig(workers=2, threads=8)
    assert "--reuse-port" in gunicorn_command(config, "127.0.0.1:8050")
    assert "--reuse-port" not in gunicorn_command(config, "unix:/data/run/web.sock", proxied=True)
    assert "--reuse-port" not in gunicorn_command(config, "127.0.0.1:0")  # each worker would pick a port of its own


@pytest.mark.parametrize("reuse_port", [False, True])
def test_a_port_someone_listens_on_is_refused(reuse_port):
    with socket.socket() as other:
        if reuse_port:  # another RadPress: its workers set SO_REUSEPORT, ours would silently share the port
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(InvalidOptionError, match=f"127.0.0.1:{port}.*in use"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # closed: free again


def test_keep_alive_clients_are_spread_over_the_workers_and_a_second_server_is_refused(tmp_path):
    """16 keep-alive connections land on both workers (each listens on its own socket; all on one would be a 2/65536
    chance); a second server started on the same port exits 2 with a reason instead of sharing it."""
    port = free_port()
    process, log = launch(tmp_path, PORT=str(port), RADPRESS_DICOM_PORT="0", RADPRESS_WEB_WORKERS="2",
                          RADPRESS_WEB_THREADS="2")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, f"{base}/api/health", log)
        (master,) = [p for p in psutil.Process(process.pid).children() if "gunicorn" in " ".join(p.cmdline())]
        workers = {p.pid for p in master.children()}
        assert len(workers) == 2
        sessions = [requests.Session() for _ in range(16)]
        for http in sessions:
            assert http.get(f"{base}/api/health", timeout=30).status_code == 200
        deadline = time.monotonic() + 10
        while True:
            owners = {c.pid for c in psutil.net_connections("tcp")
                      if c.laddr and c.laddr.port == port and c.status == "ESTABLISHED" and c.pid in workers}
            listeners = {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
                         and c.status == "LISTEN"}
            if owners == workers or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert listeners == workers and owners == workers
        assert f"RadPress: http://127.0.0.1:{port}/" in log.read_text()  # where it listens, said once
        second = subprocess.run([sys.executable, "app.py"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                                env={**_env(tmp_path / "second"), "PORT": str(port)})
        assert second.returncode == 2 and f"127.0.0.1:{port}" in second.stderr and "in use" in second.stderr
        for http in sessions:
            assert http.get(f"{base}/api/health", timeout=30).status_code == 200  # the first one still serves them all
            http.close()
    finally:
        stop(process)


def _env(data):
    return {**os.environ, "RADPRESS_DATA": str(data), "RADPRESS_DEMO": "0", "HOST": "127.0.0.1",
            "RADPRESS_DICOM_PORT": "0", "RADPRESS_ADMIN_USER": ADMIN[0], "RADPRESS_ADMIN_PASSWORD": ADMIN[1]}
