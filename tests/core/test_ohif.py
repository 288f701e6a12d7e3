"""OHIF served by RadPress: the prepared install, its configuration (run by Node), the routes, and the viewer in Chromium."""

import io
import json
import re
import subprocess
import time

import flask
import numpy as np
import pydicom
import pytest
import requests
from selenium.webdriver.common.by import By

from core.ohif import OHIF_VERSION, PREFIX, REVISION, STAMP, app_config, dist_dir, prepare, viewer_url
from tests.checkers import require
from tests.conftest import ADMIN
from tests.test_browser import ARTIFACTS, browser, login, wait  # noqa: F401 (browser is a fixture)


def _fake_dist(root):
    root.mkdir(parents=True)
    (root / "index.html").write_text(
        '<html><head><script>window.PUBLIC_URL="/"</script><link rel="manifest" href="/manifest.json">'
        '<meta name="x" content="/assets/a.png"><script rel="preload" as="script" src="/app-config.js"></script>'
        '<script rel="preload" as="script" type="module" src="/init-service-worker.js"></script>'
        '<a href="//cdn.example/x">cdn</a><a href="https://ohif.org/">ohif</a>'
        '<script defer src="/app.bundle.0123456789abcdef.js"></script></head></html>')
    (root / "app.bundle.0123456789abcdef.js").write_text('(() => {\n__webpack_require__.p = "/";\n})(); fetch("/x")')
    (root / "app.bundle.css").write_text("a{src:url(/font.woff2)} b{src:url('/f.woff2')} c{src:url(data:x)}")
    (root / "manifest.json").write_text('{"start_url": "/", "icons": [{"src": "/assets/i.png"}]}')
    (root / "other.json").write_text('{"src": "/keep"}')
    (root / "app-config.js").write_text("window.config = {dataSources: ['someone else']}")
    return root


def test_prepare_puts_every_absolute_path_under_the_prefix(tmp_path):
    dest = tmp_path / "ohif" / "dist"
    prepare(_fake_dist(tmp_path / "src"), dest)
    index = (dest / "index.html").read_text()
    assert re.findall(r'(?:src|href|content)="(/[^"]*)"', index) == [
        "/ohif/assets/a.png", "/ohif/app-config.js", "//cdn.example/x",
        "/ohif/app.bundle.0123456789abcdef.js"]
    assert 'window.PUBLIC_URL="/ohif/"' in index and "init-service-worker" not in index and "manifest" not in index
    assert '__webpack_require__.p = "/ohif/"' in (dest / "app.bundle.0123456789abcdef.js").read_text()
    assert (dest / "app.bundle.css").read_text() == "a{src:url(/ohif/font.woff2)} b{src:url('/ohif/f.woff2')} c{src:url(data:x)}"
    assert json.loads((dest / "manifest.json").read_text()) == {"start_url": "/ohif/", "icons": [{"src": "/ohif/assets/i.png"}]}
    assert (dest / "other.json").read_text() == '{"src": "/keep"}'
    assert not (dest / "app-config.js").exists()  # RadPress serves its own
    assert json.loads((dest / STAMP).read_text()) == {"version": OHIF_VERSION, "prefix": PREFIX, "revision": REVISION}


