"""Multi-frame instances (ultrasound loops, angiography runs, cine MR) as H.264 video: MP4 and HLS.

A cine is a lossy rendering for viewing, never a diagnostic copy: every frame
carries a burned-in :data:`LABEL` in a band under the image (so no pixel of
the image is hidden), and the MP4/HLS metadata (title, comment) says the same.
Encoding goes through PyAV (FFmpeg's libx264, MP4 and HLS muxers); the MP4 is
fast-start (``moov`` before ``mdat``).  Options are parsed and checked against
the clip and the configured limits before any frame is decoded.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from pydicom.dataset import Dataset

from .errors import CodecError, InvalidOptionError, RadPressError
from .locks import item_lock
from .pixels import decode_frame, pixel_spec, read_dataset
from .present import dimensions
from .render import IMAGE_DEFAULT, modality_values, preset_window, to_display

__all__ = [
    "LABEL", "DEFAULT_FPS", "CRF_RANGE", "CineConfig", "CineOptions", "Clip", "NotACineError", "CineLimitError",
    "frame_rate", "parse_options", "plan_clip", "canvas_size", "encode_mp4", "encode_hls", "cine_mp4", "cine_hls",
    "lossy_header", "rendered_at_ingest", "default_mp4", "INGEST_MODALITIES",
]

LABEL = "LOSSY — not for primary diagnosis"
# Without Frame Time, Frame Time Vector, Cine Rate or Recommended Display Frame Rate a cine plays at 10 frames/s.
DEFAULT_FPS = 10.0
FPS_RANGE = (0.1, 240.0)  # a frame rate outside this range in the header is ignored as implausible
# H.264 constant rate factor: below 18 the file grows with nothing visible gained; above 35 detail is lost.
CRF_RANGE = (18, 35)
DEFAULT_CRF = 23
METHOD = "H.264"


class NotACineError(RadPressError):
    """The instance has a single frame (or none): there is nothing to play."""

    http_status = 422


class CineLimitError(RadPressError):
    """The clip is above a configured limit (frames, pixels per frame, duration)."""

    http_status = 413


@dataclass(frozen=True)
class CineConfig:
    """Limits and defaults; from ``RADPRESS_CINE_*`` environment variables by :meth:`from_env`."""

    max_frames: int = 3000
    max_pixels: int = 2048 * 2048
    max_seconds: float = 600.0
    max_ranges: int = 10
    segment_seconds: float = 2.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "CineConfig":
        values = {}
        for name, kind in (("max_frames", int), ("max_pixels", int), ("max_seconds", float), ("max_ranges", int),
                           ("segment_seconds", float)):
            variable = f"RADPRESS_CINE_{name.upper()}"
            if environ.get(variable):
                try:
                    values[name] = kind(environ[variable])
                except ValueError:
                    raise InvalidOptionError(f"{variable}={environ[variable]!r} is not a number.") from None
                if values[name] <= 0:
                    raise InvalidOptionError(f"{variable}={environ[variable]!r} must be above 0.")
        return cls(**values)


@dataclass(frozen=True)
class CineOptions:
    """What a request asks for: cuts in seconds (``None`` end = to the end), window, quality."""

    ranges: tuple[tuple[float, float | None], ...] = ((0.0, None),)
    window: tuple[float, float] | None = None
    crf: int = DEFAULT_CRF

    def key(self) -> str:
        """The normalised options: part of the cache key and ETag."""
        cuts = ",".join(f"{a:g}-{'' if b is None else f'{b:g}'}" for a, b in self.ranges)
        window = "" if self.window is None else f"{self.window[0]:g},{self.window[1]:g}"
        return f"r={cuts};w={window};crf={self.crf}"


@dataclass(frozen=True)
class Clip:
    """The frames to encode (indices into the instance) and the rate they play at."""

    indices: tuple[int, ...]
    fps: float
    fps_source: str

    @property
    def duration(self) -> float:
        return len(self.indices) / self.fps


_NUMBER = r"\d+(?:\.\d+)?"


def _seconds(name: str, text: str) -> float:
    if not re.fullmatch(_NUMBER, text.strip()):
        raise InvalidOptionError(f"{name}={text!r} is not a number of seconds.", hint=f"For example {name}=1.5.")
    return float(text)


def parse_options(args: Mapping[str, str], config: CineConfig) -> CineOptions:
    """``start``/``end`` (seconds), or ``ranges=a-b,c-d`` (multi-trim), ``window=C,W``, ``crf``; checked before any work."""
    args = {k: v for k, v in args.items() if v != ""}  # an empty field of the trim form means: not set
    ranges: list[tuple[float, float | None]]
    if args.get("ranges") is not None and (args.get("start") is not None or args.get("end") is not None):
        raise InvalidOptionError("ranges= cannot be combined with start= or end=.", hint="Put every cut in ranges=a-b,c-d.")
    if args.get("ranges") is not None:
        parts = [p for p in args["ranges"].split(",")]
        if len(parts) > config.max_ranges:
            raise InvalidOptionError(f"ranges= has {len(parts)} cuts; at most {config.max_ranges} are allowed.")
        ranges = []
        for part in parts:
            m = re.fullmatch(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})\s*", part)
            if not m:
                raise InvalidOptionError(f"Cut {part!r} in ranges= is not START-END in seconds.", hint="For example ranges=0-1.5,3-4.")
            ranges.append((float(m[1]), float(m[2])))
    else:
        start = _seconds("start", args["start"]) if args.get("start") is not None else 0.0
        ranges = [(start, _seconds("end", args["end"]) if args.get("end") is not None else None)]
    for a, b in ranges:
        if b is not None and a >= b:
            raise InvalidOptionError(f"Cut {a:g}-{b:g} s: the start must come before the end.")
    window = None
    if args.get("window") is not None:
        m = re.fullmatch(rf"\s*(-?{_NUMBER})\s*,\s*({_NUMBER})\s*", args["window"])
        if not m or float(m[2]) <= 0:
            raise InvalidOptionError(f"window={args['window']!r} is not CENTER,WIDTH with a width above 0.", hint="For example window=40,400.")
        window = (float(m[1]), float(m[2]))
    crf = DEFAULT_CRF
    if args.get("crf") is not None:
        text = args["crf"]
        if not re.fullmatch(r"\d{1,3}", text) or not CRF_RANGE[0] <= int(text) <= CRF_RANGE[1]:
            raise InvalidOptionError(f"crf={text!r} is outside the safe range {CRF_RANGE[0]}-{CRF_RANGE[1]}.",
                                     hint="Lower is better quality; 23 is the default.")
        crf = int(text)
    return CineOptions(tuple(ranges), window, crf)


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def frame_rate(ds: Dataset) -> tuple[float, str]:
    """Frames per second and the attribute it came from; :data:`DEFAULT_FPS` when the header gives none usable.

    Frame Time Vector (0018,1065) plays at its mean interval (its first entry, 0, is the first frame's).
    """
    candidates = []
    frame_time = _number(ds.get("FrameTime"))
    if frame_time and frame_time > 0:
        candidates.append((1000.0 / frame_time, "Frame Time (0018,1063)"))
    vector = ds.get("FrameTimeVector")
    if vector is not None:
        values = vector if isinstance(vector, (list, tuple)) or type(vector).__name__ == "MultiValue" else [vector]
        times = [t for t in (_number(v) for v in values) if t and t > 0]
        if times:
            candidates.append((1000.0 / (sum(times) / len(times)), "Frame Time Vector (0018,1065)"))
    for keyword, tag in (("CineRate", "(0018,0040)"), ("RecommendedDisplayFrameRate", "(0008,2144)")):
        rate = _number(ds.get(keyword))
        if rate:
            candidates.append((rate, f"{keyword} {tag}"))
    for fps, source in candidates:
        if FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
            return fps, source
    return DEFAULT_FPS, "default"


def plan_clip(ds: Dataset, options: CineOptions, config: CineConfig) -> Clip:
    """The frames of the requested cuts, refused with a reason when they or the instance break a rule or a limit."""
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1) if rows else 0
    if frames < 2:
        raise NotACineError(f"This instance has {frames} frame{'s' if frames != 1 else ''}: a cine needs a multi-frame image.",
                            hint="Open it as an image (Viewer or /dims).")
    if rows * columns > config.max_pixels:
        raise CineLimitError(f"Frames of {dimensions(columns, rows)} pixels are above the cine limit of {config.max_pixels} pixels.")
    fps, source = frame_rate(ds)
    duration = frames / fps
    indices: list[int] = []
    for a, b in options.ranges:
        end = duration if b is None else b
        if a >= duration or end > duration + 1e-6:
            raise InvalidOptionError(f"Cut {a:g}-{end:g} s is beyond the clip, which lasts {duration:.3f} s ({frames} frames at {fps:g}/s).")
        first, stop = math.ceil(a * fps - 1e-6), min(frames, math.ceil(end * fps - 1e-6))
        if stop <= first:
            raise InvalidOptionError(f"Cut {a:g}-{end:g} s holds no frame (one frame lasts {1 / fps:.3f} s).")
        indices += range(first, stop)
    if len(indices) > config.max_frames:
        raise CineLimitError(f"The clip has {len(indices)} frames; the cine limit is {config.max_frames}.", hint="Trim it with start= and end=.")
    if len(indices) / fps > config.max_seconds:
        raise CineLimitError(f"The clip lasts {len(indices) / fps:.1f} s; the cine limit is {config.max_seconds:g} s.",
                             hint="Trim it with start= and end=.")
    return Clip(tuple(indices), fps, source)


# -- pictures -------------------------------------------------------------------
def _label_layout(width: int) -> tuple[int, list[str], int]:
    """(font size, lines, width needed): the largest label that fits *width*, on one line or two."""
    from PIL import ImageFont

    options = ([LABEL], ["LOSSY —", LABEL.split("— ", 1)[1]])
    for size in range(16, 7, -1):
        font = ImageFont.load_default(size=size)
        for lines in options:
            needed = max(math.ceil(_line_length(font, size, line)) for line in lines) + 4
            if needed <= width:
                return size, lines, needed
    font = ImageFont.load_default(size=8)
    return 8, options[1], max(math.ceil(_line_length(font, 8, line)) for line in options[1]) + 4


def _line_length(font, size: int, line: str) -> float:
    """Pillow's built-in font has no em dash: it is drawn as a line *size* wide."""
    parts = line.split("—")
    return sum(font.getlength(part) for part in parts) + size * (len(parts) - 1)


def _draw_line(draw, font, size: int, xy: tuple[int, int], line: str, fill) -> None:
    x, y = xy
    for n, part in enumerate(line.split("—")):
        if n:
            middle = y + round(size * 0.6)
            draw.rectangle((x + 1, middle, x + size - 2, middle + max(1, size // 10)), fill=fill)
            x += size
        draw.text((x, y), part, fill=fill, font=font)
        x += font.getlength(part)


def canvas_size(rows: int, columns: int) -> tuple[int, int]:
    """(width, height) of the video for a *columns* × *rows* image: the image, a label band under it, padded to even."""
    size, lines, needed = _label_layout(columns)
    band = len(lines) * (size + 3) + 4
    width, height = max(columns, needed), rows + band
    return width + width % 2, height + height % 2


def _canvas(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """The image at the top left of a black canvas, the label in white in the band under it."""
    from PIL import Image, ImageDraw, ImageFont

    rows, columns = pixels.shape[:2]
    canvas = np.zeros((height, width, *pixels.shape[2:]), np.uint8)
    canvas[:rows, :columns] = pixels
    size, lines, _ = _label_layout(columns)
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=size)
    for n, line in enumerate(lines):
        _draw_line(draw, font, size, (2, rows + 2 + n * (size + 3)), line, 255 if canvas.ndim == 2 else (255, 255, 255))
    return np.asarray(picture)


def _window(ds: Dataset, clip: Clip, options: CineOptions) -> tuple[float, float] | None:
    """One window for every frame (no flicker): the requested one, else the image's own (VOI LUT: None) from its first frame."""
    if options.window is not None or pixel_spec(ds).samples == 3:
        return options.window
    first = clip.indices[0]
    return preset_window(IMAGE_DEFAULT, ds, modality_values(decode_frame(ds, first), ds, first), first)


def _frames(ds: Dataset, clip: Clip, options: CineOptions):
    """The clip's frames as 8-bit canvases, with the PyAV pixel format they are in."""
    spec = pixel_spec(ds)
    width, height = canvas_size(spec.rows, spec.columns)
    window = _window(ds, clip, options)
    for index in clip.indices:
        pixels = to_display(decode_frame(ds, index), ds, window, index)
        yield _canvas(pixels, width, height), "rgb24" if pixels.ndim == 3 else "gray"


def _add_video(container, ds: Dataset, clip: Clip, crf: int, gop: int | None = None):
    spec = pixel_spec(ds)
    width, height = canvas_size(spec.rows, spec.columns)
    stream = container.add_stream("libx264", rate=Fraction(clip.fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    options = {"crf": str(crf), "preset": "veryfast"}
    if gop:  # a key frame at every segment boundary, and nowhere else decides a cut
        options.update({"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
    stream.options = options
    container.metadata["title"] = LABEL
    container.metadata["comment"] = LABEL
    return stream


def _encode(container, stream, ds: Dataset, clip: Clip, options: CineOptions) -> None:
    import av

    for n, (canvas, fmt) in enumerate(_frames(ds, clip, options)):
        frame = av.VideoFrame.from_ndarray(canvas, format=fmt)
        frame.pts = n
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def encode_mp4(ds: Dataset, clip: Clip, options: CineOptions, out: str | os.PathLike) -> None:
    """Write the clip as a fast-start H.264 MP4 (yuv420p) at *out*."""
    import av

    try:
        with av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = _add_video(container, ds, clip, options.crf)
            _encode(container, stream, ds, clip, options)
    except av.FFmpegError as exc:
        raise CodecError(f"FFmpeg could not encode this cine as H.264 MP4: {exc}") from None


def encode_hls(ds: Dataset, clip: Clip, options: CineOptions, folder: str | os.PathLike,
               segment_seconds: float = 2.0) -> tuple[str, list[Path]]:
    """Write the clip as HLS VOD (MPEG-TS segments of about *segment_seconds*) into *folder*.

    Returns the playlist text (segments named ``0.ts``, ``1.ts``, …) and the segment files in order.
    """
    import av

    folder = Path(folder)
    gop = max(1, round(segment_seconds * clip.fps))
    options_hls = {"hls_time": f"{gop / clip.fps:g}", "hls_playlist_type": "vod", "hls_list_size": "0",
                   "hls_segment_filename": str(folder / "%d.ts")}
    try:
        with av.open(str(folder / "index.m3u8"), "w", format="hls", options=options_hls) as container:
            stream = _add_video(container, ds, clip, options.crf, gop)
            _encode(container, stream, ds, clip, options)
    except av.FFmpegError as exc:
        raise CodecError(f"FFmpeg could not encode this cine as HLS: {exc}") from None
    playlist = (folder / "index.m3u8").read_text()
    segments = [folder / line for line in playlist.splitlines() if line and not line.startswith("#")]
    # RFC 8216 4.3.3.1: a whole number of seconds at least every EXTINF; FFmpeg wrote 0 for a clip under 1 s
    longest = max((float(line[8:].split(",")[0]) for line in playlist.splitlines() if line.startswith("#EXTINF:")), default=1.0)
    playlist = re.sub(r"(?m)^#EXT-X-TARGETDURATION:\d+$", f"#EXT-X-TARGETDURATION:{max(1, math.ceil(longest))}", playlist)
    return playlist, segments


# -- the archive: stored at ingest (strategy 1) or cached on demand -----------------
# Strategy 1 renders the default MP4 of these modalities' cines at ingest (loops and runs that are watched as video).
INGEST_MODALITIES = ("US", "XA")


def rendered_at_ingest(row, config: CineConfig | None = None) -> bool:
    """Whether an index instance *row* gets its default MP4 made at ingest (US/XA multi-frame within the limits)."""
    from .bigimage import is_large

    config = config or CineConfig.from_env()
    frames, pixels = row["frames"] or 0, (row["rows"] or 0) * (row["columns"] or 0)
    return ((row["modality"] or "") in INGEST_MODALITIES and 1 < frames <= config.max_frames and 0 < pixels <= config.max_pixels
            and not is_large(row["rows"], row["columns"]))


def default_mp4(ds: Dataset) -> bytes:
    """The MP4 of the whole cine with default options, as bytes (the artifact stored at ingest)."""
    options = CineOptions()
    clip = plan_clip(ds, options, CineConfig.from_env())
    with tempfile.TemporaryDirectory() as folder:
        encode_mp4(ds, clip, options, Path(folder) / "cine.mp4")
        return (Path(folder) / "cine.mp4").read_bytes()


# -- the archive: cached on demand ------------------------------------------------
def lossy_header(history) -> str:
    """X-Lossy-Compression of a cine: the original's own lossy history, then H.264."""
    before = history.header()
    return f"method={METHOD}; rendering=cine" + (f"; original {before}" if before else "")


def _prepare(store, sop_uid: str, options: CineOptions, config: CineConfig):
    """The original's path, the clip (from its header only: a cached cine reads no pixels) and the cache key."""
    original = store.artifact(sop_uid, "original")
    clip = plan_clip(read_dataset(original.path, pixels=False), options, config)
    return original.path, clip, f"{original.checksum}:{options.key()}:fps={clip.fps:g}"


def cine_mp4(store, sop_uid: str, options: CineOptions, config: CineConfig) -> tuple[object, int, str, Clip, str]:
    """(open file, size, ETag, clip, "stored" | "hit" | "miss") of the instance's MP4 for *options*:
    the one stored at ingest, else made once (under a lock) and cached."""
    from .archive import _cache

    path, clip, key = _prepare(store, sop_uid, options, config)
    stored = store.artifact(sop_uid, "cine") if options == CineOptions() else None
    if stored is not None:
        return open(stored.path, "rb"), stored.bytes, stored.checksum[:32], clip, "stored"
    cache = _cache(store)
    key = "cine-mp4:" + key
    handle = cache.get(key, read=True)
    source = "hit" if handle is not None else "miss"
    if handle is None:
        with item_lock(store.root, key):
            handle = cache.get(key, read=True)
            if handle is None:
                tmp = store.tmp_path(".mp4")
                try:
                    encode_mp4(read_dataset(path), clip, options, tmp)
                    with open(tmp, "rb") as fh:
                        cache.set(key, fh, read=True)
                finally:
                    tmp.unlink(missing_ok=True)
                handle = cache.get(key, read=True)
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    return handle, size, hashlib.sha256(key.encode()).hexdigest()[:32], clip, source


def cine_hls(store, sop_uid: str, options: CineOptions, config: CineConfig, segment: int | None,
             segment_uri: Callable[[int], str]) -> tuple[bytes, str, Clip]:
    """(bytes, ETag, clip) of the HLS playlist (*segment* None; URIs from *segment_uri*) or of segment number *segment*."""
    from .archive import _cache

    path, clip, key = _prepare(store, sop_uid, options, config)
    cache = _cache(store)
    key = f"cine-hls:{key}:seg={config.segment_seconds:g}"
    entry = cache.get(key)
    if entry is None:
        with item_lock(store.root, key):
            entry = cache.get(key)
            if entry is None:
                folder = Path(tempfile.mkdtemp(dir=store.tmp_path().parent))
                try:
                    playlist, segments = encode_hls(read_dataset(path), clip, options, folder, config.segment_seconds)
                    entry = {"playlist": playlist, "segments": len(segments)}
                    for n, path in enumerate(segments):
                        cache.set(f"{key}:{n}", path.read_bytes())
                    cache.set(key, entry)  # last: the playlist is only there once every segment is
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
    etag = hashlib.sha256(f"{key}:{segment}".encode()).hexdigest()[:32]
    if segment is None:
        names = {f"{n}.ts": segment_uri(n) for n in range(entry["segments"])}
        text = "\n".join(names.get(line, line) for line in entry["playlist"].splitlines()) + "\n"
        return text.encode(), etag, clip
    if not 0 <= segment < entry["segments"]:
        raise InvalidOptionError(f"Segment {segment} does not exist; this clip has {entry['segments']} (0-{entry['segments'] - 1}).")
    data = cache.get(f"{key}:{segment}")
    if data is None:  # evicted on its own: make the set again
        cache.delete(key)
        return cine_hls(store, sop_uid, options, config, segment, segment_uri)
    return data, etag, clip
