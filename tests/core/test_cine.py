"""Cines (core.cine and the /cine routes) checked with FFmpeg's own ffprobe and ffmpeg, on synthetic multi-frame files."""

import json
import struct
import subprocess

import numpy as np
import pytest
import requests

from core.cine import (LABEL, CineConfig, CineLimitError, CineOptions, NotACineError, canvas_size, encode_hls,
                       encode_mp4, frame_rate, parse_options, plan_clip)
from core.errors import InvalidOptionError
from core.pixels import decode_frame
from core.render import to_display
from tests.checkers import require
from tests.conftest import ADMIN
from tests.synthetic import KINDS, make_dataset, write

CONFIG = CineConfig()


def _gray(**extra):
    """An odd-sized 12-bit cine of 24 frames at 10 frames/s (2.4 s)."""
    ds = make_dataset(rows=63, columns=81, frames=24, modality="US", **extra)
    ds.FrameTime = 100
    return ds


def _colour():
    ds = make_dataset(rows=67, columns=93, frames=6, samples=3, bits_allocated=8, bits_stored=8, modality="US")
    ds.CineRate = 25
    return ds


def ffprobe(path) -> dict:
    out = subprocess.run([require("ffprobe"), "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_name,pix_fmt,width,height,nb_read_frames,duration,r_frame_rate:format=duration:format_tags",
                          "-of", "json", str(path)], check=True, capture_output=True, text=True).stdout
    info = json.loads(out)
    return {**info["streams"][0], "format": info["format"]}


def top_level_boxes(data: bytes) -> list[str]:
    """The MP4's top-level box types in file order (ISO/IEC 14496-12 box headers)."""
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        boxes.append(kind.decode("latin-1"))
        offset += size
    return boxes


def _mp4(tmp_path, ds, args=None, name="clip.mp4"):
    options = parse_options(args or {}, CONFIG)
    clip = plan_clip(ds, options, CONFIG)
    path = tmp_path / name
    encode_mp4(ds, clip, options, path)
    return path, clip


# -- the header and the request ------------------------------------------------
@pytest.mark.parametrize("attrs, fps, source", [
    ({"FrameTime": 40}, 25.0, "Frame Time"),
    ({"FrameTimeVector": [0, 50, 50, 50]}, 20.0, "Frame Time Vector"),
    ({"CineRate": 30}, 30.0, "CineRate"),
    ({"RecommendedDisplayFrameRate": 12}, 12.0, "RecommendedDisplayFrameRate"),
    ({"FrameTime": 0, "CineRate": 15}, 15.0, "CineRate"),  # an unusable Frame Time falls through
    ({}, 10.0, "default"),
])
def test_frame_rate_from_the_header(attrs, fps, source):
    ds = make_dataset(frames=3)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    got, why = frame_rate(ds)
    assert got == pytest.approx(fps) and why.startswith(source)


@pytest.mark.parametrize("args, message", [
    ({"start": "2", "end": "1"}, "start must come before"),
    ({"start": "1", "end": "1"}, "start must come before"),
    ({"start": "-1"}, "not a number"),
    ({"ranges": "0-1,x"}, "not START-END"),
    ({"ranges": ",".join(["0-1"] * 11)}, "at most 10"),
    ({"ranges": "0-1", "start": "0"}, "cannot be combined"),
    ({"crf": "5"}, "safe range"),
    ({"crf": "51"}, "safe range"),
    ({"window": "40,0"}, "width above 0"),
])
def test_bad_options_are_refused_before_any_work(args, message):
    with pytest.raises(InvalidOptionError, match=message):
        parse_options(args, CONFIG)


@pytest.mark.parametrize("args, message", [
    ({"start": "2.5"}, "beyond the clip"),
    ({"end": "3"}, "beyond the clip"),
    ({"ranges": "0-1,2-9"}, "beyond the clip"),
    ({"start": "0.01", "end": "0.05"}, "holds no frame"),
])
def test_cuts_outside_the_clip_are_refused(args, message):
    with pytest.raises(InvalidOptionError, match=message):
        plan_clip(_gray(), parse_options(args, CONFIG), CONFIG)


def test_single_frames_and_limits_are_refused():
    with pytest.raises(NotACineError):
        plan_clip(make_dataset(), CineOptions(), CONFIG)
    with pytest.raises(CineLimitError, match="frames"):
        plan_clip(_gray(), CineOptions(), CineConfig(max_frames=10))
    with pytest.raises(CineLimitError, match="pixels"):
        plan_clip(_gray(), CineOptions(), CineConfig(max_pixels=1000))
    with pytest.raises(CineLimitError, match="lasts"):
        plan_clip(_gray(), CineOptions(), CineConfig(max_seconds=1))
    with pytest.raises(InvalidOptionError, match="RADPRESS_CINE_MAX_FRAMES"):
        CineConfig.from_env({"RADPRESS_CINE_MAX_FRAMES": "lots"})
    assert CineConfig.from_env({"RADPRESS_CINE_MAX_FRAMES": "7"}).max_frames == 7


