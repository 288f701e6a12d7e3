"""Already-lossy originals are never called lossless: one reading of the history, everywhere it travels."""

import io
import zipfile

import pytest
import requests

from core.compress import compress
from core.derive import LossyHistory, lossy_history
from tests.conftest import ADMIN
from tests.synthetic import KINDS, make_dataset, write


def test_an_uncompressed_original_has_no_history():
    history = lossy_history(make_dataset(**KINDS["u12_odd"]))
    assert history == LossyHistory() and history.header() is None and history.label == ""


def test_ratio_and_method_of_an_already_lossy_original():
    history = lossy_history(make_dataset(**KINDS["already_lossy"]))
    assert history.lossy and history.methods == ("ISO_15444_1",) and history.cumulative_ratio == 18
    assert history.label == "JPEG 2000, 18:1"
    assert history.compressed == "compressed 18:1"
    assert history.header() == "ratio=18; method=ISO_15444_1"


def test_cumulative_ratio_is_the_product_of_every_step():
    ds = make_dataset(**{**KINDS["u12_odd"], "lossy_history": (("ISO_10918_1", 4.0), ("ISO_15444_1", 2.5))})
    history = lossy_history(ds)
    assert history.ratios == (4.0, 2.5) and history.cumulative_ratio == pytest.approx(10)
    assert history.label == "JPEG then JPEG 2000, 10:1"


def test_a_lossy_syntax_without_the_attributes_is_measured():
    """No Lossy Image Compression attributes: the transfer syntax names the method, the file's size the ratio."""
    out = compress(make_dataset(**KINDS["u12_odd"]), "j2k", "lossy", 12).dataset
    for keyword in ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        del out[keyword]
    history = lossy_history(out)
    spec_bytes = 101 * 77 * 2
    assert history.lossy and history.methods == ("ISO_15444_1",)
    assert history.cumulative_ratio == pytest.approx(spec_bytes / len(out.PixelData))


@pytest.mark.parametrize("syntax, flag", [("1.2.840.10008.1.2.4.90", None), ("1.2.840.10008.1.2.4.91", "00"),
                                          ("1.2.840.10008.1.2.4.201", None), ("1.2.840.10008.1.2.4.80", None),
                                          ("1.2.840.10008.1.2.4.81", "00"), ("1.2.840.10008.1.2.4.110", None),
                                          ("1.2.840.10008.1.2.4.112", "00")])
def test_an_irreversible_codestream_is_lossy_whatever_the_file_claims(syntax, flag, tmp_path):
    """A 9-7 wavelet stream labelled "Lossless Only" (or flagged 00), a JPEG-LS stream with NEAR > 0 under the
    lossless JPEG-LS syntax (or flagged 00 under the near-lossless one), or a JPEG XL stream coded in XYB (libjxl's lossy mode) labelled "JPEG XL Lossless" (or
    flagged 00), was indexed as a lossless original."""
    from core.ingest import ingest
    from core.store import Store

    codec = {"201": "htj2k", "80": "jpegls", "81": "jpegls", "110": "jxl", "112": "jxl"}.get(syntax.rsplit(".", 1)[1], "j2k")
    out = compress(make_dataset(**KINDS["u12_odd"]), codec, "lossy", 12).dataset
    for keyword in ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        del out[keyword]
    if flag:
        out.LossyImageCompression = flag
    out.file_meta.TransferSyntaxUID = syntax
    history = lossy_history(out)
    assert history.lossy and history.methods == ({"htj2k": "ISO_15444_15", "jpegls": "ISO_14495_1",
                                                  "jxl": "ISO_18181_1"}.get(codec, "ISO_15444_1"),)
    store = Store(tmp_path / "data")
    [result] = ingest(store, [write(out, tmp_path / "relabelled.dcm")])
    assert result.status == "stored" and store.instance(out.SOPInstanceUID)["lossy"] == 1
    reversible = compress(make_dataset(**KINDS["u12_odd"]), codec, "lossless").dataset
    assert not lossy_history(reversible).lossy


def test_copies_of_a_lossy_original_carry_its_history():
    source = make_dataset(**KINDS["already_lossy"])
    lossless = compress(source, "htj2k", "lossless").dataset
    assert lossy_history(lossless).label == "JPEG 2000, 18:1"  # a lossless copy of a lossy image
    lossy = compress(source, "j2k", "lossy", 5)
    history = lossy_history(lossy.dataset)
    assert history.methods == ("ISO_15444_1", "ISO_15444_1")
    assert history.cumulative_ratio == pytest.approx(18 * float(lossy.dataset.LossyImageCompressionRatio[-1]))
    assert lossy_history(source).then(lossy.ratio, "ISO_15444_1").cumulative_ratio == pytest.approx(18 * lossy.ratio)


