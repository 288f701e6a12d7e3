"""RadPress web app: factory and entry point (``python app.py`` or ``make run``)."""

from __future__ import annotations

import os
from pathlib import Path

import dash
from flask import jsonify

from components.shell import make_shell
from core import CODECS

__all__ = ["create_app", "main"]


def create_app(data_dir: str | os.PathLike | None = None) -> dash.Dash:
    data = Path(data_dir or os.environ.get("RADPRESS_DATA", "var")).resolve()
    data.mkdir(parents=True, exist_ok=True)
    app = dash.Dash(__name__, use_pages=True, title="RadPress", suppress_callback_exceptions=True)
    app.server.config["RADPRESS_DATA"] = str(data)
    app.layout = make_shell()

    @app.server.get("/api/health")
    def health():
        return jsonify(status="ok", data_dir=str(data), codecs=sorted({c.name for c in CODECS if c.is_available}))

    return app


def main() -> None:
    app = create_app()
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8050")), debug=False)


if __name__ == "__main__":
    main()