# -- the MP4, read by FFmpeg -------------------------------------------------------
def test_odd_sized_grey_cine_is_padded_fast_start_h264_with_every_frame(tmp_path):
    ds = _gray()
    path, clip = _mp4(tmp_path, ds)
    info = ffprobe(path)
    width, height = canvas_size(63, 81)
    assert (info["codec_name"], info["pix_fmt"]) == ("h264", "yuv420p")
    assert (info["width"], info["height"]) == (width, height) and width % 2 == height % 2 == 0
    assert width >= 81 and height > 63  # padded (plus the label band), never cropped
    assert int(info["nb_read_frames"]) == 24 and info["r_frame_rate"] == "10/1"
    assert float(info["format"]["duration"]) == pytest.approx(2.4, abs=0.01)
    assert info["format"]["tags"]["comment"] == LABEL and info["format"]["tags"]["title"] == LABEL
    boxes = top_level_boxes(path.read_bytes())
    assert boxes.index("moov") < boxes.index("mdat"), boxes


def test_video_shows_the_windowed_image_and_the_label(tmp_path):
    """FFmpeg's decode of frame 5 is the image as the viewer renders it (lossy: close), with the label band under it."""
    ds = _gray()
    path, clip = _mp4(tmp_path, ds, {"window": "2000,3000"})
    width, height = canvas_size(63, 81)
    raw = subprocess.run([require("ffmpeg"), "-v", "error", "-i", str(path), "-vf", "select=eq(n\\,5)", "-vframes", "1",
                          "-f", "rawvideo", "-pix_fmt", "gray", "-"], check=True, capture_output=True).stdout
    shown = np.frombuffer(raw, np.uint8).reshape(height, width).astype(float)
    expected = to_display(decode_frame(ds, 5), ds, (2000, 3000), 5).astype(float)
    assert np.abs(shown[:63, :81] - expected).mean() < 4
    assert (shown[63:] > 128).sum() > 40  # white label text in the band


