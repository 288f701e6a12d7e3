"""Real HTTP requests against the app served on localhost."""

import io
import tarfile
import threading
import time
import zipfile

import numpy as np
import pytest
import requests
from pydicom import dcmread
from werkzeug.serving import make_server

from app import create_app
from core.pixels import decode_all, read_dataset
from core.samples import sample, write_series

MR2 = sample("MR2_UNCR")


ADMIN = ("admin", "correct-horse")


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("RADPRESS_ADMIN_USER", ADMIN[0])
    monkeypatch.setenv("RADPRESS_ADMIN_PASSWORD", ADMIN[1])
    app = create_app(tmp_path / "data", demo=False)
    httpd = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", app
    httpd.shutdown()
    app.server.extensions["radpress"]["jobs"].stop()


@pytest.fixture(autouse=True)
def http(monkeypatch):
    """Every request of these tests authenticates as the admin with HTTP Basic."""
    session = requests.Session()
    session.auth = ADMIN
    return session


def wait_jobs(http, base, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = http.get(f"{base}/api/jobs").json()
        if jobs and all(j["state"] in ("done", "failed", "cancelled") for j in jobs):
            return jobs
        time.sleep(0.2)
    raise AssertionError("jobs did not finish")


def upload(http, base, path):
    with open(path, "rb") as fh:
        return http.post(f"{base}/api/upload", files={"file": (path.name, fh)})


def test_health(http, server):
    base, _ = server
    r = http.get(f"{base}/api/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_upload_multipart_and_raw_body(http, server, tmp_path):
    base, _ = server
    r = upload(http, base, MR2)
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "stored" and r.json()["jobs"]
    with open(sample("693_UNCR"), "rb") as fh:
        raw = http.post(f"{base}/api/upload?name=ct.dcm", data=fh)
    assert raw.status_code == 200 and raw.json()["results"][0]["status"] == "stored"
    again = upload(http, base, MR2)
    assert again.json()["results"][0]["status"] == "duplicate"
    zpath = tmp_path / "study.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in write_series("emri_small", 2, tmp_path / "s"):
            z.write(f, f"a/{f.name}")
    assert [x["status"] for x in upload(http, base, zpath).json()["results"]] == ["stored", "stored"]
    assert len(http.get(f"{base}/api/studies").json()) == 3


def test_upload_of_bad_files_is_a_4xx_with_reasons(http, server, tmp_path):
    base, _ = server
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    r = upload(http, base, bad)
    assert r.status_code == 422 and r.json()["results"][0]["reason"].startswith("not DICOM")
    empty = http.post(f"{base}/api/upload", data=b"")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]


def test_downloads_for_each_variant(http, server):
    base, _ = server
    study = upload(http, base, MR2).json()["studies"][0]
    wait_jobs(http, base)
    sop = http.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    original = http.get(f"{base}/download/instance/{sop}")
    assert original.status_code == 200 and original.content == MR2.read_bytes()
    assert original.headers["Content-Type"] == "application/dicom" and original.headers["ETag"]
    assert "attachment" in original.headers["Content-Disposition"]
    lossless = http.get(f"{base}/download/instance/{sop}", params={"variant": "lossless"})
    ds = dcmread(io.BytesIO(lossless.content))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.202"  # 1024² grayscale: HTJ2K RPCL (the OHIF rule)
    assert np.array_equal(decode_all(ds), decode_all(read_dataset(MR2)))
    lossy = http.get(f"{base}/download/instance/{sop}", params={"variant": "lossy"})
    ds = dcmread(io.BytesIO(lossy.content))
    assert ds.LossyImageCompression == "01" and ds.SOPInstanceUID != sop
    assert lossy.headers["X-Lossy-Compression"].startswith("ratio=7") and "ISO_15444_1" in lossy.headers["X-Lossy-Compression"]


def test_http_range(http, server):
    base, _ = server
    study = upload(http, base, MR2).json()["studies"][0]
    sop = http.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    url = f"{base}/download/instance/{sop}"
    whole = MR2.read_bytes()
    part = http.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    tail = http.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole[-10:]
    bad = http.get(url, headers={"Range": f"bytes={len(whole) + 10}-"})
    assert bad.status_code == 416
    etag = part.headers["ETag"]
    same = http.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert same.status_code == 206
    changed = http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"something-else"'})
    assert changed.status_code == 200 and changed.content == whole


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_study_bundles(http, server, tmp_path, fmt):
    base, _ = server
    files = write_series("emri_small", 3, tmp_path / "s")
    zpath = tmp_path / "up.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in files:
            z.write(f, f.name)
    study = upload(http, base, zpath).json()["studies"][0]
    wait_jobs(http, base)
    r = http.get(f"{base}/download/study/{study}.{fmt}", params={"variant": "lossless"}, stream=True)
    assert r.status_code == 200 and "Content-Length" not in r.headers  # streamed
    body = r.content
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(body)) as z:
            names = z.namelist()
            assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
            blobs = [z.read(n) for n in names]
    else:
        with tarfile.open(fileobj=io.BytesIO(body)) as t:
            names = t.getnames()
            blobs = [t.extractfile(n).read() for n in names]
    assert len(names) == 3 and all(n.count("/") == 3 and ".." not in n for n in names)
    for blob in blobs:
        ds = dcmread(io.BytesIO(blob))
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"  # JPEG-LS lossless: grayscale under 1000 px