def test_the_index_keeps_the_history(tmp_path):
    from core.store import Store

    store = Store(tmp_path / "data")
    ds = make_dataset(**KINDS["already_lossy"])
    path = write(ds, tmp_path / "in.dcm")
    staged = tmp_path / "staged.dcm"
    staged.write_bytes(path.read_bytes())
    assert store.add_original(staged, ds, "in.dcm") == "stored"
    row = store.instance(ds.SOPInstanceUID)
    assert (row["lossy"], row["lossy_ratio"], row["lossy_methods"]) == (1, 18, "ISO_15444_1")
    assert LossyHistory.from_index(row).label == "JPEG 2000, 18:1"
    assert store.studies()[0]["lossy_originals"] == 1


@pytest.fixture
def lossy_study(live_app, tmp_path):
    """The app with one already-lossy original and one plain original in the same study."""
    base, _app = live_app()
    lossy = make_dataset(**KINDS["already_lossy"])
    plain = make_dataset(**{**KINDS["u12_odd"], "study_uid": lossy.StudyInstanceUID, "modality": "CR"})
    http = requests.Session()
    http.auth = ADMIN
    for name, ds in (("lossy.dcm", lossy), ("plain.dcm", plain)):
        path = write(ds, tmp_path / name)
        with open(path, "rb") as fh:
            assert http.post(f"{base}/api/upload", files={"file": (name, fh)}).status_code == 200
    return base, http, lossy, plain


def test_every_route_says_an_original_was_lossy(lossy_study):
    base, http, lossy, plain = lossy_study
    sop = lossy.SOPInstanceUID
    expected = "ratio=18; method=ISO_15444_1"
    for url in (f"/download/instance/{sop}", f"/download/instance/{sop}?variant=lossless", f"/thumbnail/{sop}",
                f"/preview/{sop}", f"/preview/{sop}?variant=lossless", f"/dims/{sop}/format/png",
                f"/deepzoom/{sop}.dzi", f"/deepzoom/{sop}_files/0/0_0.png"):
        r = http.get(base + url)
        assert r.status_code == 200, (url, r.text[:200])
        assert r.headers.get("X-Lossy-Compression") == expected, url
    # a lossy copy of it: both steps, the cumulative ratio
    r = http.get(f"{base}/download/instance/{sop}?variant=lossy&ratio=5")
    method, = [p for p in r.headers["X-Lossy-Compression"].split("; ") if p.startswith("method=")]
    assert method == "method=ISO_15444_1\\ISO_15444_1"
    ratio = float(r.headers["X-Lossy-Compression"].split(";")[0].removeprefix("ratio="))
    assert 18 * 4 < ratio < 18 * 6
    # the plain original is not marked, its lossy copy is
    assert "X-Lossy-Compression" not in http.get(f"{base}/download/instance/{plain.SOPInstanceUID}").headers
    assert "X-Lossy-Compression" not in http.get(f"{base}/thumbnail/{plain.SOPInstanceUID}").headers
    assert "X-Lossy-Compression" in http.get(f"{base}/dims/{plain.SOPInstanceUID}/variant/lossy/format/png").headers
    bundle = http.get(f"{base}/download/study/{lossy.StudyInstanceUID}.zip")
    assert bundle.headers["X-Lossy-Compression"] == "instances=1/2"
    assert len(zipfile.ZipFile(io.BytesIO(bundle.content)).namelist()) == 2


def test_the_api_has_the_history(lossy_study):
    base, http, lossy, plain = lossy_study
    study = http.get(f"{base}/api/studies/{lossy.StudyInstanceUID}").json()
    rows = {i["sop_uid"]: i for i in study["instances"]}
    assert (rows[lossy.SOPInstanceUID]["lossy"], rows[lossy.SOPInstanceUID]["lossy_ratio"]) == (1, 18)
    assert rows[lossy.SOPInstanceUID]["lossy_methods"] == "ISO_15444_1"
    assert (rows[plain.SOPInstanceUID]["lossy"], rows[plain.SOPInstanceUID]["lossy_ratio"]) == (0, None)
    listed, = [s for s in http.get(f"{base}/api/studies").json() if s["study_uid"] == lossy.StudyInstanceUID]
    assert listed["lossy_originals"] == 1


