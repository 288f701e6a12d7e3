"""URL image transforms in the manner of mod_dims: ``/dims/<sop>/<op>/<args>/<op>/<args>/...``.

The grammar is declarative — one pattern per command, with the inverse that
writes it back — so a chain is parsed, validated and normalised before any
image is loaded; the normalised chain is the cache key.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import InvalidOptionError, RadPressError

__all__ = ["Command", "COMMANDS", "Chain", "parse_chain", "DimsConfig", "DimsError", "apply_chain", "Geometry"]


class DimsError(RadPressError):
    """A DIMS failure with one of the reasons mod_dims reports, naming the command."""

    def __init__(self, reason: str, message: str, status: int, command: str = ""):
        self.reason, self.command = reason, command
        self.http_status = status
        super().__init__(f"{reason}: {message}" + (f" (command '{command}')" if command else ""))


def invalid(command: str, message: str) -> DimsError:
    return DimsError("invalid command", message, 400, command)


@dataclass(frozen=True)
class Geometry:
    """ImageMagick-style geometry: WxH, W, xH, with %, ! (exact), < (only enlarge), > (only shrink), +X+Y offsets."""

    width: float | None
    height: float | None
    flag: str = ""
    x: float = 0
    y: float = 0

    _PATTERN = re.compile(r"^(?P<w>\d+(?:\.\d+)?)?(?:x(?P<h>\d+(?:\.\d+)?))?(?P<flag>[%!<>])?(?:\+(?P<x>\d+)\+(?P<y>\d+))?(?P<flag2>%)?$")

    @classmethod
    def parse(cls, text: str, command: str) -> "Geometry":
        m = cls._PATTERN.match(text)
        if not m or (m["w"] is None and m["h"] is None):
            raise invalid(command, f"malformed geometry {text!r}; use WxH, W, xH, WxH%, WxH!, WxH<, WxH> or WxH+X+Y")
        flag = m["flag"] or m["flag2"] or ""
        return cls(float(m["w"]) if m["w"] else None, float(m["h"]) if m["h"] else None, flag,
                   float(m["x"] or 0), float(m["y"] or 0))

    def __str__(self) -> str:
        size = (f"{self.width:g}" if self.width is not None else "") + (f"x{self.height:g}" if self.height is not None else "")
        offset = f"+{self.x:g}+{self.y:g}" if self.x or self.y else ""
        return size + offset + self.flag if self.flag == "%" else size + self.flag + offset

    def target(self, width: int, height: int, keep_aspect: bool = True) -> tuple[int, int]:
        """Output size for a *width* x *height* source."""
        w, h = self.width, self.height
        if self.flag == "%":
            w, h = (w if w is not None else h), (h if h is not None else w)
            return max(1, round(width * w / 100)), max(1, round(height * h / 100))
        if self.flag == "!" and w and h:
            return int(w), int(h)
        scale_w = w / width if w else None
        scale_h = h / height if h else None
        scale = min(s for s in (scale_w, scale_h) if s is not None) if keep_aspect else None
        if self.flag == ">" and scale is not None and scale >= 1:
            return width, height
        if self.flag == "<" and scale is not None and scale <= 1:
            return width, height
        return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class Command:
    name: str
    pattern: str  # the argument; "" for commands that take none
    parse: Callable[[re.Match, str], Any]
    write: Callable[[Any], str] = str


def _number(m, _cmd):
    return float(m[0])


def _geometry(m, cmd):
    return Geometry.parse(m[0], cmd)


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("frame", r"\d+", lambda m, c: int(m[0])),
    Command("window", r"-?\d+(?:\.\d+)?,\d+(?:\.\d+)?", lambda m, c: tuple(float(v) for v in m[0].split(",")),
            lambda v: f"{v[0]:g},{v[1]:g}"),
    Command("variant", r"original|lossless|lossy", lambda m, c: m[0]),
    Command("ratio", r"\d+(?:\.\d+)?", _number, lambda v: f"{v:g}"),
    Command("crop", r"[^/]+", _geometry),
    Command("thumbnail", r"[^/]+", _geometry),
    Command("resize", r"[^/]+", _geometry),
    Command("format", r"png|jpe?g|webp|gif|jp2", lambda m, c: "jpeg" if m[0] in ("jpg", "jpeg") else m[0]),
    Command("quality", r"\d{1,3}", lambda m, c: int(m[0])),
    Command("optimize", "", lambda m, c: True, lambda v: ""),
    Command("composite", r"[A-Za-z0-9_-]+", lambda m, c: m[0]),
    Command("byoriginal", r"[A-Za-z0-9_-]+", lambda m, c: m[0]),
    Command("firstframeonly", r"on|off", lambda m, c: m[0] == "on", lambda v: "on" if v else "off"),
    Command("limit", r"\d+", lambda m, c: int(m[0])),
)}


@dataclass
class DimsConfig:
    max_source_mb: float = 512
    max_output_pixels: int = 40_000_000
    on_failure: str = "message"  # or "redirect"
    overlays: dict[str, dict] = field(default_factory=dict)  # name -> {file, gravity, geometry, dissolve}
    byoriginal: dict[str, list[dict]] = field(default_factory=dict)  # name -> [{max_pixels, chain}, ..., {chain}]


Chain = list[tuple[str, Any]]


def parse_chain(path: str, config: DimsConfig) -> Chain:
    """``op/args/op/args...`` to a validated list of (command, value); nothing is decoded yet."""
    parts = [p for p in path.split("/") if p]
    chain: Chain = []
    i = 0
    while i < len(parts):
        name = parts[i]
        command = COMMANDS.get(name)
        if command is None:
            raise invalid(name, f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
        if command.pattern == "":
            chain.append((name, command.parse(None, name)))
            i += 1
            continue
        if i + 1 >= len(parts):
            raise invalid(name, "missing argument")
        arg = parts[i + 1]
        m = re.fullmatch(command.pattern, arg)
        if not m:
            raise invalid(name, f"bad argument {arg!r}")
        value = command.parse(m, name)
        _check(name, value, config)
        chain.append((name, value))
        i += 2
    return chain


def _check(name: str, value, config: DimsConfig) -> None:
    if name == "quality" and not 0 <= value <= 100:
        raise invalid(name, f"quality {value} is not between 0 and 100")
    if name == "ratio":
        from .codecs import check_ratio

        try:
            check_ratio(value, True)
        except InvalidOptionError as exc:
            raise invalid(name, exc.message) from None
    if name in ("thumbnail", "resize", "crop") and 0 in (value.width, value.height):
        raise invalid(name, f"{value} is empty; a width or height must be at least 1")
    if name in ("thumbnail", "resize", "crop") and value.flag != "%":
        w, h = value.width or 1, value.height or 1
        if w * h > config.max_output_pixels or max(w, h) > 65_000:
            raise invalid(name, f"{value} is larger than the limit of {config.max_output_pixels} pixels")
    if name in ("thumbnail", "resize", "crop") and value.flag == "%" and max(value.width or 0, value.height or 0) > 1000:
        raise invalid(name, f"{value} enlarges more than 10x")
    if name == "composite" and value not in config.overlays:
        raise invalid(name, f"no overlay named {value!r} is configured")
    if name == "byoriginal" and value not in config.byoriginal:
        raise invalid(name, f"no byoriginal rule named {value!r} is configured")
    if name in ("frame", "limit") and value < 1:
        raise invalid(name, f"{name} counts from 1")


def normalise(chain: Chain) -> str:
    return "/".join(f"{n}/{COMMANDS[n].write(v)}" if COMMANDS[n].pattern else n for n, v in chain)


def expand_byoriginal(chain: Chain, config: DimsConfig, pixels: int) -> Chain:
    """Replace byoriginal/NAME with the chain its rule picks for a source of *pixels* pixels."""
    out: Chain = []
    for name, value in chain:
        if name != "byoriginal":
            out.append((name, value))
            continue
        for rule in config.byoriginal[value]:
            if pixels <= rule.get("max_pixels", float("inf")):
                out += parse_chain(rule["chain"], config)
                break
    return out


# -- applying a chain to rendered 8-bit frames ----------------------------------------
_GRAVITY = {"nw": (0, 0), "n": (0.5, 0), "ne": (1, 0), "w": (0, 0.5), "c": (0.5, 0.5), "center": (0.5, 0.5),
            "e": (1, 0.5), "sw": (0, 1), "s": (0.5, 1), "se": (1, 1)}


def _crop(image, g: Geometry, command: str):
    w, h = image.size
    if g.flag == "%":
        cw, ch = round(w * (g.width or 100) / 100), round(h * (g.height or g.width or 100) / 100)
        x, y = round(w * g.x / 100), round(h * g.y / 100)
    else:
        cw, ch, x, y = int(g.width or w), int(g.height or h), int(g.x), int(g.y)
    if x >= w or y >= h or cw <= 0 or ch <= 0:
        raise invalid(command, f"crop {g} lies outside the {w}x{h} image")
    return image.crop((x, y, min(w, x + cw), min(h, y + ch)))


def _composite(image, overlay: dict, command: str):
    from PIL import Image

    try:
        mark = Image.open(overlay["file"]).convert("RGBA")
    except OSError as exc:
        raise DimsError("source could not be loaded", f"overlay {overlay.get('file')}: {exc}", 422, command) from None
    base = image.convert("RGBA")
    gx, gy = _GRAVITY.get(overlay.get("gravity", "se"), (1, 1))
    m = re.fullmatch(r"\+(\d+)\+(\d+)(%?)", overlay.get("geometry", "+0+0"))
    if not m:
        raise invalid(command, f"overlay geometry {overlay.get('geometry')!r} is not +X+Y or +X+Y%")
    dx, dy = float(m[1]), float(m[2])
    if m[3]:
        dx, dy = dx * base.width / 100, dy * base.height / 100
    x = round(gx * (base.width - mark.width) + (dx if gx < 1 else -dx))
    y = round(gy * (base.height - mark.height) + (dy if gy < 1 else -dy))
    alpha = mark.getchannel("A").point(lambda a: a * float(overlay.get("dissolve", 100)) / 100)
    mark.putalpha(alpha)
    base.alpha_composite(mark, (max(0, x), max(0, y)))
    return base.convert("RGB")  # a coloured overlay on a grey image needs colour


def lossy_label(image, text: str):
    """Burn the LOSSY disclosure into the top-left corner (legible on any image)."""
    from PIL import ImageDraw, ImageFont

    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    size = max(10, image.width // 30)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:
        font = ImageFont.load_default()
    box = draw.textbbox((4, 4), text, font=font)
    draw.rectangle((0, 0, box[2] + 4, box[3] + 4), fill=(255, 224, 138))
    draw.text((4, 4), text, fill=(40, 25, 0), font=font)
    return image


def apply_chain(frames: list[np.ndarray], chain: Chain, config: DimsConfig, label: str | None) -> tuple[bytes, str]:
    """Geometry and output commands on rendered frames; returns (bytes, format)."""
    from PIL import Image

    from .render import encode_image

    images = [Image.fromarray(f) for f in frames]
    fmt, quality, optimize = "png", 90, False
    for name, value in chain:
        if name == "crop":
            images = [_crop(im, value, name) for im in images]
        elif name in ("thumbnail", "resize"):
            size = value.target(*images[0].size, keep_aspect=value.flag != "!")
            if size[0] * size[1] > config.max_output_pixels:
                raise invalid(name, f"{size[0]}x{size[1]} is larger than the limit of {config.max_output_pixels} pixels")
            images = [im.resize(size, Image.LANCZOS) for im in images]
        elif name == "composite":
            images = [_composite(im, config.overlays[value], name) for im in images]
        elif name == "format":
            fmt = value
        elif name == "quality":
            quality = value
        elif name == "optimize":
            optimize = True
    if label:
        images = [lossy_label(im, label) for im in images]
    if len(images) > 1 and fmt in ("gif", "png"):
        buffer = io.BytesIO()
        images[0].save(buffer, format="GIF" if fmt == "gif" else "PNG", save_all=True, append_images=images[1:],
                       duration=100, loop=0, optimize=optimize)
        return buffer.getvalue(), fmt
    if optimize and fmt == "jpeg":
        quality = min(quality, 85)
    return encode_image(np.asarray(images[0]), fmt, quality, optimize), fmt