def test_strategy_change_and_storage_api(http, server):
    base, _ = server
    study = upload(http, base, MR2).json()["studies"][0]
    wait_jobs(http, base)
    storage = http.get(f"{base}/api/studies/{study}/storage").json()
    assert set(storage["bytes_now"]) == {"original", "lossless", "lossy", "thumbnail"}
    r = http.put(f"{base}/api/studies/{study}/strategy", json={"strategy": 4})
    assert r.status_code == 200 and r.json()["remove"] == 3
    wait_jobs(http, base)
    assert set(http.get(f"{base}/api/studies/{study}/storage").json()["bytes_now"]) == {"original"}
    assert http.put(f"{base}/api/studies/{study}/strategy", json={"strategy": 9}).status_code == 400
    clinic = http.get(f"{base}/api/storage").json()
    assert [s["strategy"] for s in clinic["strategies"]] == [1, 2, 3, 4, 5]  # 5: the lossless master


def test_lossy_refused_when_the_clinic_has_lossy_off(http, server):
    base, _ = server
    study = upload(http, base, MR2).json()["studies"][0]
    sop = http.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    r = http.put(f"{base}/api/policy", json={"lossy_enabled": False})
    assert r.status_code == 200
    denied = http.get(f"{base}/download/instance/{sop}", params={"variant": "lossy"})
    assert denied.status_code == 403 and "switched off" in denied.json()["error"]
    assert http.get(f"{base}/download/study/{study}.zip", params={"variant": "lossy"}).status_code == 403


def test_policy_validation_and_warnings(http, server):
    base, _ = server
    bad = http.put(f"{base}/api/policy", json={"default_ratio": 1000})
    assert bad.status_code == 400 and "out of range" in bad.json()["error"]
    warned = http.put(f"{base}/api/policy", json={"ratios": {"CR": 40}})
    assert warned.status_code == 200 and "Canadian" in warned.json()["warnings"][0]


def test_bad_requests(http, server):
    base, _ = server
    assert http.get(f"{base}/download/instance/1.2.3").status_code == 404
    study = upload(http, base, MR2).json()["studies"][0]
    sop = http.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    for params in ({"variant": "bogus"}, {"variant": "lossy", "ratio": "x"}, {"variant": "lossy", "ratio": "1000"}):
        r = http.get(f"{base}/download/instance/{sop}", params=params)
        assert r.status_code == 400 and r.json()["error"]
    assert http.get(f"{base}/download/study/{study}.rar").status_code == 400
    assert http.get(f"{base}/api/jobs/999").status_code == 404


def test_thumbnail_and_second_download_from_cache(http, server):
    base, _ = server
    study = upload(http, base, sample("693_UNCR")).json()["studies"][0]
    http.put(f"{base}/api/studies/{study}/strategy", json={"strategy": 4})
    wait_jobs(http, base)
    sop = http.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    thumb = http.get(f"{base}/thumbnail/{sop}")
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/png"
    url = f"{base}/download/instance/{sop}?variant=lossy&ratio=10"
    first, second = http.get(url), http.get(url)
    assert first.content == second.content and first.headers["ETag"] == second.headers["ETag"]
    assert first.headers["X-Cache"] == "miss" and second.headers["X-Cache"] == "hit"


