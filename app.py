"""RadPress web app: factory and entry point (``python app.py`` or ``make run``)."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import dash
from dash import Input, Output
from flask import request

from components.shell import make_shell
from core.auth import current_user, init_auth, secret_key
from core.dimse import DicomNode, NodeConfig
from core.dims import DimsConfig
from core import engine
from core.errors import InvalidOptionError, RadPressError
from core.jobs import Jobs
from core.launcher import prepare as prepare_archive, serve, start_job_runner
from core.ohif import blueprint as ohif_viewer
from core.routes import init_archive
from core.serving import HEARTBEAT_ENV, Background, LauncherBackground, init_serving
from core.store import Store
from core.users import Users

__all__ = ["create_app", "main", "wsgi", "make_jobs"]


def create_app(data_dir: str | os.PathLike | None = None, *, run_jobs: bool = True, demo: bool | None = None,
               dicom_port: int | None = None, prepare: bool = True) -> dash.Dash:
    """Build the app on a data directory; *run_jobs* starts the background job thread, *dicom_port* the DICOM node
    (0: any free port; None: no node); *prepare* repairs the archive and loads the demo and the administrator
    (the production launcher does that once, before its web workers build the app with prepare=False)."""
    store = Store(Path(data_dir or os.environ.get("RADPRESS_DATA", "var")))
    os.environ["RADPRESS_DATA"] = str(store.root)  # background-callback workers open the same archive
    jobs = make_jobs(store)
    users = Users(store)
    demo = demo if demo is not None else os.environ.get("RADPRESS_DEMO", "1") == "1"
    if prepare:
        store.check()
        prepare_archive(store, jobs, users, demo)
    app = dash.Dash(__name__, use_pages=True, title="RadPress", suppress_callback_exceptions=True,
                    background_callback_manager=background_manager(store.root))
    init_auth(app.server, users, secret_key(store.root), demo, callbacks=lambda: app.callback_map)
    init_archive(app.server, store, jobs, dims_config())
    init_serving(app.server)  # compression, static assets' cache headers (core.serving)
    node = None
    if dicom_port is not None:
        node = app.server.extensions["radpress"]["dicom"] = DicomNode(store, jobs, NodeConfig.from_env(dicom_port))
        node.start()
    app.server.register_blueprint(ohif_viewer)  # /ohif/: the OHIF viewer on /dicom-web (core.ohif)
    _not_found_on_error(app.server, "/_dash-component-suites/<string:package_name>/<path:fingerprinted_path>")
    _bad_callback_input(app.server)
    app.layout = make_shell()

    @app.callback(Output("whoami", "children"), Input("url", "pathname"))
    def whoami(_path):
        user = current_user()
        return f"{user.name} ({user.role})" if user else ""

    runs_jobs = run_jobs and start_job_runner(jobs)
    heartbeat = os.environ.get(HEARTBEAT_ENV)  # a web worker of core.launcher: the launcher runs jobs and the node
    app.server.extensions["radpress"]["background"] = (
        LauncherBackground(heartbeat) if heartbeat and not runs_jobs and node is None
        else Background(jobs if runs_jobs else None, node))
    # Dash completes its set-up on the first request; two first requests at once raced in it (a 500 to an upload):
    # one request here, before any server thread runs
    app.server.test_client().get("/api/health")
    return app


def make_jobs(store: Store) -> Jobs:
    """The archive's job runner, built the same way in the web app and in the production launcher."""
    return Jobs(store, workers=int(os.environ.get("RADPRESS_WORKERS", "2")), pool=engine.pool_factory(),
                settle=float(os.environ.get("RADPRESS_STUDY_SETTLE_S", "2")))


def _wrap_view(server, rule: str, guarded) -> None:
    endpoint = next(r.endpoint for r in server.url_map.iter_rules() if r.rule == rule)
    server.view_functions[endpoint] = functools.wraps(server.view_functions[endpoint])(guarded(server.view_functions[endpoint]))


def _not_found_on_error(server, rule: str) -> None:
    """Dash answers a request for a file outside its packages (``..%2f``) with an exception: make it a 404."""
    from dash.exceptions import DependencyException
    from werkzeug.exceptions import NotFound

    def guarded(view):
        def serve(*args, **kwargs):
            try:
                return view(*args, **kwargs)
            except (DependencyException, KeyError, OSError) as exc:
                raise NotFound(f"No such file in the app's packages: {request.path}") from exc

        return serve

    _wrap_view(server, rule, guarded)


