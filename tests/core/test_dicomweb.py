"""DICOMweb against the running app, driven by the dicomweb-client package (a client nobody here wrote)."""

import io

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, HTJ2KLosslessRPCL, JPEG2000Lossless, JPEGLSLossless

from core.codecs import codec_for_uid
from core.dicomweb import FRAME_TYPES
from core.pixels import decode_all, pixel_spec
from core.users import Users
from tests.conftest import ADMIN
from tests.synthetic import KINDS, make_dataset

STOW_KINDS = ("s12", "rgb", "multiframe", "mono1", "big_endian", "ybr_full", "enhanced_ct", "u8_odd")


@pytest.fixture
def node(live_app):
    """The app with synthetic instances stored through STOW-RS (three in study P1, the other kinds in P2), and an admin client."""
    base, app = live_app(demo=False)
    client = DICOMwebClient(f"{base}/dicom-web", session=create_session_from_user_pass(*ADMIN))
    study, study2 = make_dataset(**KINDS["s12"]).StudyInstanceUID, make_dataset(**KINDS["s12"]).StudyInstanceUID
    datasets = []
    for n, kind in enumerate(STOW_KINDS):
        ds = make_dataset(**KINDS[kind], study_uid=study if n < 3 else study2, seed=n)
        ds.PatientName = "Doe^Jane" if n < 3 else "Roe^Rick"
        ds.PatientID = "P1" if n < 3 else "P2"
        ds.StudyDate = "20240105" if n < 3 else "20230101"
        ds.SeriesNumber = n + 1
        datasets.append(ds)
    answer = client.store_instances(datasets)
    assert len(answer.ReferencedSOPSequence) == len(STOW_KINDS) and "FailedSOPSequence" not in answer
    return base, app, client, datasets


def test_qido_answers_from_the_index(node):
    base, _, client, datasets = node
    studies = client.search_for_studies()
    assert [s["00100020"]["Value"][0] for s in studies] == ["P1", "P2"]
    jane = client.search_for_studies(search_filters={"PatientName": "doe*"})
    assert len(jane) == 1 and jane[0]["00201208"]["Value"] == [3] and jane[0]["00201206"]["Value"] == [3]
    assert sorted(jane[0]["00080061"]["Value"]) == ["CT", "MR", "US"]
    assert client.search_for_studies(search_filters={"StudyDate": "20240101-20241231"})[0]["0020000D"]["Value"] == [
        datasets[0].StudyInstanceUID]
    assert len(client.search_for_studies(limit=1, offset=1)) == 1
    series = client.search_for_series(datasets[0].StudyInstanceUID)
    assert {s["0020000E"]["Value"][0] for s in series} == {d.SeriesInstanceUID for d in datasets[:3]}
    instances = client.search_for_instances(datasets[2].StudyInstanceUID, datasets[2].SeriesInstanceUID)
    assert [i["00080018"]["Value"][0] for i in instances] == [datasets[2].SOPInstanceUID]
    assert instances[0]["00280008"]["Value"] == [5]
    bad = requests.get(f"{base}/dicom-web/studies?StudyDate=yesterday", auth=ADMIN)
    assert bad.status_code == 400 and "YYYYMMDD" in bad.json()["error"]


def _pixels_equal(received, original) -> None:
    assert received.SOPInstanceUID == original.SOPInstanceUID  # lossless: the same instance
    assert np.array_equal(decode_all(received), decode_all(original))