def test_authentication_and_roles(server, tmp_path):
    base, app = server
    from core.users import Users

    users = Users(app.server.extensions["radpress"]["store"])
    users.add("rad", "radiologist-pw", "radiologist")
    assert requests.get(f"{base}/api/studies").status_code == 401
    assert requests.get(f"{base}/api/studies", auth=("admin", "wrong")).status_code == 401
    assert requests.get(f"{base}/thumbnail/x").status_code == 401
    assert requests.get(f"{base}/download/instance/x").status_code == 401
    page = requests.get(f"{base}/", allow_redirects=False)
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    rad = requests.Session()
    rad.auth = ("rad", "radiologist-pw")
    assert rad.get(f"{base}/api/studies").status_code == 200
    assert rad.put(f"{base}/api/policy", json={"lossy_enabled": False}).status_code == 403
    with open(MR2, "rb") as fh:
        assert rad.post(f"{base}/api/upload", files={"file": ("a.dcm", fh)}).status_code == 403
    browser = requests.Session()
    login = browser.post(f"{base}/login", data={"username": "rad", "password": "radiologist-pw"}, allow_redirects=False)
    assert login.status_code == 302
    cookie = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert browser.get(f"{base}/api/studies").status_code == 200
    assert browser.post(f"{base}/login", data={"username": "rad", "password": "nope"}).status_code == 401


def test_lab_api_and_study_ratio(http, server):
    base, _ = server
    study = upload(http, base, sample("RG3_UNCR")).json()["studies"][0]
    r = http.get(f"{base}/api/studies/{study}/lab", params={"codecs": "j2k", "ratios": "5,10"})
    assert r.status_code == 202 and r.json()["state"] in ("queued", "running")  # a job, never inside the request
    wait_jobs(http, base)
    r = http.get(f"{base}/api/studies/{study}/lab", params={"codecs": "j2k", "ratios": "5,10"})
    assert r.status_code == 200
    body = r.json()
    assert body["study_uid"] == study and body["modalities"] == ["CR"] and body["current"]["ratio"] == 10
    assert [row["target_ratio"] for row in body["sweep"]] == [None, 5, 10]
    assert http.get(f"{base}/api/studies/{study}/lab", params={"ratios": "x"}).status_code == 400
    assert http.get(f"{base}/api/studies/{study}/lab", params={"codecs": "webp"}).status_code == 400
    assert http.put(f"{base}/api/studies/{study}/ratio", json={"ratio": 1000}).status_code == 400
    assert http.put(f"{base}/api/studies/{study}/ratio", json={"ratio": 25}).status_code == 200
    wait_jobs(http, base)
    lossy = [a for a in http.get(f"{base}/api/studies/{study}").json()["instances"][0]["artifacts"] if a["variant"] == "lossy"]
    assert [a["ratio"] for a in lossy] == [25]


def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(data)).size


def test_progressive_preview_levels(http, server):
    base, _ = server
    study = upload(http, base, sample("RG3_UNCR")).json()["studies"][0]
    sop = http.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    full = http.get(f"{base}/preview/{sop}", params={"level": 0})
    coarse = http.get(f"{base}/preview/{sop}", params={"level": 3})
    assert full.status_code == coarse.status_code == 200 and full.headers["Content-Type"] == "image/png"
    assert _png_size(full.content) == (1760, 1760) and _png_size(coarse.content) == (220, 220)
    assert len(coarse.content) < len(full.content) / 10
    lossy = http.get(f"{base}/preview/{sop}", params={"level": 2, "variant": "lossy", "ratio": 20})
    assert lossy.headers["X-Lossy-Compression"].startswith("ratio=") and _png_size(lossy.content) == (440, 440)
    assert http.get(f"{base}/preview/{sop}", params={"level": 9}).status_code == 400
    assert http.get(f"{base}/preview/{sop}", params={"level": "x"}).status_code == 400