def _bad_callback_input(server) -> None:
    """A callback sent values of the wrong type (a hand-made request; the browser never does) gets a 400, not a 500.

    The body's shape and every identifier in it are checked before (core.auth); this covers values a
    callback cannot use, and an ``outputs`` spec that does not match the callback (Dash's CallbackException,
    also as InvalidCallbackReturnValue; PreventUpdate keeps its 204).  The traceback is logged in case it
    was a bug after all.
    """
    from dash.exceptions import CallbackException, PreventUpdate

    def guarded(view):
        def dispatch(*args, **kwargs):
            try:
                return view(*args, **kwargs)
            except PreventUpdate:
                raise
            except (TypeError, ValueError, KeyError, IndexError, AttributeError, CallbackException) as exc:
                server.logger.warning("callback %s refused its input", (request.get_json(silent=True) or {}).get("output"),
                                      exc_info=True)
                raise InvalidOptionError(f"The callback could not use its input ({type(exc).__name__}: {exc}).",
                                         hint="Reload the page.") from exc

        return dispatch

    _wrap_view(server, "/_dash-update-component", guarded)


def dims_config() -> DimsConfig:
    """Image-transform limits, overlays and conditional chains: RADPRESS_DIMS_CONFIG names a JSON file."""
    path = os.environ.get("RADPRESS_DIMS_CONFIG")
    if not path:
        return DimsConfig()
    with open(path, encoding="utf-8") as fh:
        return DimsConfig(**json.load(fh))


def background_manager(root: Path):
    """Celery with Redis when REDIS_URL is set, else a diskcache in the data directory."""
    if os.environ.get("REDIS_URL"):
        return dash.CeleryManager(engine.celery_app())  # the archive's jobs use the same app (core.engine)
    import diskcache

    return _AppBoundDiskcacheManager(diskcache.Cache(str(root / "cache" / "callbacks")))


class _AppBoundDiskcacheManager(dash.DiskcacheManager):
    """Dash forks one process per background callback; this one's processes exit when the app dies (kill -9 too).

    PR_SET_PDEATHSIG cannot be used here: it fires when the forking *thread* ends, and each
    request runs on its own short-lived thread; a watchdog on the parent's pid is used instead.
    """

    def call_job_fn(self, key, job_fn, args, context):
        return super().call_job_fn(key, functools.partial(_exit_with_app, os.getpid(), job_fn), args, context)


def _exit_with_app(app_pid: int, job_fn, *args):
    """In the forked process: run the callback while a daemon thread ends the process once *app_pid* is gone."""
    import threading
    import time

    def watch():
        while os.getppid() == app_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-app", daemon=True).start()
    return job_fn(*args)


def __getattr__(name: str):
    """``celery -A app:celery_app worker``: the worker builds the app so the background callbacks are registered."""
    if name == "celery_app":
        if not os.environ.get("REDIS_URL"):
            raise AttributeError("celery_app needs REDIS_URL")
        return create_app(run_jobs=False, demo=False, prepare=False)._background_manager.handle  # it serves tasks only
    raise AttributeError(name)


def wsgi():
    """A gunicorn web worker (``app:wsgi()``, started by core.launcher): it serves requests only."""
    return create_app(run_jobs=False, dicom_port=None, prepare=False).server


def main(argv: list[str] | None = None) -> None:
    """``app.py``: production (core.launcher: gunicorn); ``--https``: behind nginx with TLS and HTTP/2;
    ``--dev``: Werkzeug's development server in this one process, for debugging."""
    args = sys.argv[1:] if argv is None else argv
    if set(args) - {"--dev", "--https"} or {"--dev", "--https"} <= set(args):
        print("usage: app.py [--dev | --https]", file=sys.stderr)
        raise SystemExit(2)
    os.umask(0o077)  # every file the service writes later is private too
    try:
        if "--dev" not in args:
            raise SystemExit(serve(make_jobs, https="--https" in args))
        app = create_app(dicom_port=NodeConfig.from_env().port or None)  # RADPRESS_DICOM_PORT=0: no DICOM node
    except RadPressError as exc:  # a bad setting (e.g. RADPRESS_ADMIN_PASSWORD too short): one line, exit 2
        print(f"RadPress: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8050")), debug=False)


if __name__ == "__main__":
    main()
