"""OHIF, the diagnostic viewer, served by RadPress under ``/ohif/`` on its own ``/dicom-web``.

``make run`` / ``make test`` call :func:`install`: ``npm pack`` fetches the prebuilt ``@ohif/app``
(pinned :data:`OHIF_VERSION`) and :func:`prepare` copies its ``dist/`` into ``.ohif/dist`` (git-ignored)
with every absolute path moved under :data:`PREFIX` — OHIF's build assumes it owns ``/``, and the root
belongs to the Dash app.  The service worker is left out (it would keep serving cached images and
configuration after a study's access or the archive changed), and so is the PWA manifest.  ``app-config.js`` is not the package's:
:func:`app_config` writes RadPress's, whose only data source is this origin's ``/dicom-web`` (same
session cookie, so the same login and :func:`core.users.authorize`), with the lossy overlay
("LOSSY N:1 — not for primary diagnosis" on every image whose Lossy Image Compression is "01").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from flask import Blueprint, Response, abort, redirect, send_from_directory

from .auth import require

__all__ = ["OHIF_VERSION", "PREFIX", "blueprint", "dist_dir", "install", "prepare", "app_config", "viewer_url"]

OHIF_VERSION = "3.13.2"
PREFIX = "/ohif/"
DICOMWEB = "/dicom-web"
STAMP = ".radpress-prepared"
REVISION = 2  # of prepare(): a new one makes `make run` prepare the viewer again
LOSSY_TEXT = "not for primary diagnosis"
# Frames as HTJ2K lossless first (progressive display, from the stored lossless copy where one exists),
# else the stored pixels decoded.  DICOMweb chooses per instance: a YBR_* image, which OHIF 3.13.2 shows
# wrongly as HTJ2K (three stacked planes), gets the decoded pixels (core.dicomweb._frame_syntax).
FRAMES_ACCEPT = ("multipart/related; type=image/jphc; transfer-syntax=1.2.840.10008.1.2.4.201, "
                 "multipart/related; type=application/octet-stream; transfer-syntax=*")

blueprint = Blueprint("ohif", __name__)


def dist_dir() -> Path:
    """Where the prepared viewer lives: RADPRESS_OHIF_DIR, else ``.ohif/dist`` beside the app."""
    return Path(os.environ.get("RADPRESS_OHIF_DIR") or Path(__file__).resolve().parents[1] / ".ohif" / "dist")


def viewer_url(study_uid: str) -> str:
    """The OHIF viewer opened on one study (its basic viewer mode)."""
    return f"{PREFIX}viewer?StudyInstanceUIDs={study_uid}"


# -- install ------------------------------------------------------------------
def install(dest: Path | None = None, version: str = OHIF_VERSION) -> Path:
    """Fetch ``@ohif/app@version`` with npm and prepare its dist into *dest* (nothing to do when it is there)."""
    dest = Path(dest or dist_dir())
    if _stamp(dest) == _stamp_text(version):
        return dest
    npm = shutil.which("npm")
    if not npm:
        raise SystemExit("npm is needed to install OHIF (Debian package npm)")
    with tempfile.TemporaryDirectory(prefix="ohif-") as tmp:
        subprocess.run([npm, "pack", f"@ohif/app@{version}", "--pack-destination", tmp, "--silent"],
                       check=True, cwd=tmp, stdout=subprocess.DEVNULL)
        tgz = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tgz) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/dist/")]
            tar.extractall(tmp, members=members, filter="data")
        prepare(Path(tmp) / "package" / "dist", dest, version=version)
    return dest


def _stamp_text(version: str) -> str:
    return json.dumps({"version": version, "prefix": PREFIX, "revision": REVISION})


def _stamp(dest: Path) -> str | None:
    try:
        return (dest / STAMP).read_text()
    except OSError:
        return None


def prepare(source: Path, dest: Path, *, version: str = OHIF_VERSION, prefix: str = PREFIX) -> None:
    """Copy OHIF's built *source* to *dest* with its absolute paths under *prefix*; *dest* is replaced whole.

    Built into a sibling folder and renamed, so a viewer half-copied by a crash is never served.
    """
    if not (Path(source) / "index.html").is_file():
        raise ValueError(f"{source} is not OHIF's dist folder (no index.html)")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ohif-", dir=dest.parent))
    shutil.copytree(source, work, dirs_exist_ok=True)
    for path in work.rglob("*"):
        rewrite = (_REWRITES.get(path.name) or _REWRITES.get(path.suffix)) if path.is_file() else None
        if rewrite:
            text = path.read_text(encoding="utf-8")
            new = rewrite(text, prefix)
            if new != text:
                path.write_text(new, encoding="utf-8")
    (work / "app-config.js").unlink(missing_ok=True)  # RadPress serves its own (app_config)
    (work / STAMP).write_text(_stamp_text(version))
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    work.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _html(text: str, prefix: str) -> str:
    text = re.sub(r'<script[^>]*init-service-worker\.js[^>]*>\s*</script>', "", text)
    text = re.sub(r'<link rel="manifest"[^>]*>', "", text)  # a PWA manifest is fetched without the login cookie
    text = re.sub(r'((?:href|src|content)=")/(?!/)', rf"\g<1>{prefix}", text)
    return text.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{prefix}"')


def _js(text: str, prefix: str) -> str:
    """The bundler's public path (chunks, workers, WebAssembly) is "/" in the build."""
    return re.sub(r'(__webpack_require__\.p\s*=\s*)"/"', rf'\g<1>"{prefix}"', text)