def test_deepzoom_routes(http, server):
    base, _ = server
    study = upload(http, base, sample("RG3_UNCR")).json()["studies"][0]
    sop = http.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    dzi = http.get(f"{base}/deepzoom/{sop}.dzi")
    assert dzi.status_code == 200 and 'Width="1760"' in dzi.text and 'TileSize="254"' in dzi.text
    tile = http.get(f"{base}/deepzoom/{sop}_files/11/1_1.jpeg")
    assert tile.status_code == 200 and tile.headers["Content-Type"] == "image/jpeg"
    assert _png_size(tile.content) == (256, 256)  # 254 + overlap on both sides
    assert http.get(f"{base}/deepzoom/{sop}_files/11/1_1.png").headers["Content-Type"] == "image/png"
    assert http.get(f"{base}/deepzoom/{sop}_files/11/50_1.jpeg").status_code == 400
    assert http.get(f"{base}/deepzoom/{sop}_files/11/1_1.bmp").status_code == 400
    assert requests.get(f"{base}/deepzoom/{sop}.dzi").status_code == 401


def test_dims_transforms(http, server):
    base, _ = server
    study = upload(http, base, sample("RG1_UNCR")).json()["studies"][0]
    sop = http.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    url = f"{base}/dims/{sop}/thumbnail/256x256/format/jpg"
    first = http.get(url)
    assert first.status_code == 200 and first.headers["Content-Type"] == "image/jpeg"
    from PIL import Image

    assert max(Image.open(io.BytesIO(first.content)).size) == 256
    assert "X-Lossy-Compression" not in first.headers
    assert first.headers["X-Lossy-Rendering"] == "format=jpeg; quality=90"
    assert "X-Lossy-Rendering" not in http.get(f"{base}/dims/{sop}/thumbnail/64/format/png").headers
    again = http.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    lossy = http.get(f"{base}/dims/{sop}/variant/lossy/ratio/20/thumbnail/300/format/png")
    assert lossy.headers["X-Lossy-Compression"].startswith("ratio=20") and "ISO_15444_1" in lossy.headers["X-Lossy-Compression"]
    image = Image.open(io.BytesIO(lossy.content)).convert("RGB")
    assert image.getpixel((1, 1)) == (255, 224, 138)  # the burned-in LOSSY label's background
    cropped = http.get(f"{base}/dims/{sop}/crop/100x50+10+10/format/png")
    assert Image.open(io.BytesIO(cropped.content)).size == (100, 50)
    bad = http.get(f"{base}/dims/{sop}/rotate/90")
    assert bad.status_code == 400 and "unknown command 'rotate'" in bad.json()["error"]
    missing = http.get(f"{base}/dims/1.2.3/thumbnail/10x10")
    assert missing.status_code == 404 and "source not available" in missing.json()["error"]


def test_dims_multiframe_and_limits(http, server, tmp_path):
    base, app = server
    files = write_series("emri_small", 1, tmp_path / "s")
    study = upload(http, base, files[0]).json()["studies"][0]
    sop = http.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    animated = http.get(f"{base}/dims/{sop}/firstframeonly/off/limit/4/format/gif")
    from PIL import Image

    assert Image.open(io.BytesIO(animated.content)).n_frames == 4
    single = http.get(f"{base}/dims/{sop}/frame/3/format/png")
    assert Image.open(io.BytesIO(single.content)).size == (64, 64)
    app.server.extensions["radpress"]["dims"].max_source_mb = 0.001
    assert http.get(f"{base}/dims/{sop}/format/png").status_code == 413
    app.server.extensions["radpress"]["dims"].on_failure = "redirect"
    moved = http.get(f"{base}/dims/{sop}/format/png", allow_redirects=False)
    assert moved.status_code == 302 and moved.headers["Location"].endswith(f"/download/instance/{sop}?variant=original")


