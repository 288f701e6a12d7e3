"""Production serving: one launcher process, gunicorn's web workers, and nginx for HTTPS with HTTP/2.

``python app.py`` (``make run``) runs :func:`serve`:

1. the archive is prepared once, before any web worker exists (index migrations, crash repair, demo studies, the
   first administrator) — workers never race over SQLite for that;
2. the launcher runs what must exist once per host: the job runner (:func:`start_job_runner`, the one place that
   decides who runs the archive's jobs) and the DICOM node (it binds a port); a heartbeat thread writes their
   state to ``<data>/run/launcher.json``, which the workers' ``/api/health`` reads;
3. gunicorn (gthread: ``RADPRESS_WEB_WORKERS`` processes × ``RADPRESS_WEB_THREADS`` threads) serves the app built
   by ``app:wsgi()`` — requests only; access log on stdout;
4. with ``https=True`` (``make run-https``) nginx terminates TLS on ``HTTPS_PORT`` with HTTP/2 and proxies to
   gunicorn, which then listens on a Unix socket in the data directory only; a self-signed certificate is made
   into ``<data>/tls`` on first start (replace it with the clinic's own).

SIGTERM or SIGINT: gunicorn (and nginx) finish the requests in flight, then the node and the runner stop.
gunicorn and nginx die with the launcher (``PR_SET_PDEATHSIG``), even when it is killed.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .auth import secret_key
from .errors import InvalidOptionError
from .files import atomic_writer
from .jobs import Jobs
from .serving import HEARTBEAT_ENV, Background, LauncherBackground
from .store import Store
from .users import DEMO_USER, Users

__all__ = ["ServeConfig", "prepare", "start_job_runner", "serve", "check_port_free", "ensure_certificate", "nginx_config"]

GRACEFUL_S = 30
HEARTBEAT_EVERY_S = 2.0


@dataclass(frozen=True)
class ServeConfig:
    """Where and how the production server listens (HOST, PORT, HTTPS_PORT, RADPRESS_WEB_WORKERS / _THREADS)."""

    host: str = "127.0.0.1"
    port: int = 8050
    https_port: int = 8443
    workers: int = 2
    threads: int = 8

    @classmethod
    def from_env(cls) -> "ServeConfig":
        env = os.environ
        return cls(host=env.get("HOST", "127.0.0.1"), port=_number(env, "PORT", 8050, 0, 65535),
                   https_port=_number(env, "HTTPS_PORT", 8443, 0, 65535),
                   workers=_number(env, "RADPRESS_WEB_WORKERS", 2, 1, 64), threads=_number(env, "RADPRESS_WEB_THREADS", 8, 1, 256))


def _number(env, name: str, default: int, low: int, high: int) -> int:
    text = env.get(name, str(default)).strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise InvalidOptionError(f"{name} {text[:20]!r} is not a whole number from {low} to {high}.")
    return int(text)


def prepare(store: Store, jobs: Jobs, users: Users, demo: bool) -> None:
    """Once per start, before any request: the session key, the demo login and studies (their jobs queued), the
    administrator — made here, before web workers exist, so none of them races another over it."""
    secret_key(store.root)
    if demo:
        from .demo import load_demo

        users.ensure(DEMO_USER, secrets.token_urlsafe(16), "demo")
        for result in load_demo(store):
            if result.status == "stored":
                jobs.submit(result.study_uid)
    admin = os.environ.get("RADPRESS_ADMIN_USER")
    if admin:
        users.ensure(admin, os.environ.get("RADPRESS_ADMIN_PASSWORD", ""), "admin")
    elif not any(u.role == "admin" for u in users.list()):
        _first_admin(users, store.root)


def _first_admin(users: Users, root: Path) -> None:
    """No administrator yet and none configured: make one, and say where its password is."""
    password = secrets.token_urlsafe(12)
    users.add("admin", password, "admin")
    path = root / "initial-admin-password.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    print(f"RadPress: created the administrator 'admin' with password {password} (also in {path}).", flush=True)


def start_job_runner(jobs: Jobs) -> bool:
    """Who runs the archive's jobs: here, the local runner of this process (its worker processes do the work).

    True when this process now runs them.  Several runners over one archive are safe (jobs are claimed with
    leases); the launcher runs one per host so web workers never do.
    """
    jobs.start()
    return True


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_launcher() -> None:
    """In gunicorn's and nginx's master: SIGTERM (a graceful stop) when the launcher is gone, however it ended."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def gunicorn_command(config: ServeConfig, bind: str, proxied: bool = False) -> list[str]:
    """gunicorn on ``app:wsgi()``; the access log (stdout) names the client (behind nginx: its X-Forwarded-For) and
    how long each answer took.

    On TCP each worker listens on a socket of its own (SO_REUSEPORT) and the kernel deals new connections out
    among them; on one shared socket whichever worker woke first took them, and a few keep-alive clients (a
    modality's parallel senders) could all end up on one worker, one core.
    """
    client = "%({x-forwarded-for}i)s" if proxied else "%(h)s"
    log_format = client + ' %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
    spread = [] if bind.startswith("unix:") or bind.endswith(":0") else ["--reuse-port"]  # port 0: one port for all
    return [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", str(config.workers),
            "--threads", str(config.threads), "--bind", bind, *spread, "--access-logfile", "-",
            "--access-logformat", log_format, "--graceful-timeout", str(GRACEFUL_S), "--timeout", "120",
            "--no-control-socket", "--chdir", str(Path(__file__).resolve().parents[1]), "app:wsgi()"]


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another server listens on: the workers' SO_REUSEPORT sockets would otherwise share it with a
    server that set the flag too (another RadPress) instead of failing, and the kernel would split the clients."""
    if not port:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn: old connections do not count
            probe.bind(address)
    except OSError as exc:
        raise InvalidOptionError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
                                 hint="Another server uses that port: stop it, or set PORT (and HOST).") from None


def serve(make_jobs: Callable[[Store], Jobs], *, https: bool = False) -> int:
    """Prepare the archive, run the job runner (built by *make_jobs*, as the web app builds it) and the DICOM node
    here, serve the app with gunicorn (and nginx).

    Returns gunicorn's exit status (0 after SIGTERM/SIGINT); bad settings raise :class:`RadPressError`.
    """
    from .dimse import DicomNode, NodeConfig

    config = ServeConfig.from_env()
    node_config = NodeConfig.from_env()
    store = Store(Path(os.environ.get("RADPRESS_DATA", "var")))
    store.check()
    jobs = make_jobs(store)
    prepare(store, jobs, Users(store), os.environ.get("RADPRESS_DEMO", "1") == "1")
    run = store.root / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    heartbeat = LauncherBackground(run / "launcher.json")
    env = {**os.environ, "RADPRESS_DATA": str(store.root), HEARTBEAT_ENV: str(heartbeat.path)}
    # Started before this process has threads (fork + preexec_fn), in sessions of their own: Ctrl-C reaches the
    # launcher only, which asks each for a graceful stop.
    start = {"preexec_fn": _die_with_launcher, "start_new_session": True}
    children: list[subprocess.Popen] = []
    if https:
        socket_path = run / "web.sock"
        nginx = _nginx_command(store.root, config, socket_path)  # checked before anything starts
        env["RADPRESS_TRUST_PROXY"] = "1"  # only nginx can reach the socket: its X-Forwarded-* are the client's
        children.append(subprocess.Popen(gunicorn_command(config, f"unix:{socket_path}", proxied=True), env=env, **start))
        children.append(subprocess.Popen(nginx, **start))
        print(f"RadPress: https://{config.host}:{config.https_port}/ (HTTP/2; certificate in {store.root / 'tls'})", flush=True)
    else:
        check_port_free(config.host, config.port)
        children.append(subprocess.Popen(gunicorn_command(config, f"{config.host}:{config.port}"), env=env, **start))
        if config.port:  # gunicorn's own "Listening at" is empty when each worker binds its socket
            print(f"RadPress: http://{config.host}:{config.port}/", flush=True)
    web = children[0]

    def graceful(_signum, _frame):
        for child in children:  # gunicorn: SIGTERM; nginx: SIGQUIT finishes its requests
            if child.poll() is None:
                child.send_signal(signal.SIGTERM if child is web else signal.SIGQUIT)

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, graceful)
    stop, node = threading.Event(), None
    try:
        if node_config.port:
            node = DicomNode(store, jobs, node_config)
            node.start()
        background = Background(jobs if start_job_runner(jobs) else None, node)
        heartbeat.write(background)
        threading.Thread(target=_beat, args=(heartbeat, background, stop), name="radpress-heartbeat", daemon=True).start()
        code = web.wait()
    finally:
        graceful(None, None)
        for child in children:
            child.wait(timeout=GRACEFUL_S + 10)
        stop.set()
        if node is not None:
            node.stop()
        jobs.stop()
        heartbeat.path.unlink(missing_ok=True)
    return code


def _beat(heartbeat: LauncherBackground, background: Background, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_EVERY_S):
        try:
            heartbeat.write(background)
        except OSError:  # a full disk must not end the launcher; the workers' health then reports it stale
            pass


# -- HTTPS and HTTP/2: nginx in front of gunicorn ------------------------------
def ensure_certificate(root: Path) -> tuple[Path, Path]:
    """``<data>/tls/{cert,key}.pem``: kept when present (the clinic's own), else a self-signed one for localhost."""
    tls = Path(root) / "tls"
    cert, key = tls / "cert.pem", tls / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    tls.mkdir(mode=0o700, exist_ok=True)
    if not shutil.which("openssl"):
        raise InvalidOptionError("HTTPS needs a certificate and openssl is not installed to make one.",
                                 hint=f"Install openssl, or put cert.pem and key.pem into {tls}.")
    hosts = "DNS:localhost,IP:127.0.0.1,IP:::1"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "825",
                           "-keyout", str(key) + ".part", "-out", str(cert) + ".part", "-subj", "/CN=localhost",
                           "-addext", f"subjectAltName={hosts}"], capture_output=True, text=True)
    if made.returncode:
        raise InvalidOptionError(f"openssl could not make a certificate: {made.stderr.strip()[-300:]}",
                                 hint=f"Put cert.pem and key.pem into {tls}.")
    os.chmod(str(key) + ".part", 0o600)
    os.replace(str(key) + ".part", key)
    os.replace(str(cert) + ".part", cert)
    return cert, key


