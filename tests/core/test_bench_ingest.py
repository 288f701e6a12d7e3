"""The ingest bench section and its reference server: Debian's Orthanc started, fed, measured, stopped."""

import io

import numpy as np
import pytest
import requests
from PIL import Image

from core.bench_orthanc import J2K_LOSSLESS, orthanc
from core.pixels import decode_frame, read_dataset
from core.samples import write_series


@pytest.mark.parametrize("transcode_to", [None, J2K_LOSSLESS])
def test_orthanc_stores_what_it_is_sent_and_is_gone_afterwards(transcode_to, tmp_path):
    """As received: the very bytes; with ingest transcoding: JPEG 2000 lossless, same pixels, less disk."""
    files = write_series("693_UNCR", 2, tmp_path)
    with orthanc(transcode_to=transcode_to) as server:
        ids = server.upload_all(files)
        assert len(set(ids)) == 2
        stored = server.file(ids[0])
        syntax = server.transfer_syntax(ids[0])
        assert server.disk_bytes() > 0
        preview = np.asarray(Image.open(io.BytesIO(server.preview(ids[0]))))
        assert preview.shape == (512, 512)
        base, process = server.base, server.process
    if transcode_to is None:
        assert stored == files[0].read_bytes() and syntax == "1.2.840.10008.1.2.1"
    else:
        assert syntax == J2K_LOSSLESS and len(stored) < files[0].stat().st_size / 1.5
        ours = read_dataset(files[0])
        theirs = read_dataset(io.BytesIO(stored))
        assert np.array_equal(decode_frame(theirs, 0), decode_frame(ours, 0))
    assert process.poll() is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/system", timeout=5)


def test_ingest_section_measures_both_servers_on_the_same_files():
    from core.bench_ingest import measure

    r = measure(count=2, clients=2, repeat=1, warmup=1, preview_samples={"CT 512²": "693_UNCR"})
    for side in ("radpress", "orthanc"):
        assert r[side]["per_s"] > 0 and r[side]["preview_ms CT 512²"] > 0
        assert 0 < r[side]["latency_ms"] <= r[side]["latency_p90_ms"] <= r[side]["seconds"] * 1000
    assert r["radpress"]["web_cpu_ms"] > 0 and r["orthanc"]["background_cpu_ms"] == 0  # Orthanc: one process
    split = r["radpress"]["web_cpu_ms_by_process"]
    assert split == sorted(split, reverse=True) and abs(sum(split) - r["radpress"]["web_cpu_ms"]) < 0.01 * len(split) + 0.05
    assert [c["target"].split(" ")[0] for c in r["checks"]] == ["upload", "full-size"]
    assert "upload, instances/s" in r["table"] and "one upload, ms (median)" in r["table"] and "preview CT 512²" in r["table"]