def test_dims_composite_and_byoriginal_from_configuration(http, server, tmp_path):
    from PIL import Image

    base, app = server
    mark = tmp_path / "mark.png"
    Image.new("RGBA", (20, 10), (255, 0, 0, 255)).save(mark)
    config = app.server.extensions["radpress"]["dims"]
    config.overlays = {"clinic": {"file": str(mark), "gravity": "se", "geometry": "+5+5", "dissolve": 100}}
    config.byoriginal = {"web": [{"max_pixels": 1_000_000, "chain": "thumbnail/64x64"}, {"chain": "thumbnail/128x128"}]}
    study = upload(http, base, sample("RG1_UNCR")).json()["studies"][0]
    sop = http.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    sized = Image.open(io.BytesIO(http.get(f"{base}/dims/{sop}/byoriginal/web/format/png").content))
    assert max(sized.size) == 128  # 3.6 megapixels: the second rule
    marked = Image.open(io.BytesIO(http.get(f"{base}/dims/{sop}/thumbnail/200x200/composite/clinic/format/png").content)).convert("RGB")
    w, h = marked.size
    assert marked.getpixel((w - 5 - 10, h - 5 - 5)) == (255, 0, 0)  # bottom-right, 5 px in
    assert marked.getpixel((10, 10)) != (255, 0, 0)


MAGIC = {"png": b"\x89PNG", "jpeg": b"\xff\xd8", "gif": b"GIF8", "webp": b"RIFF", "jp2": b"\x00\x00\x00\x0cjP"}


@pytest.fixture
def dims_instances(http, server, tmp_path):
    """A radiograph (RG3) and a 10-frame MR, uploaded once per test."""
    base, app = server
    from PIL import Image

    mark = tmp_path / "mark.png"
    Image.new("RGBA", (8, 8), (0, 0, 255, 255)).save(mark)
    config = app.server.extensions["radpress"]["dims"]
    config.overlays = {"logo": {"file": str(mark), "gravity": "nw", "geometry": "+1+1", "dissolve": 80},
                       "missing": {"file": str(tmp_path / "nope.png")}}
    config.byoriginal = {"small": [{"max_pixels": 10, "chain": "thumbnail/32x32"}, {"chain": "thumbnail/48x48"}]}
    sops = {}
    for name, path in (("cr", sample("RG3_UNCR")), ("mf", write_series("emri_small", 1, tmp_path / "s")[0])):
        study = upload(http, base, path).json()["studies"][0]
        sops[name] = http.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    return base, sops


@pytest.mark.parametrize("chain, fmt, size", [
    ("frame/1/format/png", "png", (1760, 1760)),
    ("window/500,1000/thumbnail/100x100/format/png", "png", (100, 100)),
    ("variant/original/thumbnail/64/format/png", "png", (64, 64)),
    ("variant/lossless/thumbnail/64/format/png", "png", (64, 64)),
    ("variant/lossy/ratio/30/thumbnail/64/format/png", "png", (64, 64)),
    ("crop/100x40+10+20/format/png", "png", (100, 40)),
    ("crop/50x25%/format/png", "png", (880, 440)),
    ("thumbnail/x50/format/jpg", "jpeg", (50, 50)),
    ("thumbnail/10%/format/png", "png", (176, 176)),
    ("thumbnail/120x60!/format/png", "png", (120, 60)),
    ("thumbnail/5000x5000>/format/png", "png", (1760, 1760)),
    ("thumbnail/100x100</format/png", "png", (1760, 1760)),
    ("resize/200x100/format/webp", "webp", (100, 100)),
    ("thumbnail/64/format/gif", "gif", (64, 64)),
    ("thumbnail/64/format/jp2", "jp2", (64, 64)),
    ("thumbnail/64/format/jpg/quality/20", "jpeg", (64, 64)),
    ("thumbnail/64/format/png/optimize", "png", (64, 64)),
    ("thumbnail/64/composite/logo/format/png", "png", (64, 64)),
    ("byoriginal/small/format/png", "png", (48, 48)),
])
def test_every_dims_command(http, dims_instances, chain, fmt, size):
    from PIL import Image

    base, sops = dims_instances
    r = http.get(f"{base}/dims/{sops['cr']}/{chain}")
    assert r.status_code == 200, r.text
    assert r.content.startswith(MAGIC[fmt]) and r.headers["Content-Type"] == f"image/{fmt}"
    assert Image.open(io.BytesIO(r.content)).size == size
    assert ("X-Lossy-Compression" in r.headers) == ("variant/lossy" in chain)
    again = http.get(f"{base}/dims/{sops['cr']}/{chain}")
    assert r.headers["X-Cache"] == "miss" and again.headers["X-Cache"] == "hit" and again.content == r.content