def test_prepare_replaces_the_viewer_whole_and_refuses_a_folder_that_is_not_ohif(tmp_path):
    dest = tmp_path / "dist"
    dest.mkdir()
    (dest / "stale.js").write_text("old")
    prepare(_fake_dist(tmp_path / "src"), dest)
    assert not (dest / "stale.js").exists() and (dest / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist", "src"]  # no work folder left behind
    with pytest.raises(ValueError, match="no index.html"):
        prepare(tmp_path / "nothing", tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_the_installed_viewer_is_the_pinned_one_under_the_prefix():
    """`make test` installed @ohif/app; nothing in its page still points at the site root (the Dash app's)."""
    folder = dist_dir()
    assert (folder / STAMP).is_file(), "OHIF is missing: `make test` installs it (make ohif)"
    assert json.loads((folder / STAMP).read_text())["version"] == OHIF_VERSION == "3.13.2"
    index = (folder / "index.html").read_text()
    paths = re.findall(r'(?:src|href)="([^"]*)"', index)
    assert paths and all(p.startswith(PREFIX) for p in paths), [p for p in paths if not p.startswith(PREFIX)]
    bundle = next(folder.glob("app.bundle.*.js")).read_text()
    assert '__webpack_require__.p = "/ohif/"' in bundle and '__webpack_require__.p = "/"' not in bundle


def _node(script: str) -> dict:
    proc = subprocess.run([require("node"), "-e", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_app_config_points_at_this_origin_and_marks_lossy_images():
    """Node runs the generated app-config.js as the browser would, then the overlay on sample instances."""
    result = _node("""
const window = {location: {origin: "https://pacs.clinic:8443"}};
%s
const item = window.config.customizationService[0]["viewportOverlay.topRight"].$push[0];
const show = (instance) => item.condition({instance}) ? item.contentF({instance}) : null;
console.log(JSON.stringify({
  config: window.config,
  item: {id: item.id, inheritsFrom: item.inheritsFrom},
  lossy: show({LossyImageCompression: "01", LossyImageCompressionRatio: 8.234}),
  lossyList: show({LossyImageCompression: ["01"], LossyImageCompressionRatio: ["12", "2"]}),
  noRatio: show({LossyImageCompression: "01"}),
  lossless: show({LossyImageCompression: "00", LossyImageCompressionRatio: 8}),
  unmarked: show({}),
  reference: item.condition({referenceInstance: {LossyImageCompression: "01", LossyImageCompressionRatio: 5}}),
}));""" % app_config())
    config = result["config"]
    assert config["routerBasename"] == "/ohif" and config["defaultDataSourceName"] == "radpress"
    [source] = config["dataSources"]
    assert source["sourceName"] == "radpress"
    roots = {source["configuration"][k] for k in ("qidoRoot", "wadoRoot", "wadoUriRoot")}
    assert roots == {"https://pacs.clinic:8443/dicom-web"}
    assert source["configuration"]["acceptHeader"] == [
        "multipart/related; type=image/jphc; transfer-syntax=1.2.840.10008.1.2.4.201, "
        "multipart/related; type=application/octet-stream; transfer-syntax=*"]  # HTJ2K lossless first, else decoded
    assert result["item"] == {"id": "RadPressLossy", "inheritsFrom": "ohif.overlayItem"}
    assert result["lossy"] == "LOSSY 8.2:1 \u2014 not for primary diagnosis"
    assert result["lossyList"] == "LOSSY 12:1 \u2014 not for primary diagnosis"
    assert result["noRatio"] == "LOSSY (ratio unknown) \u2014 not for primary diagnosis"
    assert result["lossless"] is None and result["unmarked"] is None and result["reference"] is True


def test_viewer_url():
    assert viewer_url("1.2.840.1") == "/ohif/viewer?StudyInstanceUIDs=1.2.840.1"


def test_routes_serve_the_viewer_behind_the_login(live_app):
    base, _app = live_app(demo=False)
    anonymous = requests.get(f"{base}/ohif/viewer?StudyInstanceUIDs=1.2.3", allow_redirects=False, timeout=30)
    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/login?next=/ohif/viewer")
    with requests.Session() as s:
        s.auth = ADMIN
        page = s.get(f"{base}/ohif/viewer?StudyInstanceUIDs=1.2.3", timeout=30)
        assert page.status_code == 200 and 'window.PUBLIC_URL="/ohif/"' in page.text
        assert page.headers["Cross-Origin-Embedder-Policy"] == "require-corp" and "no-cache" in page.headers["Cache-Control"]
        assert s.get(f"{base}/ohif", allow_redirects=False, timeout=30).headers["Location"].endswith("/ohif/")
        config = s.get(f"{base}/ohif/app-config.js", timeout=30)
        assert config.status_code == 200 and config.headers["Content-Type"].startswith("text/javascript")
        assert '"/dicom-web"' in config.text
        bundle = re.search(r'src="/ohif/(app\.bundle\.[0-9a-f]+\.js)"', page.text).group(1)
        js = s.get(f"{base}/ohif/{bundle}", timeout=30)
        assert js.status_code == 200 and "max-age=31536000" in js.headers["Cache-Control"]
        wasm = next(dist_dir().glob("*.wasm")).name
        assert s.get(f"{base}/ohif/{wasm}", timeout=30).headers["Content-Type"] == "application/wasm"
        for path in ("missing.js", STAMP, "..%2fsecret.key", "%2e%2e/%2e%2e/app.py"):
            answer = s.get(f"{base}/ohif/{path}", timeout=30)
            assert answer.status_code == 404, path
        long_name = "x" * 300  # ENAMETOOLONG from the file system was a 500
        assert s.get(f"{base}/ohif/{long_name}.js", timeout=30).status_code == 404
        assert s.get(f"{base}/ohif/{long_name}", timeout=30).status_code == 200  # a route of OHIF's own: its page


def test_viewer_not_installed_answers_503(live_app, tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRESS_OHIF_DIR", str(tmp_path / "none"))
    base, _app = live_app(demo=False)
    answer = requests.get(f"{base}/ohif/viewer", auth=ADMIN, timeout=30)
    assert answer.status_code == 503 and "make run" in answer.text


def _viewport_pixels(driver) -> np.ndarray:
    from PIL import Image

    canvas = driver.find_element(By.CSS_SELECTOR, "[data-viewportid] canvas.cornerstone-canvas")
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB"), dtype=np.float64)


def _open_in_ohif(driver, base, study_uid) -> tuple[np.ndarray, str]:
    """Open a study in OHIF; wait until its viewport shows an image; the viewport's pixels and top-right overlay."""
    driver.get(base + viewer_url(study_uid))
    wait(driver, 90).until(lambda d: d.find_elements(By.CSS_SELECTOR, "[data-viewportid] canvas.cornerstone-canvas"))
    wait(driver, 90).until(lambda d: _viewport_pixels(d).std() > 10)
    time.sleep(1.5)  # overlays render with the image's metadata
    pixels = _viewport_pixels(driver)
    return pixels, driver.find_element(By.CSS_SELECTOR, '[data-cy="viewport-overlay-top-right"]').text


def _likeness(shown: np.ndarray, path) -> float:
    """Correlation of the image OHIF shows (fitted, centred in the viewport) with the file's decoded first frame.

    Grey images are compared after the file's own window (MONOCHROME1 inverted), colour ones as RGB
    (YBR_FULL converted): a wrong photometric, plane order or frame gives a low or negative value.
    """
    from PIL import Image
    from pydicom.pixels import convert_color_space

    from core.pixels import decode_frame, read_dataset

    ds = read_dataset(path)
    truth = decode_frame(ds, 0).astype(np.float64)
    if ds.PhotometricInterpretation.startswith("YBR"):
        truth = convert_color_space(truth.astype(np.uint8), ds.PhotometricInterpretation, "RGB").astype(np.float64)
    if truth.ndim == 2:
        voi = ds
        if "WindowCenter" not in ds and "SharedFunctionalGroupsSequence" in ds:  # Enhanced: Frame VOI LUT
            voi = next(iter(ds.SharedFunctionalGroupsSequence[0].get("FrameVOILUTSequence", [])), ds)
        if "WindowCenter" in voi:
            center, width = float(np.ravel(voi.WindowCenter)[0]), float(np.ravel(voi.WindowWidth)[0])
            truth = np.clip(truth, center - width / 2, center + width / 2)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            truth = -truth
        shown = shown.mean(axis=2)
    rows, columns = truth.shape[:2]
    height, width = shown.shape[:2]
    scale = min(width / columns, height / rows)
    x0, y0 = (width - columns * scale) / 2, (height - rows * scale) / 2
    crop = shown[int(round(y0)):int(round(y0 + rows * scale)), int(round(x0)):int(round(x0 + columns * scale))]
    mode = "RGB" if crop.ndim == 3 else "F"
    image = Image.fromarray(crop.astype(np.uint8) if mode == "RGB" else crop.astype(np.float32), mode)
    seen = np.asarray(image.resize((columns, rows), Image.BILINEAR), dtype=np.float64)
    return float(np.corrcoef(seen.ravel(), truth.ravel())[0, 1])


def test_ohif_shows_what_the_files_hold_and_marks_the_lossy_one(live_app, browser, tmp_path):
    """OHIF in Chromium, on RadPress's own DICOMweb, from the Study page's and the list's links: a real MR,
    MONOCHROME1, RGB, Enhanced CT and YBR_FULL images render as their files decode, without a lossy mark; an already-lossy original (Lossy Image Compression 01, 18:1) carries the overlay.
    Frames travel as HTJ2K lossless, YBR_FULL's as decoded pixels (seen by the server as it answered them)."""
    from core.samples import sample
    from tests.synthetic import write_kind

    base, app = live_app(demo=False)
    frames = []

    def _frames(response):  # which frames the viewer was sent, as what
        if "/frames/" in flask.request.path:
            frames.append((flask.request.path, response.content_type))
        return response

    # the app has served its warm-up request (app.create_app), so Flask refuses @after_request now: add it directly
    app.server.after_request_funcs.setdefault(None, []).append(_frames)

    kinds = ("mono1", "rgb", "ybr_full", "enhanced_ct", "already_lossy")
    files = {"mr": sample("MR2_UNCR"), **{k: write_kind(k, tmp_path) for k in kinds}}
    uids = {}
    for name, path in files.items():
        with open(path, "rb") as fh:
            answer = requests.post(f"{base}/api/upload", files={"file": fh}, auth=ADMIN, timeout=60)
        assert answer.status_code == 200, answer.text
        uids[name] = pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID
    login(browser, base, ADMIN)
    browser.get(f"{base}/study?uid={uids['mr']}")
    button = wait(browser).until(lambda d: d.find_element(By.ID, "open-ohif"))
    assert button.get_attribute("href") == base + viewer_url(uids["mr"])
    browser.get(f"{base}/")
    links = wait(browser).until(lambda d: d.find_elements(By.LINK_TEXT, "Open in OHIF"))
    assert sorted(a.get_attribute("href") for a in links) == sorted(base + viewer_url(u) for u in uids.values())
    ARTIFACTS.mkdir(exist_ok=True)
    for name in ("mr", "mono1", "rgb", "enhanced_ct", "ybr_full"):
        frames.clear()
        pixels, overlay = _open_in_ohif(browser, base, uids[name])
        browser.save_screenshot(str(ARTIFACTS / f"ohif-{name}.png"))
        assert "LOSSY" not in overlay, name
        assert _likeness(pixels, files[name]) > 0.9, name
        # HTJ2K lossless (progressive), except YBR_FULL, which OHIF 3.13.2 shows wrongly as HTJ2K: decoded pixels
        sent = 'type="application/octet-stream"' if name == "ybr_full" else 'type="image/jphc"'
        shown = [t for path, t in frames if f"/studies/{uids[name]}/" in path]  # not the last study's late prefetch
        assert shown and all(sent in t for t in shown), (name, shown)
    pixels, overlay = _open_in_ohif(browser, base, uids["already_lossy"])
    assert overlay == "LOSSY 18:1 \u2014 not for primary diagnosis"
    assert _likeness(pixels, files["already_lossy"]) > 0.9
    browser.save_screenshot(str(ARTIFACTS / "ohif-lossy.png"))


def _parts(response) -> list[tuple[str, bytes]]:
    """A multipart/related body as (Content-Type, bytes) per part."""
    boundary = re.search(r'boundary="?([^";]+)"?', response.headers["Content-Type"]).group(1).encode()
    parts = []
    for chunk in response.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.partition(b"\r\n\r\n")
        kind = re.search(rb"Content-Type:\s*([^\r\n]+)", head, re.I).group(1).decode()
        parts.append((kind, body[:-2] if body.endswith(b"\r\n") else body))
    return parts


@pytest.mark.parametrize("kind", ["u12_odd", "s12", "u8_odd", "multiframe", "mono1", "rgb", "ybr_full", "enhanced_ct", "big_endian"])
def test_frames_as_the_viewer_asks_are_the_original_pixels(live_app, tmp_path, kind):
    """What OHIF is sent with its Accept header decodes to the file's own pixels, every frame: HTJ2K lossless
    (decoded by OpenJPH's ojph_expand), or for YBR_FULL the decoded pixels, little endian."""
    from core.ohif import FRAMES_ACCEPT
    from tests.checkers import tool_pixels
    from core.pixels import decode_frame, pixel_spec, read_dataset
    from tests.synthetic import write_kind

    base, _app = live_app(demo=False)
    path = write_kind(kind, tmp_path)
    with open(path, "rb") as fh:
        assert requests.post(f"{base}/api/upload", files={"file": fh}, auth=ADMIN, timeout=60).status_code == 200
    ds = read_dataset(path)
    spec = pixel_spec(ds)
    frames = ",".join(str(n + 1) for n in range(spec.frames))
    url = (f"{base}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}/frames/{frames}")
    answer = requests.get(url, headers={"Accept": FRAMES_ACCEPT}, auth=ADMIN, timeout=60)
    assert answer.status_code == 200, answer.text
    parts = _parts(answer)
    assert len(parts) == spec.frames
    for n, (content_type, body) in enumerate(parts):
        expected = decode_frame(ds, n)
        if kind == "ybr_full":
            assert content_type.startswith("application/octet-stream")
            assert body == expected.astype(expected.dtype.newbyteorder("<")).tobytes(), f"frame {n + 1}"
        else:
            assert content_type == "image/jphc; transfer-syntax=1.2.840.10008.1.2.4.201", content_type
            assert np.array_equal(tool_pixels("htj2k", body, spec, tmp_path), expected), f"frame {n + 1}"