def test_pages_flag_an_already_lossy_original_and_open_on_the_image_window(tmp_path, monkeypatch):
    """Study cards, the studies list, Compare and the viewer, rendered as the admin sees them."""
    import base64

    import numpy as np

    from app import create_app
    from core.auth import current_user
    from core.render import IMAGE_DEFAULT

    monkeypatch.setenv("RADPRESS_ADMIN_USER", ADMIN[0])
    monkeypatch.setenv("RADPRESS_ADMIN_PASSWORD", ADMIN[1])
    app = create_app(tmp_path / "data", run_jobs=False, demo=False)
    store = app.server.extensions["radpress"]["store"]
    lossy = make_dataset(**KINDS["already_lossy"])
    mr = make_dataset(**{**KINDS["u10"], "study_uid": lossy.StudyInstanceUID})
    windowed = make_dataset(**{**KINDS["u10"], "study_uid": lossy.StudyInstanceUID, "seed": 3})
    windowed.WindowCenter, windowed.WindowWidth = [400, 100], [700, 50]
    for ds in (lossy, mr, windowed):
        staged = write(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm")
        assert store.add_original(staged, ds, staged.name) == "stored"
    store.put_artifact(lossy.SOPInstanceUID, "lossy", 5, "j2k", "1.2.840.10008.1.2.4.91", b"stand-in", achieved_ratio=5.0)
    basic = "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()
    with app.server.test_request_context("/", headers={"Authorization": basic}):
        from pages import compare as compare_page
        from pages import study as study_page
        from pages import viewer as viewer_page

        study = str(study_page.layout(uid=lossy.StudyInstanceUID))
        assert study.count("Lossy original — JPEG 2000, compressed 18:1; its lossy copy: compressed 90:1 in total") == 1
        from core.studylist import study_page as studies_list

        assert studies_list(store, current_user()).rows[0]["lossy_originals"] == "⚠ 1 (compressed 18:1)"
        compare = str(compare_page.layout(sop=lossy.SOPInstanceUID))
        assert "Original is itself lossy (JPEG 2000, 18:1) — lossless copy of a lossy image" in compare
        assert "identical to the original" not in compare
        assert "LOSSLESS — identical to the original" in str(compare_page.layout(sop=mr.SOPInstanceUID))
        assert "Original is itself lossy (JPEG 2000, 18:1)" in str(viewer_page.layout(sop=lossy.SOPInstanceUID))
        viewer = str(viewer_page.layout(sop=mr.SOPInstanceUID, preset="Full range"))
        assert "Original is itself lossy" not in viewer
        assert f"/deepzoom/{mr.SOPInstanceUID}.dzi?preset=Full+range" in viewer and "lung" not in viewer
        # Compare opens an MR without a window on its central percentiles, one with a window on its first pair
        values = mr.pixel_array.astype(np.float64)
        lo, hi = np.percentile(values, [0.5, 99.5])
        assert compare_page.pick_window(IMAGE_DEFAULT, mr.SOPInstanceUID, 0) == (round((lo + hi) / 2, 2), round(hi - lo, 2))
        assert compare_page.pick_window(IMAGE_DEFAULT, windowed.SOPInstanceUID, 0) == (400, 700)
        assert compare_page.pick_window("Full range", mr.SOPInstanceUID, 0) == (
            round((values.min() + values.max()) / 2, 2), round(values.max() - values.min(), 2))


def test_cli_info_and_verify_name_the_lossy_history(tmp_path, capsys):
    import json

    from core.cli import main

    path = write(make_dataset(**KINDS["already_lossy"]), tmp_path / "in.dcm")
    assert main(["info", str(path), "--json"]) == 0
    row, = json.loads(capsys.readouterr().out)
    assert (row["lossy"], row["lossy_ratio"], row["lossy_methods"]) == (True, 18, ["ISO_15444_1"])
    assert main(["compress", str(path), "--codec", "htj2k", "--mode", "lossless", "--out", str(tmp_path / "out")]) == 0
    out, = (tmp_path / "out").iterdir()
    capsys.readouterr()
    assert main(["verify", str(path), str(out)]) == 0
    assert "LOSSY image (JPEG 2000, 18:1)" in capsys.readouterr().out


def test_demo_counts_only_the_lossy_originals_it_may_see(live_app, tmp_path):
    """A clinic's lossy upload into a demo study is not even counted for the demo login."""
    base, _app = live_app(demo=True, run_jobs=False)
    admin = requests.Session()
    admin.auth = ADMIN
    study_uid = "1.2.826.0.1.3680043.2.1143.3365540476747857567072393009509418480"  # emri_small, a demo sample
    path = write(make_dataset(**{**KINDS["already_lossy"], "study_uid": study_uid}), tmp_path / "lossy.dcm")
    assert admin.post(f"{base}/api/upload", files={"file": ("lossy.dcm", path.read_bytes())}).json()["results"][0]["status"] == "stored"
    listed = next(s for s in admin.get(f"{base}/api/studies").json() if s["study_uid"] == study_uid)
    assert listed["lossy_originals"] == 1
    demo = requests.Session()
    assert demo.post(f"{base}/login", data={"demo": "1"}, allow_redirects=False).status_code == 302
    listed = next(s for s in demo.get(f"{base}/api/studies").json() if s["study_uid"] == study_uid)
    assert listed["lossy_originals"] == 0


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"])
def test_a_dct_jpeg_under_a_lossless_jpeg_syntax_is_lossy(syntax, tmp_path):
    """A baseline (DCT) JPEG frame labelled JPEG Lossless was indexed as a lossless original (its decoder reads any
    JPEG); its frame header (SOF0, not the lossless SOF3) says what it is."""
    from PIL import Image
    from pydicom.encaps import encapsulate

    from core.ingest import ingest
    from core.store import Store

    out = make_dataset(rows=64, columns=64, bits_allocated=8, bits_stored=8, modality="OT")
    jpeg = io.BytesIO()
    Image.fromarray(out.pixel_array).save(jpeg, "JPEG", quality=50)
    out.PixelData = encapsulate([jpeg.getvalue()])
    out["PixelData"].VR, out["PixelData"].is_undefined_length = "OB", True
    out.file_meta.TransferSyntaxUID = syntax
    history = lossy_history(out)
    assert history.lossy and history.methods == ("ISO_10918_1",)
    store = Store(tmp_path / "data")
    [result] = ingest(store, [write(out, tmp_path / "relabelled.dcm")])
    assert result.status == "stored" and store.instance(out.SOPInstanceUID)["lossy"] == 1


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.110"])
def test_the_first_frame_is_read_past_a_long_basic_offset_table(syntax):
    """1,100 frames: the Basic Offset Table alone is 4.4 KB, and the first frame's header was looked for in the
    first 4 KB only, so a relabelled lossy multi-frame image was called lossless."""
    from pydicom.encaps import encapsulate, generate_frames

    codec = {"80": "jpegls", "110": "jxl"}.get(syntax.rsplit(".", 1)[1], "j2k")
    one = compress(make_dataset(**KINDS["u12_odd"]), codec, "lossy", 12).dataset
    frame = next(generate_frames(one.PixelData, number_of_frames=1))
    for keyword in ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        del one[keyword]
    one.NumberOfFrames = 1100
    one.PixelData = encapsulate([frame] * 1100, has_bot=True)
    one.file_meta.TransferSyntaxUID = syntax
    assert lossy_history(one).lossy


def test_a_lossless_jpeg_with_a_point_transform_is_lossy():
    """Process 14 with a point transform (Pt > 0 in the scan header) drops the low bits before coding: lossy, under
    a JPEG Lossless syntax too."""
    from pydicom.encaps import encapsulate, generate_frames

    from core.pixels import read_dataset
    from core.samples import sample

    ds = read_dataset(sample("JPEG-LL"))
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    assert not lossy_history(ds).lossy
    sos = frame.find(b"\xff\xda")
    frame[sos + 4 + 1 + 2 * frame[sos + 4] + 2] |= 0x02  # Al, the point transform, 2
    ds.PixelData = encapsulate([bytes(frame)])
    del ds.LossyImageCompression
    history = lossy_history(ds)
    assert history.lossy and history.methods == ("ISO_10918_1",)


def test_a_lossy_ratio_or_method_without_the_flag_is_lossy():
    """A file naming its lossy compression (ratio 10, JPEG) but without Lossy Image Compression (0028,2110), which
    those attributes require: lossy, as it says; "00" written out is taken at its word."""
    ds = make_dataset(**KINDS["u12_odd"])
    ds.LossyImageCompressionRatio, ds.LossyImageCompressionMethod = 10, "ISO_10918_1"
    history = lossy_history(ds)
    assert history.lossy and history.methods == ("ISO_10918_1",) and history.cumulative_ratio == 10
    ds.LossyImageCompression = "00"
    assert not lossy_history(ds).lossy


def test_empty_lossy_attributes_without_the_flag_say_nothing():
    ds = make_dataset(**KINDS["u12_odd"])
    ds.LossyImageCompressionRatio, ds.LossyImageCompressionMethod = None, ""
    assert not lossy_history(ds).lossy