def test_colour_cine_keeps_its_colours(tmp_path):
    ds = _colour()
    path, _ = _mp4(tmp_path, ds)
    info = ffprobe(path)
    assert int(info["nb_read_frames"]) == 6 and info["r_frame_rate"] == "25/1"
    width, height = canvas_size(67, 93)
    raw = subprocess.run([require("ffmpeg"), "-v", "error", "-i", str(path), "-vframes", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         check=True, capture_output=True).stdout
    shown = np.frombuffer(raw, np.uint8).reshape(height, width, 3).astype(float)
    expected = to_display(decode_frame(ds, 0), ds).astype(float)
    assert np.abs(shown[:67, :93] - expected).mean() < 8


@pytest.mark.parametrize("kind", ["multiframe", "enhanced_ct", "mono1", "s16", "ybr_full", "big_endian", "u8_odd"])
def test_every_synthetic_kind_plays_as_the_viewer_shows_its_first_frame(tmp_path, kind):
    """Signed, MONOCHROME1, YBR, big-endian, Enhanced (window from its functional groups): frame 0 as to_display shows it."""
    ds = make_dataset(**{**KINDS[kind], "frames": max(KINDS[kind].get("frames", 1), 4)})
    path, clip = _mp4(tmp_path, ds)
    info = ffprobe(path)
    frames = int(ds.NumberOfFrames)
    assert int(info["nb_read_frames"]) == frames and info["pix_fmt"] == "yuv420p"
    width, height = canvas_size(int(ds.Rows), int(ds.Columns))
    colour = int(ds.SamplesPerPixel) == 3
    raw = subprocess.run([require("ffmpeg"), "-v", "error", "-i", str(path), "-vframes", "1", "-f", "rawvideo", "-pix_fmt",
                          "rgb24" if colour else "gray", "-"], check=True, capture_output=True).stdout
    shown = np.frombuffer(raw, np.uint8).reshape(height, width, *((3,) if colour else ())).astype(float)
    expected = to_display(decode_frame(ds, 0), ds, index=0).astype(float)
    assert np.abs(shown[:int(ds.Rows), :int(ds.Columns)] - expected).mean() < 8


def test_an_encoder_failure_is_a_codec_error_with_its_reason(tmp_path, monkeypatch):
    import av

    from core import cine
    from core.errors import CodecError

    def fail(*_args):
        raise av.FFmpegError(22, "Invalid argument")

    monkeypatch.setattr(cine, "_encode", fail)
    ds = _gray()
    with pytest.raises(CodecError, match="H.264 MP4.*Invalid argument"):
        _mp4(tmp_path, ds)
    with pytest.raises(CodecError, match="HLS"):
        encode_hls(ds, plan_clip(ds, CineOptions(), CONFIG), CineOptions(), tmp_path)


def test_a_cine_of_an_already_lossy_original_says_both():
    from core.cine import lossy_header
    from core.derive import LossyHistory

    assert lossy_header(LossyHistory()) == "method=H.264; rendering=cine"
    before = LossyHistory().then(18.0, "ISO_15444_1")
    assert lossy_header(before).startswith("method=H.264; rendering=cine; original ") and "ISO_15444_1" in lossy_header(before)


@pytest.mark.parametrize("args, frames", [
    ({"start": "0.5", "end": "1.5"}, 10),
    ({"start": "2"}, 4),
    ({"ranges": "0-0.5,1-2"}, 15),
    ({"ranges": "2-2.4,0-0.3"}, 7),
])
def test_trims_and_multi_trims(tmp_path, args, frames):
    path, clip = _mp4(tmp_path, _gray(), args)
    info = ffprobe(path)
    assert int(info["nb_read_frames"]) == frames == len(clip.indices)
    assert float(info["format"]["duration"]) == pytest.approx(frames / 10, abs=0.01)


def test_hls_segments_of_two_seconds_add_up_to_the_clip(tmp_path):
    ds = _gray()
    options = CineOptions()
    clip = plan_clip(ds, options, CONFIG)
    playlist, segments = encode_hls(ds, clip, options, tmp_path)
    assert playlist.startswith("#EXTM3U") and "#EXT-X-ENDLIST" in playlist and "#EXT-X-PLAYLIST-TYPE:VOD" in playlist
    extinf = [float(line.split(":")[1].rstrip(",")) for line in playlist.splitlines() if line.startswith("#EXTINF")]
    assert extinf == pytest.approx([2.0, 0.4], abs=0.01)
    probed = [ffprobe(s) for s in segments]
    assert sum(int(p["nb_read_frames"]) for p in probed) == 24
    assert sum(float(p["format"]["duration"]) for p in probed) == pytest.approx(2.4, abs=0.05)
    assert all(p["codec_name"] == "h264" for p in probed)


def test_hls_target_duration_covers_a_clip_under_a_second(tmp_path):
    """A 5-frame 0.5 s cine got #EXT-X-TARGETDURATION:0 from FFmpeg (RFC 8216: whole seconds, at least every EXTINF)."""
    ds = make_dataset(**KINDS["multiframe"])
    clip = plan_clip(ds, CineOptions(), CONFIG)
    playlist, _ = encode_hls(ds, clip, CineOptions(), tmp_path)
    [target] = [int(line.split(":")[1]) for line in playlist.splitlines() if line.startswith("#EXT-X-TARGETDURATION:")]
    extinf = [float(line.split(":")[1].rstrip(",")) for line in playlist.splitlines() if line.startswith("#EXTINF")]
    assert extinf and target >= 1 and all(target >= d for d in extinf)


# -- the routes ----------------------------------------------------------------------
def _upload(session, base, path):
    with open(path, "rb") as fh:
        assert session.post(f"{base}/api/upload", files={"file": (path.name, fh)}).status_code == 200


def test_routes_serve_mp4_ranges_and_hls_with_the_lossy_header(live_app, tmp_path):
    base, _app = live_app(demo=True, run_jobs=False)
    admin = requests.Session()
    admin.auth = ADMIN
    ds, single = _gray(), make_dataset(rows=20, columns=20)
    _upload(admin, base, write(ds, tmp_path / "cine.dcm"))
    _upload(admin, base, write(single, tmp_path / "single.dcm"))
    url = f"{base}/cine/{ds.SOPInstanceUID}"

    whole = admin.get(f"{url}.mp4")
    assert whole.status_code == 200 and whole.headers["Content-Type"] == "video/mp4"
    assert whole.headers["X-Lossy-Compression"].startswith("method=H.264") and whole.headers["X-Cine-Frames"] == "24"
    boxes = top_level_boxes(whole.content)
    assert boxes.index("moov") < boxes.index("mdat")
    (tmp_path / "got.mp4").write_bytes(whole.content)
    assert int(ffprobe(tmp_path / "got.mp4")["nb_read_frames"]) == 24
    part = admin.get(f"{url}.mp4", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole.content[100:200] and "X-Lossy-Compression" in part.headers
    assert admin.get(f"{url}.mp4", headers={"If-None-Match": whole.headers["ETag"]}).status_code == 304
    trimmed = admin.get(f"{url}.mp4?start=1&end=2")
    assert trimmed.headers["X-Cine-Frames"] == "10" and trimmed.headers["ETag"] != whole.headers["ETag"]

    playlist = admin.get(f"{url}.m3u8?ranges=0-1.2,1.5-2.4")
    assert playlist.status_code == 200 and "#EXT-X-ENDLIST" in playlist.text and "X-Lossy-Compression" in playlist.headers
    uris = [line for line in playlist.text.splitlines() if line and not line.startswith("#")]
    assert uris == [f"{ds.SOPInstanceUID}/segment/0.ts?ranges=0-1.2%2C1.5-2.4", f"{ds.SOPInstanceUID}/segment/1.ts?ranges=0-1.2%2C1.5-2.4"]
    frames = 0
    for n, uri in enumerate(uris):
        segment = admin.get(f"{base}/cine/{uri}")
        assert segment.status_code == 200 and segment.headers["X-Lossy-Compression"]
        (tmp_path / f"{n}.ts").write_bytes(segment.content)
        frames += int(ffprobe(tmp_path / f"{n}.ts")["nb_read_frames"])
    assert frames == 21
    assert admin.get(f"{url}/segment/2.ts?ranges=0-1.2,1.5-2.4").status_code == 400

    bad = admin.get(f"{url}.mp4?start=2&end=1")
    assert bad.status_code == 400 and "start must come before" in bad.json()["error"]
    assert admin.get(f"{url}.mp4?ranges=0-1,2-5").status_code == 400
    not_cine = admin.get(f"{base}/cine/{single.SOPInstanceUID}.mp4")
    assert not_cine.status_code == 422 and "multi-frame" in not_cine.json()["error"]
    assert admin.get(f"{base}/cine/1.2.3.mp4").status_code == 404

    assert requests.get(f"{url}.mp4").status_code == 401
    demo = requests.Session()
    assert demo.post(f"{base}/login", data={"demo": "1"}, allow_redirects=False).status_code == 302
    assert demo.get(f"{url}.mp4").status_code == 403
    assert demo.get(f"{url}.m3u8").status_code == 403
    assert demo.get(f"{url}/segment/0.ts").status_code == 403


def _wait_jobs(session, base, timeout=120):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = session.get(f"{base}/api/jobs").json()
        if jobs and all(j["state"] in ("done", "failed", "cancelled") for j in jobs):
            return jobs
        time.sleep(0.2)
    raise AssertionError("jobs did not finish")


def test_strategy_1_renders_us_cines_at_ingest(live_app, tmp_path):
    """Everything ready: a US loop's MP4 is stored by the study's job and served as it is; an MR cine is made on demand."""
    base, app = live_app(demo=False)
    store = app.server.extensions["radpress"]["store"]
    admin = requests.Session()
    admin.auth = ADMIN
    us = _gray()
    mr = make_dataset(rows=32, columns=32, frames=4, modality="MR", study_uid=us.StudyInstanceUID)
    _upload(admin, base, write(us, tmp_path / "us.dcm"))
    _upload(admin, base, write(mr, tmp_path / "mr.dcm"))
    assert admin.put(f"{base}/api/studies/{us.StudyInstanceUID}/strategy", json={"strategy": 1}).status_code == 200
    assert all(j["state"] == "done" for j in _wait_jobs(admin, base))
    stored = store.artifact(us.SOPInstanceUID, "cine")
    assert stored is not None and store.artifact(mr.SOPInstanceUID, "cine") is None
    info = ffprobe(stored.path)
    assert info["codec_name"] == "h264" and int(info["nb_read_frames"]) == 24
    served = admin.get(f"{base}/cine/{us.SOPInstanceUID}.mp4")
    assert served.headers["X-Cache"] == "stored" and served.content == stored.path.read_bytes()
    assert served.headers["X-Lossy-Compression"].startswith("method=H.264")
    assert admin.get(f"{base}/cine/{us.SOPInstanceUID}.mp4?end=1").headers["X-Cache"] == "miss"
    assert admin.get(f"{base}/cine/{mr.SOPInstanceUID}.mp4").headers["X-Cache"] == "miss"
    assert admin.get(f"{base}/cine/{mr.SOPInstanceUID}.mp4").headers["X-Cache"] == "hit"