def test_dims_quality_and_multiframe(http, dims_instances):
    from PIL import Image

    base, sops = dims_instances
    low = http.get(f"{base}/dims/{sops['cr']}/thumbnail/256/format/jpg/quality/10").content
    high = http.get(f"{base}/dims/{sops['cr']}/thumbnail/256/format/jpg/quality/95").content
    assert len(low) < len(high)
    mf = sops["mf"]
    assert Image.open(io.BytesIO(http.get(f"{base}/dims/{mf}/format/gif").content)).n_frames == 1  # first frame only by default
    apng = Image.open(io.BytesIO(http.get(f"{base}/dims/{mf}/firstframeonly/off/format/png").content))
    assert getattr(apng, "n_frames", 1) == 10
    assert Image.open(io.BytesIO(http.get(f"{base}/dims/{mf}/firstframeonly/off/limit/3/format/gif").content)).n_frames == 3


@pytest.mark.parametrize("chain, status, fragment", [
    ("frame/0", 400, "counts from 1"),
    ("frame/99/format/png", 400, "frame 99 of 1"),
    ("window/abc", 400, "bad argument"),
    ("variant/blurry", 400, "bad argument"),
    ("ratio/1000", 400, "out of range"),
    ("crop/10x10+5000+5000/format/png", 400, "outside"),
    ("crop/nonsense", 400, "malformed geometry"),
    ("thumbnail/0x0x0", 400, "malformed geometry"),
    ("thumbnail/99999x99999", 400, "larger than the limit"),
    ("resize/5000%", 400, "enlarges more than 10x"),
    ("format/tiff", 400, "bad argument"),
    ("quality/500", 400, "not between 0 and 100"),
    ("composite/unknown", 400, "no overlay named"),
    ("composite/missing/format/png", 422, "source could not be loaded"),
    ("byoriginal/unknown", 400, "no byoriginal rule"),
    ("firstframeonly/maybe", 400, "bad argument"),
    ("limit/0", 400, "counts from 1"),
    ("limit", 400, "missing argument"),
    ("sharpen/5", 400, "unknown command"),
])
def test_dims_errors_name_the_command(http, dims_instances, chain, status, fragment):
    base, sops = dims_instances
    r = http.get(f"{base}/dims/{sops['cr']}/{chain}")
    assert r.status_code == status and fragment in r.json()["error"], r.text
    assert "command '" in r.json()["error"] or status == 422


def test_dzi_and_tile_sizes_at_every_level(http, dims_instances):
    import math
    import xml.etree.ElementTree as ET

    from PIL import Image

    base, sops = dims_instances
    sop = sops["cr"]
    root = ET.fromstring(http.get(f"{base}/deepzoom/{sop}.dzi").text)
    tile, overlap = int(root.get("TileSize")), int(root.get("Overlap"))
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    width, height = int(size.get("Width")), int(size.get("Height"))
    assert (width, height) == (1760, 1760)
    top = math.ceil(math.log2(max(width, height)))
    for level in range(top + 1):
        scale = 2 ** (top - level)
        w, h = math.ceil(width / scale), math.ceil(height / scale)
        cols, rows = math.ceil(w / tile), math.ceil(h / tile)
        for col, row in {(0, 0), (cols - 1, rows - 1)}:
            r = http.get(f"{base}/deepzoom/{sop}_files/{level}/{col}_{row}.png")
            assert r.status_code == 200, (level, col, row)
            x0, y0 = max(0, col * tile - overlap), max(0, row * tile - overlap)
            x1, y1 = min(w, (col + 1) * tile + overlap), min(h, (row + 1) * tile + overlap)
            assert Image.open(io.BytesIO(r.content)).size == (x1 - x0, y1 - y0), (level, col, row)
        assert http.get(f"{base}/deepzoom/{sop}_files/{level}/{cols}_{rows - 1}.png").status_code == 400
    assert http.get(f"{base}/deepzoom/{sop}_files/{top + 1}/0_0.png").status_code == 400