def _retrieve(client, base, ds, syntax):
    """One instance in *syntax*; dicomweb-client does not know the HTJ2K syntaxes, so those go through requests."""
    ids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    if not syntax.startswith("1.2.840.10008.1.2.4.20"):
        return client.retrieve_instance(*ids, media_types=(("application/dicom", syntax),))
    answer = requests.get(f"{base}/dicom-web/studies/{ids[0]}/series/{ids[1]}/instances/{ids[2]}", auth=ADMIN,
                          headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'})
    assert answer.status_code == 200, answer.text
    [part] = list(client._decode_multipart_message(answer, stream=False))
    return dcmread(io.BytesIO(part))


def test_wado_lossless_syntaxes_are_bit_exact(node):
    base, _, client, datasets = node
    for syntax in (ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, HTJ2KLosslessRPCL, "1.2.840.10008.1.2.4.201"):
        for original in datasets:
            got = _retrieve(client, base, original, str(syntax))
            assert got.file_meta.TransferSyntaxUID == syntax
            assert got.get("LossyImageCompression", "00") == "00"
            _pixels_equal(got, original)


def test_wado_star_gives_what_is_stored_and_study_retrieval(node):
    base, app, client, datasets = node
    store = app.server.extensions["radpress"]["store"]
    first = datasets[0]
    got = client.retrieve_instance(first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID,
                                   media_types=(("application/dicom", "*"),))
    stored = store.artifact(first.SOPInstanceUID, "original").path.read_bytes()
    buffer = io.BytesIO()
    got.save_as(buffer, enforce_file_format=True)
    assert dcmread(io.BytesIO(stored)).SOPInstanceUID == got.SOPInstanceUID
    assert np.array_equal(decode_all(dcmread(io.BytesIO(stored))), decode_all(got))
    study = client.retrieve_study(first.StudyInstanceUID)
    assert sorted(d.SOPInstanceUID for d in study) == sorted(d.SOPInstanceUID for d in datasets[:3])


def test_wado_lossy_only_when_named_and_allowed(node):
    base, app, client, datasets = node
    first = datasets[0]
    url = f"{base}/dicom-web/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}"
    store = app.server.extensions["radpress"]["store"]
    from core.archive import variant_file

    lossy_syntax = variant_file(store, first.SOPInstanceUID, "lossy").transfer_syntax
    answer = requests.get(url, auth=ADMIN, headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={lossy_syntax}'})
    assert answer.status_code == 200 and "X-Lossy-Compression" in answer.headers
    got = client.retrieve_instance(first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID,
                                   media_types=(("application/dicom", lossy_syntax),))
    assert got.LossyImageCompression == "01" and got.SOPInstanceUID != first.SOPInstanceUID
    refused = requests.get(url, auth=ADMIN, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'})
    assert refused.status_code == 406 and "not served" in refused.json()["error"]
    from dataclasses import replace

    store.set_policy(replace(store.policy(), lossy_enabled=False))
    off = requests.get(url, auth=ADMIN, headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={lossy_syntax}'})
    assert off.status_code == 406 and "switched off" in off.json()["error"]


def test_metadata_frames_rendered_thumbnail(node):
    base, _, client, datasets = node
    multi = datasets[2]
    ids = (multi.StudyInstanceUID, multi.SeriesInstanceUID, multi.SOPInstanceUID)
    meta = client.retrieve_instance_metadata(*ids)
    assert meta["00080018"]["Value"] == [multi.SOPInstanceUID] and "BulkDataURI" in meta["7FE00010"]
    frames = client.retrieve_instance_frames(*ids, frame_numbers=[2, 5], media_types=(("application/octet-stream", "*"),))
    expected = decode_all(multi)
    for data, index in zip(frames, (1, 4)):
        assert np.array_equal(np.frombuffer(data, "<u2").reshape(expected.shape[1:]), expected[index])
    url = f"{base}/dicom-web/studies/{ids[0]}/series/{ids[1]}/instances/{ids[2]}"
    for media in ("image/jphc", "image/jls", "image/jp2"):
        if media == "image/jphc":  # not known to dicomweb-client
            answer = requests.get(f"{url}/frames/3", auth=ADMIN, headers={"Accept": f'multipart/related; type="{media}"'})
            assert answer.status_code == 200, answer.text
            [frame] = list(client._decode_multipart_message(answer, stream=False))
        else:
            [frame] = client.retrieve_instance_frames(*ids, frame_numbers=[3], media_types=((media,),))
        assert np.array_equal(codec_for_uid(FRAME_TYPES[media]).decode(frame, pixel_spec(multi)), expected[2])
    narrow, wide = (client.retrieve_instance_rendered(*ids, media_types=("image/png",), params={"window": w})
                    for w in ("2000,400", "2000,4000"))
    assert narrow[:8] == wide[:8] == b"\x89PNG\r\n\x1a\n" and narrow != wide  # the window from the query is applied
    assert requests.get(f"{url}/rendered?window=40,-1", auth=ADMIN).status_code == 400
    thumb = requests.get(f"{base}/dicom-web/studies/{multi.StudyInstanceUID}/thumbnail", auth=ADMIN)
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/png"
    from PIL import Image

    small = requests.get(f"{url}/rendered", auth=ADMIN, params={"viewport": "32,32"}, headers={"Accept": "image/jpeg"})
    assert small.headers["X-Lossy-Compression"] == "rendering=JPEG" and Image.open(io.BytesIO(small.content)).size == (32, 32)
    windowed = requests.get(f"{url}/thumbnail", auth=ADMIN, params={"window": "2000,400"})
    assert Image.open(io.BytesIO(windowed.content)).size == (64, 64)  # 64 x 64 frames fit the 256 thumbnail as they are
    assert requests.get(f"{url}/rendered", auth=ADMIN, params={"viewport": "0,10"}).status_code == 400
    linked = requests.get(f"{url}/rendered", auth=ADMIN, params={"accept": "image/jpeg"})  # a link cannot set headers
    assert linked.headers["Content-Type"] == "image/jpeg"
    bad = requests.get(f"{base}/dicom-web/studies/{ids[0]}/series/{ids[1]}/instances/{ids[2]}/frames/6", auth=ADMIN)
    assert bad.status_code == 404


def test_stow_results_and_conflicts(node):
    base, _, client, datasets = node
    again = client.store_instances([datasets[0]])
    assert again.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == datasets[0].SOPInstanceUID  # a duplicate is fine
    changed = make_dataset(**KINDS["u10"], seed=9)
    changed.SOPInstanceUID, changed.StudyInstanceUID, changed.SeriesInstanceUID = (
        datasets[0].SOPInstanceUID, datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID)
    other = make_dataset(**KINDS["u8_odd"])
    boundary = "b0undary"
    body = b""
    for ds in (changed, other):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buffer.getvalue() + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n" + f"--{boundary}\r\n".encode()
    answer = requests.post(f"{base}/dicom-web/studies/{datasets[0].StudyInstanceUID}", auth=ADMIN, data=body,
                           headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert answer.status_code == 409, answer.text
    failed = answer.json()["00081198"]["Value"]
    assert [f["00081155"]["Value"][0] for f in failed] == [changed.SOPInstanceUID, other.SOPInstanceUID]
    assert [f["00081197"]["Value"][0] for f in failed] == [0x0111, 0xA900]  # a conflict; another study
    assert "conflict" in answer.headers["Warning"] and "not " + datasets[0].StudyInstanceUID in answer.headers["Warning"]
    good, cut = io.BytesIO(), io.BytesIO()
    make_dataset(**KINDS["u12_odd"]).save_as(good, enforce_file_format=True)
    make_dataset(**KINDS["u16"]).save_as(cut, enforce_file_format=True)
    truncated = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + good.getvalue()
                 + f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + cut.getvalue()[:5000])
    partial = requests.post(f"{base}/dicom-web/studies", auth=ADMIN, data=truncated,
                            headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert partial.status_code == 202 and "ends inside a part" in partial.headers["Warning"]
    assert len(partial.json()["00081199"]["Value"]) == 1  # the complete part before the cut is stored
    junk = requests.post(f"{base}/dicom-web/studies", auth=ADMIN, data=b"not a multipart body",
                         headers={"Content-Type": "application/dicom"})
    assert junk.status_code == 400


def test_login_roles_and_json_errors(node):
    base, app, _, datasets = node
    first = datasets[0]
    assert requests.get(f"{base}/dicom-web/studies").status_code == 401
    for path in ("/dicom-web", "/dicom-web/", "/dicom-web/nothing/here"):  # JSON, never the app's HTML page
        answer = requests.get(base + path, auth=ADMIN)
        assert answer.status_code == 404 and "No DICOMweb route" in answer.json()["error"], path
    store = app.server.extensions["radpress"]["store"]
    Users(store).add("rad", "rad-password-1", "radiologist")
    Users(store).add("other", "other-password-1", "radiologist")
    from core.users import set_readers

    set_readers(store, first.StudyInstanceUID, ["rad"], by="admin")
    other = ("other", "other-password-1")
    url = f"{base}/dicom-web/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}"
    assert [s["00100020"]["Value"][0] for s in requests.get(f"{base}/dicom-web/studies", auth=other).json()] == ["P2"]
    for path in ("", "/metadata", "/frames/1", "/rendered", "/thumbnail"):
        answer = requests.get(url + path, auth=other)
        assert answer.status_code == 403, path
    assert requests.get(url, auth=("rad", "rad-password-1")).status_code == 200
    assert requests.get(f"{url}/metadata", auth=("rad", "rad-password-1")).status_code == 200
    log = requests.get(f"{base}/api/access-log", params={"user": "rad"}, auth=ADMIN).json()
    assert {(e["action"], e["study_uid"]) for e in log} == {("download", first.StudyInstanceUID), ("view", first.StudyInstanceUID)}
    stow = requests.post(f"{base}/dicom-web/studies", auth=other, data=b"x",
                         headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'})
    assert stow.status_code == 403


def test_already_lossy_original_keeps_its_label(node):
    base, _, client, _ = node
    lossy = make_dataset(**KINDS["already_lossy"])
    client.store_instances([lossy])
    url = f"{base}/dicom-web/studies/{lossy.StudyInstanceUID}/series/{lossy.SeriesInstanceUID}/instances/{lossy.SOPInstanceUID}"
    for accept in ('multipart/related; type="application/dicom"; transfer-syntax=*',
                   'multipart/related; type="application/dicom"'):
        answer = requests.get(url, auth=ADMIN, headers={"Accept": accept})
        assert answer.status_code == 200 and "X-Lossy-Compression" in answer.headers, accept
        [part] = list(client._decode_multipart_message(answer, stream=False))
        assert dcmread(io.BytesIO(part)).LossyImageCompression == "01"
    [found] = client.search_for_instances(search_filters={"SOPInstanceUID": lossy.SOPInstanceUID})
    assert found["00282110"]["Value"] == ["01"]


def test_unsupported_query_keys_warn_and_cors(node, monkeypatch):
    base, _, _, _ = node
    answer = requests.get(f"{base}/dicom-web/studies?ReferringPhysicianName=X&00100020=P2", auth=ADMIN)
    assert answer.status_code == 200 and "ReferringPhysicianName" in answer.headers["Warning"]
    assert [s["00100020"]["Value"][0] for s in answer.json()] == ["P2"]  # the tag form of PatientID matched
    monkeypatch.setenv("RADPRESS_CORS_ORIGINS", "https://viewer.example")
    preflight = requests.options(f"{base}/dicom-web/studies", headers={
        "Origin": "https://viewer.example", "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == "https://viewer.example"
    assert preflight.content == b""
    other = requests.get(f"{base}/dicom-web/studies", auth=ADMIN, headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers
    assert requests.get(f"{base}/dicom-web/studies", headers={"Origin": "https://viewer.example"}).status_code == 401


# One encoding per SOP Instance UID (emri_small's other encodings share its UID: they would be conflicts).
REAL_SAMPLES = ("693_J2KR", "US1_J2KR", "emri_small_RLE", "OBXXXX1A_rle_2frame", "SC_rgb_expb_16bit_2frame",
                "JPGLosslessP14SV1_1s_1f_8b", "gdcm-US-ALOKA-16_big")


def _instance_bytes(client, base, ds, syntax: str) -> bytes:
    answer = requests.get(f"{base}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
                          f"{ds.SOPInstanceUID}", auth=ADMIN,
                          headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'})
    assert answer.status_code == 200, (syntax, answer.text)
    [part] = list(client._decode_multipart_message(answer, stream=False))
    return part


def test_real_samples_as_stored_decoded_and_htj2k(node):
    """pydicom-data files in their own syntaxes: * is the file byte for byte; decoded and HTJ2K give its pixels."""
    from core.samples import sample

    base, _, client, _ = node
    paths = [sample(name) for name in REAL_SAMPLES]
    originals = [dcmread(p) for p in paths]
    body = b"".join(b"--sample\r\nContent-Type: application/dicom\r\n\r\n" + p.read_bytes() + b"\r\n" for p in paths)
    stored = requests.post(f"{base}/dicom-web/studies", auth=ADMIN, data=body + b"--sample--\r\n",
                           headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=sample'})
    assert stored.status_code == 200 and len(stored.json()["00081199"]["Value"]) == len(paths), stored.headers.get("Warning")
    for path, original in zip(paths, originals):
        assert _instance_bytes(client, base, original, "*") == path.read_bytes(), path.name
        for syntax in (ExplicitVRLittleEndian, "1.2.840.10008.1.2.4.201"):
            got = dcmread(io.BytesIO(_instance_bytes(client, base, original, syntax)))
            assert got.file_meta.TransferSyntaxUID == syntax
            _pixels_equal(got, original)


def test_non_image_objects_are_served_as_stored(node):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import generate_uid

    base, _, client, datasets = node
    sr = Dataset()
    sr.SOPClassUID, sr.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", generate_uid()  # Basic Text SR
    sr.StudyInstanceUID, sr.SeriesInstanceUID = datasets[0].StudyInstanceUID, generate_uid()
    sr.PatientName, sr.PatientID, sr.StudyDate, sr.Modality = "Doe^Jane", "P1", "20240105", "SR"
    sr.ValueType, sr.ContentSequence = "CONTAINER", []
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    answer = client.store_instances([sr])
    assert answer.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sr.SOPInstanceUID
    [found] = client.search_for_instances(search_filters={"SOPInstanceUID": sr.SOPInstanceUID})
    assert "00280010" not in found  # no Rows: not an image
    got = dcmread(io.BytesIO(_instance_bytes(client, base, sr, "*")))
    assert got.SOPInstanceUID == sr.SOPInstanceUID and got.ValueType == "CONTAINER"
    url = f"{base}/dicom-web/studies/{sr.StudyInstanceUID}/series/{sr.SeriesInstanceUID}/instances/{sr.SOPInstanceUID}"
    refused = requests.get(url, auth=ADMIN, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90'})
    assert refused.status_code == 406 and "holds no image" in refused.json()["error"]
    study = requests.get(f"{base}/dicom-web/studies/{sr.StudyInstanceUID}", auth=ADMIN,
                          headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90'})
    assert study.status_code == 200  # in a study, the report comes as stored beside the images in JPEG 2000
    parts = [dcmread(io.BytesIO(p)) for p in client._decode_multipart_message(study, stream=False)]
    assert {str(p.file_meta.TransferSyntaxUID) for p in parts if p.SOPInstanceUID != sr.SOPInstanceUID} == {"1.2.840.10008.1.2.4.90"}
    assert [str(p.file_meta.TransferSyntaxUID) for p in parts if p.SOPInstanceUID == sr.SOPInstanceUID] == [ExplicitVRLittleEndian]
    meta = requests.get(f"{url}/metadata", auth=ADMIN).json()[0]
    assert "7FE00010" not in meta and meta["0040A040"]["Value"] == ["CONTAINER"]
    assert requests.get(f"{url}/rendered", auth=ADMIN).status_code == 406
    assert requests.get(f"{url}/frames/1", auth=ADMIN).status_code == 404


def test_demo_login_sees_sample_instances_only(live_app):
    """A clinic instance stored into a demo sample's study stays invisible to the demo login over DICOMweb."""
    from core.samples import sample

    base, _ = live_app(demo=True, run_jobs=False)
    emri = dcmread(sample("emri_small"), stop_before_pixels=True)
    clinic = make_dataset(**KINDS["u12_odd"], study_uid=emri.StudyInstanceUID)
    clinic.PatientName = "Clinic^Only"
    admin = DICOMwebClient(f"{base}/dicom-web", session=create_session_from_user_pass(*ADMIN))
    admin.store_instances([clinic])
    demo = requests.Session()
    assert demo.post(f"{base}/login", data={"demo": "1"}, allow_redirects=False).status_code == 302
    web = f"{base}/dicom-web"
    study = next(s for s in demo.get(f"{web}/studies").json() if s["0020000D"]["Value"] == [emri.StudyInstanceUID])
    as_admin = next(s for s in admin.search_for_studies() if s["0020000D"]["Value"] == [emri.StudyInstanceUID])
    assert study["00201208"]["Value"][0] == as_admin["00201208"]["Value"][0] - 1  # the clinic instance is not counted
    instances = demo.get(f"{web}/studies/{emri.StudyInstanceUID}/instances").json()
    assert instances and clinic.SOPInstanceUID not in {i["00080018"]["Value"][0] for i in instances}
    metadata = demo.get(f"{web}/studies/{emri.StudyInstanceUID}/metadata")
    assert metadata.status_code == 200 and "Clinic" not in metadata.text
    url = f"{web}/studies/{emri.StudyInstanceUID}/series/{clinic.SeriesInstanceUID}/instances/{clinic.SOPInstanceUID}"
    for path in ("", "/metadata", "/frames/1", "/rendered"):
        assert demo.get(url + path).status_code == 403, path
    study_parts = demo.get(f"{web}/studies/{emri.StudyInstanceUID}", headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert study_parts.status_code == 200 and clinic.SOPInstanceUID.encode() not in study_parts.content
    assert demo.post(f"{web}/studies", data=b"x", headers={"Content-Type": 'multipart/related; boundary=x'}).status_code == 403


def test_bulk_data_of_a_big_endian_file_is_little_endian(node):
    """The palette of a big-endian US image reaches a viewer in the byte order DICOMweb promises (PS3.18: little endian)."""
    from core.samples import sample

    base, _, client, _ = node
    big, little = dcmread(sample("gdcm-US-ALOKA-16_big")), dcmread(sample("gdcm-US-ALOKA-16"))
    client.store_instances([big])
    meta = client.retrieve_instance_metadata(big.StudyInstanceUID, big.SeriesInstanceUID, big.SOPInstanceUID)
    lut = meta["00281221"]  # Segmented Red Palette Color Lookup Table Data (86 kB: bulk data)
    from urllib.parse import urlsplit

    # dicomweb-client sends "Host: 127.0.0.1" without the port, so the URI is built on that host: ask at its path.
    answer = requests.get(base + urlsplit(lut["BulkDataURI"]).path, auth=ADMIN)
    assert answer.status_code == 200, answer.text
    [data] = list(client._decode_multipart_message(answer, stream=False))
    assert data == little.SegmentedRedPaletteColorLookupTableData != big.SegmentedRedPaletteColorLookupTableData
    single = requests.get(base + urlsplit(lut["BulkDataURI"]).path, auth=ADMIN, headers={"Accept": "application/octet-stream"})
    assert single.headers["Content-Type"] == "application/octet-stream" and single.content == data  # OHIF's singlepart


def test_metadata_describes_frames_as_served_for_a_jpeg_ybr_422_original(node):
    """A viewer reading octet-stream frames of a JPEG baseline YBR_FULL_422 image must be told they are YBR_FULL."""
    from core.pixels import decode_frame
    from core.samples import sample

    base, _, client, _ = node
    path = sample("color3d_jpeg_baseline")
    original = dcmread(path)
    assert original.PhotometricInterpretation == "YBR_FULL_422"
    stored = requests.post(f"{base}/dicom-web/studies", auth=ADMIN,
                           data=b"--x\r\nContent-Type: application/dicom\r\n\r\n" + path.read_bytes() + b"\r\n--x--\r\n",
                           headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'})
    assert stored.status_code == 200, stored.headers.get("Warning")
    ids = (original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID)
    meta = client.retrieve_instance_metadata(*ids)
    assert meta["00280004"]["Value"] == ["YBR_FULL"] and meta["00280008"]["Value"] == [120]
    [frame] = client.retrieve_instance_frames(*ids, frame_numbers=[7], media_types=(("application/octet-stream", "*"),))
    assert frame == decode_frame(original, 6).tobytes() and len(frame) == 480 * 640 * 3


def test_an_instance_that_cannot_be_transcoded_is_a_4xx_before_any_byte(node):
    """A study with a 32-bit image asked for in JPEG-LS: refused whole with the reason, never a cut multipart answer."""
    base, _, client, datasets = node
    wide = make_dataset(rows=16, columns=16, bits_allocated=32, bits_stored=32, study_uid=datasets[0].StudyInstanceUID)
    client.store_instances([wide])
    answer = requests.get(f"{base}/dicom-web/studies/{wide.StudyInstanceUID}", auth=ADMIN,
                          headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80'})
    assert 400 <= answer.status_code < 500 and "Bits Allocated" in answer.json()["error"]


OHIF_ACCEPT = ("multipart/related; type=image/jphc; transfer-syntax=1.2.840.10008.1.2.4.201, "
               "multipart/related; type=application/octet-stream; transfer-syntax=*")


def test_frames_choose_per_instance_htj2k_or_octet_stream(live_app, tmp_path):
    """OHIF's two alternatives: YBR_FULL frames come as octet-stream (OHIF 3.13.2 shows its HTJ2K wrongly), grayscale
    and RGB as HTJ2K, from the stored lossless HTJ2K copy where one exists, else a cached transcode; bit-exact by ojph_expand."""
    from dataclasses import replace

    from pydicom.encaps import get_frame

    from core.archive import _cache
    from core.pixels import read_dataset
    from tests.checkers import tool_pixels
    from tests.core.test_routes import wait_jobs

    base, app = live_app(demo=False)
    store = app.server.extensions["radpress"]["store"]
    store.set_policy(replace(store.policy(), strategy=1, lossless_codec="htj2k"))
    client = DICOMwebClient(f"{base}/dicom-web", session=create_session_from_user_pass(*ADMIN))
    gray, rgb, ybr = (make_dataset(**KINDS[k], seed=n) for n, k in enumerate(("u12_odd", "rgb", "ybr_full")))
    client.store_instances([gray, rgb, ybr])
    http = requests.Session()
    http.auth = ADMIN
    wait_jobs(http, base)
    store.remove_artifact(store.artifact(rgb.SOPInstanceUID, "lossless"))  # RGB: no stored copy, a transcode

    def frame(ds, accept=OHIF_ACCEPT):
        url = (f"{base}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
               f"/instances/{ds.SOPInstanceUID}/frames/1")
        answer = http.get(url, headers={"Accept": accept})
        assert answer.status_code == 200, answer.text
        [part] = list(client._decode_multipart_message(answer, stream=False))
        return answer.headers["Content-Type"], part

    kind, data = frame(ybr)
    assert "application/octet-stream" in kind and "jphc" not in kind, kind
    assert data == decode_all(ybr)[0].tobytes()
    stored = store.artifact(gray.SOPInstanceUID, "lossless")
    assert stored.transfer_syntax == HTJ2KLosslessRPCL
    for ds in (gray, rgb):
        kind, data = frame(ds)
        assert "image/jphc" in kind, kind
        assert np.array_equal(tool_pixels("htj2k", data, pixel_spec(ds), tmp_path), decode_all(ds)[0])
        if ds is gray:  # the stored copy's codestream as it is, not a new encoding
            assert data == get_frame(read_dataset(stored.path).PixelData, 0, number_of_frames=1)
        else:  # the transcode is cached for the viewer's next request
            original = store.artifact(ds.SOPInstanceUID, "original")
            assert _cache(store).get(f"{original.checksum}:frame:{FRAME_TYPES['image/jphc']}:1") == data
    refused = http.get(f"{base}/dicom-web/studies/{ybr.StudyInstanceUID}/series/{ybr.SeriesInstanceUID}"
                       f"/instances/{ybr.SOPInstanceUID}/frames/1", headers={"Accept": 'multipart/related; type="image/jphc"'})
    assert refused.status_code == 406 and "YBR_FULL" in refused.json()["error"]


def test_a_stow_part_is_one_instance_never_an_archive(live_app):
    """A part of zeros (an empty tar to an archive reader) answered 200 with nothing stored or failed; a zip part was unpacked."""
    import zipfile

    base, _ = live_app(demo=False, run_jobs=False)
    inner = make_dataset(**KINDS["u8_odd"])
    dicom, zipped = io.BytesIO(), io.BytesIO()
    inner.save_as(dicom, enforce_file_format=True)
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("a.dcm", dicom.getvalue())
    for payload in (bytes(10240), zipped.getvalue()):
        body = b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + payload + b"\r\n--XX--\r\n"
        answer = requests.post(f"{base}/dicom-web/studies", auth=ADMIN, data=body,
                               headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=XX'})
        assert answer.status_code == 409 and len(answer.json()["00081198"]["Value"]) == 1, answer.text
        assert "not DICOM" in answer.headers["Warning"]
    found = requests.get(f"{base}/dicom-web/instances", params={"SOPInstanceUID": inner.SOPInstanceUID}, auth=ADMIN)
    assert found.json() == []


def test_no_blank_rendering_and_no_mislabelled_jpeg_xl_recompression(live_app):
    """window=nan,1 rendered a blank PNG (200); transfer-syntax .111 sent our lossless JPEG XL labelled as a recompressed JPEG."""
    base, _ = live_app(demo=False, run_jobs=False)
    multi = make_dataset(**KINDS["multiframe"])
    DICOMwebClient(f"{base}/dicom-web", session=create_session_from_user_pass(*ADMIN)).store_instances([multi])
    url = f"{base}/dicom-web/studies/{multi.StudyInstanceUID}/series/{multi.SeriesInstanceUID}/instances/{multi.SOPInstanceUID}"
    for window in ("nan,1", "inf,inf", "40,nan"):
        answer = requests.get(f"{url}/rendered", auth=ADMIN, params={"window": window})
        assert answer.status_code == 400 and "finite" in answer.json()["error"], window
    recompression = requests.get(url, auth=ADMIN, headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.111'})
    assert recompression.status_code == 406 and "recompressed JPEG" in recompression.json()["error"]
