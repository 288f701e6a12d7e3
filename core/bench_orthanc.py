"""Orthanc (Debian's ``orthanc`` package) as the bench's reference archive.

:func:`orthanc` starts the ``Orthanc`` binary on free localhost ports with a
configuration of its own in a temporary folder (no authentication, its own
storage and index), optionally transcoding every received instance to JPEG
2000 lossless with the GDCM plugin (``orthanc-gdcm``), the way a clinic would
configure it to save disk.  The bench compares RadPress with it on the same
files, in the same run, on the same machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import requests

from .errors import UnsupportedError

__all__ = ["Orthanc", "orthanc", "available", "GDCM_PLUGIN", "J2K_LOSSLESS"]

GDCM_PLUGIN = "/usr/share/orthanc/plugins/libOrthancGdcm.so"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
BINARY = "Orthanc"


def available(transcoding: bool = False) -> bool:
    """True when the Orthanc binary (and, for *transcoding*, its GDCM plugin) is installed."""
    return shutil.which(BINARY) is not None and (not transcoding or os.path.exists(GDCM_PLUGIN))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Orthanc:
    """A running Orthanc: its base URL, a session, its storage folder and process."""

    base: str
    storage: Path
    process: subprocess.Popen
    http: requests.Session = field(default_factory=requests.Session)

    def upload(self, path: str | os.PathLike) -> str:
        """POST one DICOM file to /instances; returns Orthanc's instance id."""
        data = Path(path).read_bytes()
        response = self.http.post(f"{self.base}/instances", data=data,
                                            headers={"Content-Type": "application/dicom"}, timeout=120)
        response.raise_for_status()
        return response.json()["ID"]

    def upload_all(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        return [self.upload(p) for p in paths]

    def transfer_syntax(self, instance_id: str) -> str:
        """The transfer syntax Orthanc stored the instance with."""
        response = self.http.get(f"{self.base}/instances/{instance_id}/metadata/TransferSyntax", timeout=60)
        response.raise_for_status()
        return response.text.strip()

    def file(self, instance_id: str) -> bytes:
        """The stored DICOM file, as Orthanc serves it."""
        response = self.http.get(f"{self.base}/instances/{instance_id}/file", timeout=120)
        response.raise_for_status()
        return response.content

    def preview(self, instance_id: str) -> bytes:
        """Orthanc's full-size PNG preview of frame 0."""
        response = self.http.get(f"{self.base}/instances/{instance_id}/preview", timeout=120)
        response.raise_for_status()
        return response.content

    def disk_bytes(self) -> int:
        """Bytes of every file in its storage folder (attachments and the SQLite index)."""
        return sum(p.stat().st_size for p in self.storage.rglob("*") if p.is_file())


def _config(tmp: Path, http_port: int, dicom_port: int, transcode_to: str | None) -> dict:
    config = {
        "Name": "radpress-bench",
        "StorageDirectory": str(tmp / "storage"),
        "IndexDirectory": str(tmp / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageCompression": False,
        "SaveJobs": False,
        "Plugins": [],
    }
    if transcode_to:
        config["Plugins"] = [GDCM_PLUGIN]
        config["IngestTranscoding"] = transcode_to
    return config


@contextmanager
def orthanc(transcode_to: str | None = None, timeout: float = 60.0) -> Iterator[Orthanc]:
    """An Orthanc serving on a free localhost port until the block ends (then stopped and its folder removed).

    *transcode_to*: a transfer syntax UID (e.g. :data:`J2K_LOSSLESS`) every received instance is
    transcoded to before it is stored, by the GDCM plugin.
    """
    if not available(transcoding=bool(transcode_to)):
        raise UnsupportedError("Orthanc is not installed" + (" with its GDCM plugin" if transcode_to else "") + ".",
                               hint="Run `make sysdeps-bench` (Debian packages orthanc and orthanc-gdcm).")
    with tempfile.TemporaryDirectory(prefix="radpress-orthanc-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "storage").mkdir()
        http_port, dicom_port = _free_port(), _free_port()
        (tmp / "orthanc.json").write_text(json.dumps(_config(tmp, http_port, dicom_port, transcode_to)))
        log = open(tmp / "orthanc.log", "wb")
        process = subprocess.Popen([BINARY, str(tmp / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        server = Orthanc(f"http://127.0.0.1:{http_port}", tmp / "storage", process)
        try:
            _wait_ready(server, timeout, tmp / "orthanc.log")
            yield server
        finally:
            server.http.close()
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def _wait_ready(server: Orthanc, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise UnsupportedError(f"Orthanc exited at start-up (code {server.process.returncode}): "
                                   f"{log.read_text(errors='replace')[-500:]}")
        try:
            if server.http.get(f"{server.base}/system", timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise UnsupportedError(f"Orthanc did not answer within {timeout:.0f} s: {log.read_text(errors='replace')[-500:]}")