def test_requests_that_once_gave_500_get_a_4xx_with_a_reason(http, server, tmp_path):
    base, _ = server
    study = upload(http, base, MR2).json()["studies"][0]
    sop = http.get(f"{base}/api/studies/{study}").json()["instances"][0]["sop_uid"]
    cases = [
        ("get", f"/dims/{sop}/thumbnail/0x0!", {}, 400, "at least 1"),
        ("get", f"/dims/{sop}/resize/0x10", {}, 400, "at least 1"),
        ("get", f"/download/study/{study}.zip?variant=lossy&ratio=0.5", {}, 400, "0.5:1"),
        ("get", f"/download/study/{study}.tar?variant=lossy&ratio=abc", {}, 400, "not a number"),
        ("get", "/api/jobs/12345678901234567890", {}, 404, "No job"),
        ("post", "/api/jobs/99999999999999999999/cancel", {}, 404, "No job"),
        ("post", "/_dash-update-component", {"json": {}}, 400, "output"),
        ("post", "/_dash-update-component", {"data": b"not json", "headers": {"Content-Type": "application/json"}}, 400, "output"),
        ("post", "/_dash-update-component", {"json": {"output": "nothing.children", "inputs": []}}, 400, "No callback"),
        ("post", "/_dash-update-component", {"json": {"output": "whoami.children", "inputs": {}}}, 400, "list"),
        ("post", "/_dash-update-component", {"json": {"output": "whoami.children", "inputs": [7]}}, 400, "property"),
        ("post", "/_dash-update-component", {"json": {
            "output": "..compare-center.value...compare-width.value..",
            "outputs": [{"id": "compare-center", "property": "value"}, {"id": "compare-width", "property": "value"}],
            "inputs": [{"id": "compare-preset", "property": "value", "value": "auto"},
                       {"id": "compare-sop", "property": "value", "value": sop}],
            "state": [{"id": "compare-frame", "property": "value", "value": "first"}],
            "changedPropIds": ["compare-sop.value"]}}, 400, "could not use its input"),
        ("get", "/_dash-component-suites/..%2f..%2f/etc/passwd", {}, 404, "No such file"),
        ("get", "/_dash-component-suites/dash/..%2f..%2fapp.py", {}, 404, "No such file"),
        ("get", "/_dash-component-suites/nosuchpackage/x.js", {}, 404, "No such file"),
        ("get", "/api/no/such/route", {}, 404, "No API route"),
        ("delete", "/api/studies", {}, 404, "No API route"),
        ("get", "/download/instance/..%2f..%2fsecret.key", {}, 404, "No API route"),  # was the app's HTML page, 200
        ("get", f"/dims/{sop}/", {}, 404, "No API route"),
        ("get", f"/thumbnail/{sop}/x", {}, 404, "No API route"),
    ]
    for method, url, kwargs, status, reason in cases:
        r = getattr(http, method)(base + url, allow_redirects=False, **kwargs)
        assert r.status_code == status and reason in r.json()["error"], (url, r.status_code, r.text[:200])
    login = requests.post(f"{base}/login?next=/%0d%0aSet-Cookie:%20x=1", data=dict(zip(("username", "password"), ADMIN)),
                          allow_redirects=False)
    assert login.status_code == 302 and "\r" not in login.headers["Location"] and "x=1" not in login.headers.get("Set-Cookie", "")


def test_jobs_api_pages_newest_first_with_total_and_links(server, http):
    import re

    base, app = server
    store = app.server.extensions["radpress"]["store"]
    with store.connect() as db:  # a history as the runner leaves it
        ids = [db.execute("INSERT INTO jobs (kind, study_uid, state, params, created) VALUES ('materialize', '1.2.3', 'done', '{}', ?)",
                          (time.time(),)).lastrowid for _ in range(7)]
    first = http.get(f"{base}/api/jobs", params={"per_page": 3})
    assert first.ok and [j["id"] for j in first.json()] == ids[::-1][:3]
    assert first.headers["X-Total-Count"] == "7" and 'rel="next"' in first.headers["Link"] and 'rel="prev"' not in first.headers["Link"]
    last = http.get(re.search(r'<([^>]+)>; rel="next"', first.headers["Link"]).group(1).replace("page=2", "page=3"))
    assert [j["id"] for j in last.json()] == ids[:1] and 'rel="next"' not in last.headers["Link"]
    assert [j["id"] for j in http.get(f"{base}/api/jobs").json()] == ids[::-1]  # default: the newest 100
    for bad in ({"page": 0}, {"per_page": 1001}, {"page": "x"}):
        answer = http.get(f"{base}/api/jobs", params=bad)
        assert answer.status_code == 400 and "error" in answer.json()
