"""The DICOM node against DCMTK's clients (echoscu, storescu, findscu, getscu, movescu, storescp): nobody here wrote them."""

from __future__ import annotations

import io
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from app import create_app
from core.dimse import DicomNode, NodeConfig, parse_peers, set_peers
from core.errors import InvalidOptionError
from core.pixels import decode_all, read_dataset
from tests.checkers import require
from tests.synthetic import KINDS, make_dataset, write

DEST = "MOVEDEST"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dcmtk(tool: str, *args, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([require(tool), *map(str, args)], capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, f"{tool} failed ({proc.returncode}): {proc.stderr or proc.stdout}"
    return proc


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """The app with its DICOM node on a free port; C-MOVE may send to DEST (a storescp started by a test)."""
    dest_port = _free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RADPRESS_DICOM_PEERS", f"{DEST}@127.0.0.1:{dest_port}")
        mp.setenv("RADPRESS_ADMIN_USER", "admin")
        mp.setenv("RADPRESS_ADMIN_PASSWORD", "correct-horse")
        app = create_app(tmp_path_factory.mktemp("dimse") / "data", demo=False, run_jobs=False, dicom_port=0)
    node: DicomNode = app.server.extensions["radpress"]["dicom"]
    node.dest_port, node.app = dest_port, app
    yield node
    node.stop()


def _peer(node) -> list:
    return ["-aec", "RADPRESS", "127.0.0.1", node.port]


def _study(tmp_path: Path, kinds: list[str], **extra) -> tuple[str, list[Path]]:
    """Files of several kinds in one new study (two series), written by the synthetic factory."""
    study, series = generate_uid(), [generate_uid(), generate_uid()]
    paths = [write(make_dataset(**{**KINDS[k], **extra},
                                study_uid=study, series_uid=series[i % 2], seed=i), tmp_path / f"{i}-{k}.dcm")
             for i, k in enumerate(kinds)]
    return study, paths


def _compressed(tmp_path: Path, kind: str, syntax) -> Path:
    ds = make_dataset(**KINDS[kind])
    ds.compress(syntax)
    return write(ds, tmp_path / f"{kind}-{syntax.name.replace(' ', '_')}.dcm")


def _jobs(node, study: str) -> int:
    return node.store.query("SELECT count(*) FROM jobs WHERE study_uid=?", (study,))[0][0]


def _stored(node, sop: str) -> pydicom.Dataset:
    return read_dataset(node.store.artifact(sop, "original").path)


def test_echo(node):
    assert "Received Echo Response (Success)" in dcmtk("echoscu", "-v", *_peer(node)).stderr + \
        dcmtk("echoscu", "-v", *_peer(node)).stdout


def test_store_one_association_is_one_job_per_study(node, tmp_path):
    study, paths = _study(tmp_path, ["s12", "u12_odd", "mono1", "multiframe", "enhanced_ct", "big_endian", "already_lossy"])
    other, more = _study(tmp_path / "b", ["rgb", "ybr_full", "u8_odd"])
    dcmtk("storescu", *_peer(node), *paths, *more)
    for path in paths + more:
        sent = read_dataset(path)
        stored = _stored(node, sent.SOPInstanceUID)
        assert np.array_equal(decode_all(stored), decode_all(sent)), path.name
        assert stored.StudyInstanceUID == sent.StudyInstanceUID
    assert node.store.instance(read_dataset(paths[-1]).SOPInstanceUID)["lossy"]  # already lossy stays known as such
    assert (_jobs(node, study), _jobs(node, other)) == (1, 1)  # not one per instance


@pytest.mark.parametrize("syntax, propose", [(JPEGLSLossless, "-xt"), (JPEG2000Lossless, "-xv"), (RLELossless, "-xr")],
                         ids=["jpeg-ls", "j2k", "rle"])
def test_store_compressed_is_kept_as_sent(node, tmp_path, syntax, propose):
    path = _compressed(tmp_path, "s12", syntax)
    dcmtk("storescu", propose, *_peer(node), path)  # the sender proposes the file's compressed syntax
    sent, stored = read_dataset(path), _stored(node, read_dataset(path).SOPInstanceUID)
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert stored.PixelData == sent.PixelData  # the codestream itself, not a re-encoding


def test_store_lossy_jpeg_is_known_as_lossy(node, tmp_path):
    """A modality's JPEG baseline image is already lossy: stored as sent and never called lossless (C-FIND says 01)."""
    from core.samples import pydicom_test_dir

    ds = pydicom.dcmread(pydicom_test_dir() / "SC_rgb_jpeg_dcmtk.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.save_as(tmp_path / "jpeg.dcm")
    dcmtk("storescu", "-xy", *_peer(node), tmp_path / "jpeg.dcm")
    stored = _stored(node, ds.SOPInstanceUID)
    assert stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID and stored.PixelData == ds.PixelData
    [match] = _find(node, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={ds.StudyInstanceUID}",
                    "SOPInstanceUID", "LossyImageCompression")
    assert match.LossyImageCompression == "01"


def test_store_deflated_from_a_sender_that_offers_only_that(node, tmp_path):
    from pynetdicom import AE
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = make_dataset(**KINDS["u16"])
    scu = AE(ae_title="DEFLATER")
    scu.add_requested_context(ds.SOPClassUID, [DeflatedExplicitVRLittleEndian])
    assoc = scu.associate("127.0.0.1", node.port, ae_title="RADPRESS")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status.Status == 0x0000
    stored = _stored(node, ds.SOPInstanceUID)
    assert stored.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert np.array_equal(decode_all(stored), decode_all(ds))


def test_an_aborted_association_still_queues_its_study(node):
    """What was stored before a sender aborts is archived: its study gets its job when the connection closes."""
    from pynetdicom import AE

    ds = make_dataset(**KINDS["s12"])
    scu = AE(ae_title="ABORTER")
    scu.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = scu.associate("127.0.0.1", node.port, ae_title="RADPRESS")
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.abort()
    deadline = time.monotonic() + 10
    while _jobs(node, ds.StudyInstanceUID) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _jobs(node, ds.StudyInstanceUID) == 1


def test_store_refuses_invalid_with_reason_and_keeps_nothing(node, tmp_path):
    ds = make_dataset(rows=32, columns=32)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.03.4"  # leading zero: not a UID
    path = write(ds, tmp_path / "bad.dcm")
    proc = dcmtk("storescu", "-d", *_peer(node), path, ok=False)
    assert "DIMSE Status                  : 0xc000" in proc.stdout + proc.stderr
    assert "invalid: SOP Instance UID (0008,0018) '1.2.03.4'" in proc.stdout + proc.stderr  # Error Comment: the reason
    assert not node.store.query("SELECT 1 FROM instances WHERE sop_uid='1.2.03.4'")


def test_store_same_uid_other_content_is_a_conflict_not_an_overwrite(node, tmp_path):
    ds = make_dataset(rows=32, columns=32)
    first = write(ds, tmp_path / "first.dcm")
    dcmtk("storescu", *_peer(node), first)
    kept = node.store.artifact(ds.SOPInstanceUID, "original").checksum
    ds.PatientName = "Other^Patient"
    proc = dcmtk("storescu", "-d", *_peer(node), write(ds, tmp_path / "second.dcm"), ok=False)
    assert "conflict" in proc.stdout + proc.stderr
    assert node.store.artifact(ds.SOPInstanceUID, "original").checksum == kept


def _find(node, tmp_path: Path, *keys: str, root: str = "-S") -> list[pydicom.Dataset]:
    out = tmp_path / f"find-{time.monotonic_ns()}"
    out.mkdir()
    dcmtk("findscu", root, *_peer(node)[:2], *[a for k in keys for a in ("-k", k)], "-X", "-od", out, *_peer(node)[2:])
    return [pydicom.dcmread(p) for p in sorted(out.iterdir())]


def test_find_levels_and_matching(node, tmp_path):
    study, paths = _study(tmp_path, ["s12", "u10", "u16"])
    for i, path in enumerate(paths):
        ds = read_dataset(path)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.AccessionNumber = "Müller^Anna", "PID-FIND-1", "20240315", "ACC77"
        write(ds, path)
    dcmtk("storescu", *_peer(node), *paths)
    studies = _find(node, tmp_path, "QueryRetrieveLevel=STUDY", "SpecificCharacterSet=ISO_IR 192", "PatientName=MÜL*", "StudyDate=20240301-20240331",
                    "StudyInstanceUID", "NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries", "ModalitiesInStudy")
    assert [(s.StudyInstanceUID, s.NumberOfStudyRelatedInstances, s.NumberOfStudyRelatedSeries, str(s.PatientName))
            for s in studies] == [(study, 3, 2, "Müller^Anna")]
    assert sorted(studies[0].ModalitiesInStudy) == ["CT", "MR"]
    assert _find(node, tmp_path, "QueryRetrieveLevel=STUDY", "StudyDate=20240401-", "AccessionNumber=ACC77") == []
    series = _find(node, tmp_path, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study}", "SeriesInstanceUID", "Modality")
    assert sorted(s.SeriesInstanceUID for s in series) == sorted({read_dataset(p).SeriesInstanceUID for p in paths})
    images = _find(node, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study}",
                   f"SeriesInstanceUID={series[0].SeriesInstanceUID}", "SOPInstanceUID", "SOPClassUID")
    expected = {read_dataset(p).SOPInstanceUID for p in paths if read_dataset(p).SeriesInstanceUID == series[0].SeriesInstanceUID}
    assert {i.SOPInstanceUID for i in images} == expected
    patients = _find(node, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=PID-FIND-1", "PatientName",
                     "NumberOfPatientRelatedStudies", root="-P")
    assert [(p.PatientID, str(p.PatientName), p.NumberOfPatientRelatedStudies) for p in patients] == \
        [("PID-FIND-1", "Müller^Anna", 1)]


def test_find_bad_level_is_refused(node, tmp_path):
    proc = dcmtk("findscu", "-v", "-S", *_peer(node)[:2], "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID",
                 *_peer(node)[2:], ok=False)
    assert "Error: DataSetDoesNotMatchSOPClass" in proc.stdout + proc.stderr  # 0xA900


def _stored_jpeg_ls(node, tmp_path: Path, study: str) -> pydicom.Dataset:
    """A JPEG-LS lossless original in *study*, as the archive keeps it."""
    path = _compressed(tmp_path, "u12_odd", JPEGLSLossless)
    ds = read_dataset(path)
    ds.StudyInstanceUID = study
    write(ds, path)
    dcmtk("storescu", "-xt", *_peer(node), path)
    return _stored(node, ds.SOPInstanceUID)


def test_get_study_decodes_for_a_receiver_of_uncompressed_only(node, tmp_path):
    study, paths = _study(tmp_path, ["s12", "rgb", "already_lossy"])
    dcmtk("storescu", *_peer(node), *paths)
    stored = _stored_jpeg_ls(node, tmp_path, study)
    out = tmp_path / "got"
    out.mkdir()
    dcmtk("getscu", "-S", *_peer(node)[:2], "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
          "-od", out, *_peer(node)[2:])
    got = {d.SOPInstanceUID: d for d in map(read_dataset, out.iterdir())}
    sent = [read_dataset(p) for p in paths] + [stored]
    assert set(got) == {s.SOPInstanceUID for s in sent}  # decoding keeps the SOP Instance UID: the same instance
    for original in sent:
        assert np.array_equal(decode_all(got[original.SOPInstanceUID]), decode_all(original))
    assert not got[stored.SOPInstanceUID].file_meta.TransferSyntaxUID.is_compressed
    assert got[sent[2].SOPInstanceUID].LossyImageCompression == "01"
    from core.users import access_log

    assert [(e["user"], e["action"], e["address"]) for e in access_log(node.store, study)] == \
        [("DICOM GETSCU", "download", "127.0.0.1")]  # the retrieval is in the access log, once per study


def test_get_by_patient_in_patient_root_and_bad_identifiers(node, tmp_path):
    study, paths = _study(tmp_path, ["u12_odd", "s16"])
    for path in paths:
        ds = read_dataset(path)
        ds.PatientID = "PID-GET-7"
        write(ds, path)
    dcmtk("storescu", *_peer(node), *paths)
    out = tmp_path / "got"
    out.mkdir()
    dcmtk("getscu", "-P", *_peer(node)[:2], "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=PID-GET-7",
          "-od", out, *_peer(node)[2:])
    assert {read_dataset(p).SOPInstanceUID for p in out.iterdir()} == {read_dataset(p).SOPInstanceUID for p in paths}
    for keys, root in ((["QueryRetrieveLevel=STUDY"], "-S"), (["QueryRetrieveLevel=PATIENT", "PatientID=PID-GET-7"], "-S"),
                       (["QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.03"], "-S")):
        proc = dcmtk("getscu", "-v", root, *_peer(node)[:2], *[a for k in keys for a in ("-k", k)], "-od", out,
                     *_peer(node)[2:], ok=False)
        assert "DataSetDoesNotMatchSOPClass" in proc.stdout + proc.stderr, keys  # A900: names what is wrong


def test_move_sends_as_stored_to_a_configured_peer(node, tmp_path):
    study, paths = _study(tmp_path, ["s16", "mono1"])
    dcmtk("storescu", *_peer(node), *paths)
    stored = _stored_jpeg_ls(node, tmp_path, study)
    out = tmp_path / "moved"
    out.mkdir()
    receiver = subprocess.Popen([require("storescp"), "+xa", "+uf", "-aet", DEST, "-od", out, str(node.dest_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        dcmtk("movescu", "-S", *_peer(node)[:2], "-aem", DEST, "-k", "QueryRetrieveLevel=STUDY",
              "-k", f"StudyInstanceUID={study}", *_peer(node)[2:])
        dcmtk("movescu", "-S", *_peer(node)[:2], "-aem", DEST, "-k", "QueryRetrieveLevel=IMAGE",
              "-k", f"StudyInstanceUID={study}", "-k", f"SeriesInstanceUID={stored.SeriesInstanceUID}",
              "-k", f"SOPInstanceUID={stored.SOPInstanceUID}", *_peer(node)[2:])
        moved = [read_dataset(p) for p in sorted(out.iterdir())]
    finally:
        receiver.terminate()
        receiver.wait(10)
    by_uid = {m.SOPInstanceUID: m for m in moved}
    assert len(moved) == 4 and set(by_uid) == {read_dataset(p).SOPInstanceUID for p in paths} | {stored.SOPInstanceUID}
    for path in paths:
        assert np.array_equal(decode_all(by_uid[read_dataset(path).SOPInstanceUID]), decode_all(read_dataset(path)))
    assert by_uid[stored.SOPInstanceUID].file_meta.TransferSyntaxUID == JPEGLSLossless
    assert by_uid[stored.SOPInstanceUID].PixelData == stored.PixelData  # the stored codestream, not a re-encoding


def _as_file(event) -> pydicom.Dataset:
    """What a pynetdicom receiver got, with the transfer syntax it came in."""
    ds = event.dataset
    ds.file_meta = event.file_meta
    return ds


def test_move_sends_the_lossless_copy_to_a_receiver_of_that_syntax_only(node, tmp_path):
    """A receiver that takes only the archive's lossless syntax gets the stored bit-exact copy, same SOP Instance UID."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage

    from core.archive import make_artifact, plan

    study, paths = _study(tmp_path, ["s12"])
    dcmtk("storescu", *_peer(node), *paths)
    [lossless] = [make_artifact(node.store, w) for w in plan(node.store, study).make if w.variant == "lossless"]
    received = []
    receiver = AE(ae_title="LOSSLESSONLY")
    receiver.add_supported_context(CTImageStorage, [lossless.transfer_syntax])
    server = receiver.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
        (evt.EVT_C_STORE, lambda event: received.append(_as_file(event)) or 0x0000)])
    set_peers(node.store, f"LOSSLESSONLY@127.0.0.1:{server.server_address[1]}", "test")
    try:
        dcmtk("movescu", "-S", *_peer(node)[:2], "-aem", "LOSSLESSONLY", "-k", "QueryRetrieveLevel=STUDY",
              "-k", f"StudyInstanceUID={study}", *_peer(node)[2:])
    finally:
        server.shutdown()
        set_peers(node.store, None, "test")
    sent = read_dataset(paths[0])
    assert [r.SOPInstanceUID for r in received] == [sent.SOPInstanceUID]
    assert received[0].file_meta.TransferSyntaxUID == lossless.transfer_syntax
    assert received[0].PixelData == read_dataset(lossless.path).PixelData  # the stored copy, not a new encoding
    assert np.array_equal(decode_all(received[0]), decode_all(sent))


def test_move_to_unknown_destination_is_refused(node, tmp_path):
    study, paths = _study(tmp_path, ["s16"])
    dcmtk("storescu", *_peer(node), *paths)
    proc = dcmtk("movescu", "-v", "-S", *_peer(node)[:2], "-aem", "NOBODY", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study}", *_peer(node)[2:], ok=False)
    assert "Refused: MoveDestinationUnknown" in proc.stdout + proc.stderr  # 0xA801


def _pdf(tmp_path: Path, study: str) -> Path:
    """An Encapsulated PDF instance (PS3.3 A.45): a document in a study, no pixels."""
    ds = make_dataset(rows=8, columns=8, study_uid=study)
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
                    "HighBit", "PixelRepresentation", "PixelSpacing", "PixelData", "ImageType"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.Modality, ds.MIMETypeOfEncapsulatedDocument = "DOC", "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n% RadPress test\n%%EOF\n"
    return write(ds, tmp_path / "report.pdf.dcm")


def test_non_image_objects_are_stored_and_retrieved_as_they_came(node, tmp_path):
    from core.samples import pydicom_test_dir

    study, images = _study(tmp_path, ["s12"])
    others = []
    for name in ("rtplan.dcm", "test-SR.dcm"):
        ds = pydicom.dcmread(pydicom_test_dir() / name)
        ds.StudyInstanceUID = study
        ds.save_as(tmp_path / name)
        others.append(tmp_path / name)
    others.append(_pdf(tmp_path, study))
    dcmtk("storescu", *_peer(node), *images, *others)
    sent = {read_dataset(p).SOPInstanceUID: read_dataset(p) for p in others}
    assert all(node.store.instance(uid)["rows"] == 0 for uid in sent)
    out = tmp_path / "got"
    out.mkdir()
    dcmtk("getscu", "-S", *_peer(node)[:2], "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
          "-od", out, *_peer(node)[2:])
    got = {d.SOPInstanceUID: d for d in map(read_dataset, out.iterdir())}
    assert set(got) == set(sent) | {read_dataset(images[0]).SOPInstanceUID}
    for uid, original in sent.items():
        assert got[uid] == original  # every element as it was sent
    pdf = next(d for d in got.values() if "EncapsulatedDocument" in d)
    assert pdf.EncapsulatedDocument.startswith(b"%PDF-1.4")
    import base64

    from pages import study as study_page

    basic = "Basic " + base64.b64encode(b"admin:correct-horse").decode()
    with node.app.server.test_request_context("/study", headers={"Authorization": basic}):
        page = str(study_page.layout(uid=study))
    assert page.count("No image: stored and served as sent") == 3 and page.count("/thumbnail/") == 1
    assert "RT Plan Storage" in page and "Encapsulated PDF Storage" in page


def test_calling_ae_allow_list(node):
    guarded = DicomNode(node.store, node.jobs, NodeConfig(port=0, allowed=frozenset({"MODALITY1"})))
    guarded.start()
    try:
        assert dcmtk("echoscu", "-aet", "MODALITY1", "-aec", "RADPRESS", "127.0.0.1", guarded.port).returncode == 0
        assert dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "RADPRESS", "127.0.0.1", guarded.port, ok=False).returncode != 0
    finally:
        guarded.stop()


def test_admins_edit_move_destinations_over_http(node, tmp_path):
    import base64

    from core.users import Users

    Users(node.store).add("reader", "reader-password", "radiologist")
    client = node.app.server.test_client()

    def auth(user, password):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    admin = auth("admin", "correct-horse")
    assert client.get("/api/dicom/peers", headers=admin).json["source"] == "environment"
    assert client.get("/api/dicom/peers", headers=auth("reader", "reader-password")).status_code == 403
    bad = client.put("/api/dicom/peers", json={"peers": "PACS@host"}, headers=admin)
    assert bad.status_code == 400 and "AE@host:port" in bad.json["error"]
    other = _free_port()
    answer = client.put("/api/dicom/peers", json={"peers": f"OTHERDEST@127.0.0.1:{other}"}, headers=admin)
    assert answer.status_code == 200 and answer.json["source"] == "index" and answer.json["node"]["port"] == node.port
    study, paths = _study(tmp_path, ["u10"])
    dcmtk("storescu", *_peer(node), *paths)
    out = tmp_path / "moved"
    out.mkdir()
    receiver = subprocess.Popen([require("storescp"), "-aet", "OTHERDEST", "-od", out, str(other)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        dcmtk("movescu", "-S", *_peer(node)[:2], "-aem", "OTHERDEST", "-k", "QueryRetrieveLevel=STUDY",
              "-k", f"StudyInstanceUID={study}", *_peer(node)[2:])
        gone = dcmtk("movescu", "-v", "-S", *_peer(node)[:2], "-aem", DEST, "-k", "QueryRetrieveLevel=STUDY",
                     "-k", f"StudyInstanceUID={study}", *_peer(node)[2:], ok=False)
    finally:
        receiver.terminate()
        receiver.wait(10)
        client.put("/api/dicom/peers", json={"peers": None}, headers=admin)
    assert [read_dataset(p).SOPInstanceUID for p in out.iterdir()] == [read_dataset(paths[0]).SOPInstanceUID]
    assert "MoveDestinationUnknown" in gone.stdout + gone.stderr  # the saved list replaced the configured one
    assert client.get("/api/dicom/peers", headers=admin).json["source"] == "environment"
    audit = node.store.query("SELECT new FROM audit WHERE what='DICOM peers' AND user='admin' ORDER BY id")
    assert [r["new"] for r in audit] == [f'"OTHERDEST@127.0.0.1:{other}"', "null"]


def test_policy_page_shows_the_node_and_saves_destinations(node):
    import base64

    from pages import policy

    basic = "Basic " + base64.b64encode(b"admin:correct-horse").decode()
    with node.app.server.test_request_context("/policy", headers={"Authorization": basic}):
        page = str(policy.layout())
        assert f"AE title RADPRESS at 127.0.0.1:{node.port}" in page and f"{DEST}@127.0.0.1:{node.dest_port}" in page
        refused = str(policy.save_peers(1, "PACS@host"))  # Dash's @callback returns the function itself
        assert "Not saved" in refused and "AE@host:port" in refused
        try:
            saved = policy.save_peers(1, "PACS@10.0.0.5:104")
            assert "Saved: PACS@10.0.0.5:104" in str(saved) and set(node.peers()) == {"PACS"}
        finally:
            set_peers(node.store, None, "test")
    assert set(node.peers()) == {DEST}


def test_what_a_modality_sends_is_what_the_web_serves(live_app, tmp_path):
    """The app as `make run` starts it (HTTP and the node on one archive): storescu in, HTTP and DICOMweb out."""
    import requests

    from tests.conftest import ADMIN

    base, app = live_app(dicom_port=0)
    port = app.server.extensions["radpress"]["dicom"].port
    study, paths = _study(tmp_path, ["s12", "mono1"])
    dcmtk("storescu", "-aec", "RADPRESS", "127.0.0.1", port, *paths)
    http = requests.Session()
    http.auth = ADMIN
    assert len(http.get(f"{base}/api/studies/{study}").json()["instances"]) == 2
    found = http.get(f"{base}/dicom-web/studies", params={"StudyInstanceUID": study}).json()
    assert found[0]["00201208"]["Value"] == [2]  # Number of Study Related Instances
    sop = read_dataset(paths[0]).SOPInstanceUID
    original = http.get(f"{base}/download/instance/{sop}", params={"variant": "original"})
    assert np.array_equal(decode_all(pydicom.dcmread(io.BytesIO(original.content))), decode_all(read_dataset(paths[0])))


def test_a_taken_port_is_refused_with_a_message(node):
    with pytest.raises(InvalidOptionError, match=f"cannot listen on 127.0.0.1:{node.port}.*RADPRESS_DICOM_PORT"):
        DicomNode(node.store, node.jobs, NodeConfig(port=node.port)).start()


def test_peers_are_validated():
    assert parse_peers("PACS@10.0.0.5:104, VIEW@ws-12:11112")["VIEW"].port == 11112
    for bad in ("PACS@host", "PACS@host:0", "@host:104", "WAYTOOLONGAETITLE17@h:104", "P\\Q@h:104", "P@h/x:104",
                "PACS@a:104,PACS@b:104"):  # the same AE twice: the second replaced the first silently
        with pytest.raises(InvalidOptionError):
            parse_peers(bad)


def test_port_from_environment_is_validated(monkeypatch):
    monkeypatch.setenv("RADPRESS_DICOM_PORT", "http")
    with pytest.raises(InvalidOptionError):
        NodeConfig.from_env()
    monkeypatch.setenv("RADPRESS_DICOM_PORT", "0")
    assert NodeConfig.from_env().port == 0


@pytest.fixture
def get_uncompressed(node):
    """C-GET of a study by a receiver that takes its images in Explicit VR Little Endian only: what it received."""
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet
    from pydicom.uid import ExplicitVRLittleEndian

    def get(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
        received = []

        def on_store(event):
            received.append(event.dataset)
            return 0x0000

        scu = AE(ae_title="LITTLE")
        scu.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        scu.add_requested_context(ds.SOPClassUID, [ExplicitVRLittleEndian])
        assoc = scu.associate("127.0.0.1", node.port, ae_title="RADPRESS", ext_neg=[build_role(ds.SOPClassUID, scp_role=True)],
                              evt_handlers=[(evt.EVT_C_STORE, on_store)])
        query = pydicom.Dataset()
        query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", ds.StudyInstanceUID
        statuses = [s.Status for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet) if s]
        assoc.release()
        assert statuses[-1] == 0x0000
        return received

    return get


def test_get_of_a_big_endian_original_by_a_little_endian_receiver(node, get_uncompressed):
    """pynetdicom never swaps bytes: a big-endian original sent to a receiver of little endian only failed (A702)."""
    from pydicom.uid import ExplicitVRLittleEndian

    from core.ingest import ingest_instance

    ds = make_dataset(**KINDS["big_endian"])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    assert ingest_instance(node.store, buffer, "be.dcm").status == "stored"
    [got] = get_uncompressed(ds)
    got.file_meta = pydicom.dataset.FileMetaDataset()
    got.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert got.SOPInstanceUID == ds.SOPInstanceUID and np.array_equal(decode_all(got), decode_all(ds))


def test_get_of_a_mastered_ybr_full_original_gives_its_stored_values(node, get_uncompressed, tmp_path):
    """Strategy 5 keeps a YBR_FULL original as a JPEG-LS master; a receiver of uncompressed only got it converted to
    RGB under the same SOP Instance UID (other values than the original's, unmarked): now the original's bytes."""
    from core.ingest import ingest
    from core.master import make_master, master_of

    ds = make_dataset(**KINDS["ybr_full"])
    path = write(ds, tmp_path / "ybr.dcm")
    assert [r.status for r in ingest(node.store, [path])] == ["stored"]
    make_master(node.store, ds.SOPInstanceUID)
    assert master_of(node.store, ds.SOPInstanceUID).mastered
    [got] = get_uncompressed(ds)
    assert got.SOPInstanceUID == ds.SOPInstanceUID and got.PhotometricInterpretation == "YBR_FULL"
    assert got.PixelData == read_dataset(path).PixelData  # byte for byte what was sent in