def nginx_config(root: Path, host: str, port: int, socket_path: Path, cert: Path, key: Path) -> str:
    """nginx in the foreground: TLS + HTTP/2 on *host*:*port*, everything proxied to gunicorn's socket, unbuffered
    (a study zip streams through), client bodies passed as they come (uploads are checked by the app)."""
    prefix = Path(root) / "nginx"
    user = f"user {_user_name()};" if os.geteuid() == 0 else ""  # as root its workers would drop to nobody (no access)
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"""# Made by core/launcher.py on each start; edit the template there.
{user}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 0;
    server_tokens off;
    upstream radpress {{ server unix:{socket_path}; keepalive 16; }}
    server {{
        listen {listen} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:radpress:1m;
        location / {{
            proxy_pass http://radpress;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def _user_name() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _nginx_command(root: Path, config: ServeConfig, socket_path: Path) -> list[str]:
    """nginx's command line, its configuration and certificate written first (it must be installed)."""
    binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.path.exists(p)), None)
    if binary is None:
        raise InvalidOptionError("HTTPS with HTTP/2 needs nginx, which is not installed.",
                                 hint="Run `make run-https` (it installs Debian's nginx), or apt-get install nginx.")
    cert, key = ensure_certificate(root)
    prefix = Path(root) / "nginx"
    prefix.mkdir(mode=0o700, exist_ok=True)
    conf = prefix / "nginx.conf"
    with atomic_writer(conf) as fh:
        fh.write(nginx_config(root, config.host, config.https_port, socket_path, cert, key).encode())
    return [binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr"]