def _css(text: str, prefix: str) -> str:
    return re.sub(r"url\((['\"]?)/(?!/)", rf"url(\g<1>{prefix}", text)


def _manifest(text: str, prefix: str) -> str:
    return re.sub(r'("(?:src|start_url|scope)"\s*:\s*")/(?!/)', rf"\g<1>{prefix}", text)


_REWRITES = {".html": _html, ".js": _js, ".css": _css, "manifest.json": _manifest}


# -- configuration --------------------------------------------------------------
def app_config(prefix: str = PREFIX) -> str:
    """OHIF's ``window.config``: RadPress's DICOMweb on this origin, and the lossy overlay.

    Frames are asked for as HTJ2K lossless, else the stored pixels decoded (:data:`FRAMES_ACCEPT`);
    the lossy overlay reads the instance's own Lossy Image Compression.
    """
    config = {
        "routerBasename": prefix.rstrip("/") or "/",
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 10},
        "defaultDataSourceName": "radpress",
    }
    source = {
        "friendlyName": "RadPress",
        "name": "radpress",
        "qidoSupportsIncludeField": True,
        "imageRendering": "wadors",
        "thumbnailRendering": "thumbnail",  # RadPress's own rendering (OHIF's ignores MONOCHROME1)
        "thumbnailRequestStrategy": "fetch",
        "enableStudyLazyLoad": True,
        "supportsFuzzyMatching": False,
        "supportsWildcard": True,
        "staticWado": False,
        "singlepart": "bulkdata,video",
        "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        "omitQuotationForMultipartRequest": True,
        "acceptHeader": [FRAMES_ACCEPT],
    }
    return f"""// RadPress: generated by core/ohif.py (app_config); OHIF {OHIF_VERSION}.
(function () {{
  var root = window.location.origin + {json.dumps(DICOMWEB)};
  var source = {json.dumps(source, indent=2)};
  source.qidoRoot = root;
  source.wadoRoot = root;
  source.wadoUriRoot = root;
  function first(value) {{
    return Array.isArray(value) ? value[0] : value;
  }}
  // "LOSSY N:1 - not for primary diagnosis" whenever Lossy Image Compression (0028,2110) is "01".
  function lossyText(instance) {{
    if (!instance || first(instance.LossyImageCompression) !== "01") {{
      return null;
    }}
    var ratio = Number(first(instance.LossyImageCompressionRatio));
    var n = ratio > 0 ? (Math.round(ratio * 10) / 10) + ":1" : "(ratio unknown)";
    return "LOSSY " + n + " \\u2014 {LOSSY_TEXT}";
  }}
  var config = {json.dumps(config, indent=2)};
  config.dataSources = [{{
    namespace: "@ohif/extension-default.dataSourcesModule.dicomweb",
    sourceName: "radpress",
    configuration: source
  }}];
  config.customizationService = [{{
    "ohif.tours": {{$set: []}},  // no onboarding pop-up over the first image
    "viewportOverlay.topRight": {{
      $push: [{{
        id: "RadPressLossy",
        inheritsFrom: "ohif.overlayItem",
        label: "",
        title: "Lossy Image Compression (0028,2110) is 01",
        color: "#ff4d4d",
        condition: function (props) {{
          return lossyText(props.instance || props.referenceInstance) !== null;
        }},
        contentF: function (props) {{
          return lossyText(props.instance || props.referenceInstance);
        }}
      }}]
    }}
  }}];
  window.radpressLossyText = lossyText;
  window.config = config;
}})();
"""


# -- routes -------------------------------------------------------------------
_HASHED = re.compile(r"\.[0-9a-f]{16}\.(?:js|wasm)$|^[0-9a-f]{16}\.(?:wasm|woff2)$")


def _isolated(response: Response) -> Response:
    """Cross-origin isolation: OHIF's volume viewports need SharedArrayBuffer; every resource is same-origin."""
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Embedder-Policy"] = "require-corp"
    return response


def _index() -> Response:
    folder = dist_dir()
    if not (folder / STAMP).is_file():
        return Response("OHIF is not installed here: run `make run` (it installs @ohif/app with npm).",
                        status=503, mimetype="text/plain")
    response = send_from_directory(folder, "index.html", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return _isolated(response)


@blueprint.get(PREFIX.rstrip("/"))
@require("view")
def ohif_root():
    return redirect(PREFIX)


@blueprint.get(PREFIX)
@require("view")
def ohif_index():
    return _index()


@blueprint.get(PREFIX + "app-config.js")
@require("view")
def ohif_config():
    response = Response(app_config(), mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.get(PREFIX + "<path:path>")
@require("view")
def ohif_file(path: str):
    """A file of the viewer, else (a route of OHIF's own, like /ohif/viewer) its index page."""
    folder = dist_dir()
    try:
        found = (folder / path).is_file() and path != STAMP
    except OSError:  # a name too long for the file system (ENAMETOOLONG) was a 500: it is no file of the viewer
        found = False
    if found:
        response = send_from_directory(folder, path, max_age=365 * 86400 if _HASHED.search(path) else 0)
        return _isolated(response)
    if "." in path.rsplit("/", 1)[-1]:
        abort(404, f"No such file in the OHIF viewer: {path}")
    return _index()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.ohif", description="Install the OHIF viewer for RadPress.")
    parser.add_argument("command", choices=["install"])
    parser.add_argument("--dest", type=Path, default=None, help="default: .ohif/dist (or RADPRESS_OHIF_DIR)")
    args = parser.parse_args(argv)
    dest = install(args.dest)
    print(f"OHIF {OHIF_VERSION} ready in {dest} (served at {PREFIX})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
