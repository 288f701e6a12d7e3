"""JPEG XL (libjxl): modular lossless, and VarDCT lossy at a target ratio.

JPEG XL stores unsigned samples only; signed images are refused rather than
shifted.  The lossy knob is the Butteraugli distance, searched for the ratio.

Decoding asks libjxl (the copy imagecodecs bundles) for its reconstruction as
floats and rounds to the nearest level of the codestream's bit depth.  libjxl's
own 8-bit output adds a 32×32 blue-noise ordered dither before rounding (0.11
here, not 0.7: ``MakeUnsigned`` in ``lib/jxl/render_pipeline/stage_write.cc``),
a display nicety that moved 7.6 % of an 8-bit CR's pixels by one level at 10:1,
cost 0.89 dB of PSNR (55.99 vs 56.88 dB) and made the same file decode
differently here and in Debian's djxl 0.7, which rounds.  Rounded, the two
agree on every pixel (tests/core/test_jxl.py); the dither is noise that the
file does not hold.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np

from ..errors import CodecError, UnsupportedError
from ..pixels import PixelSpec, stored_values
from .rate import Knob, encode_to_ratio

DEPENDENCIES = "imagecodecs built with libjxl"
# Modular (lossless) effort 5 runs at ~6 MB/s for < 3 % smaller files than
# effort 3 at ~40 MB/s on the pydicom-data CR/MR images; VarDCT (lossy) is
# cheap enough at 5.
LOSSLESS_EFFORT = 3
LOSSY_EFFORT = 5


def is_available() -> bool:
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(imagecodecs.JPEGXL.available)


def photometric(spec: PixelSpec, lossy: bool) -> str:
    return spec.photometric


def check(spec: PixelSpec, lossy: bool) -> None:
    if spec.signed:
        raise UnsupportedError(
            "JPEG XL cannot store signed pixel data (Pixel Representation (0028,0103) = 1).",
            hint="Use --codec j2k, htj2k or jpegls for this image.",
        )


def knob(spec: PixelSpec) -> Knob:
    """The Butteraugli distance; libjxl accepts at most 25."""
    return Knob(low=0.01, high=25.0, guess=lambda r: 1.0)


def encode_at(frame: np.ndarray, spec: PixelSpec, distance: float | None) -> bytes:
    """One encoding: modular lossless when *distance* is None, else VarDCT at that distance."""
    import imagecodecs

    return bytes(
        imagecodecs.jpegxl_encode(
            np.ascontiguousarray(stored_values(frame, spec)),
            lossless=distance is None,
            distance=distance,
            effort=LOSSLESS_EFFORT if distance is None else LOSSY_EFFORT,
            bitspersample=spec.bits_stored,
        )
    )


def encode(frame: np.ndarray, spec: PixelSpec, ratio: float | None) -> bytes:
    if ratio is None:
        return encode_at(frame, spec, None)
    return encode_to_ratio(lambda d: encode_at(frame, spec, d), knob(spec), spec.frame_bytes, ratio)[0]


def decode(data: bytes, spec: PixelSpec) -> np.ndarray:
    """The codestream's pixels, rounded to its bit depth without libjxl's 8-bit dither (see the module's note)."""
    return reconstruct(data, spec).astype(spec.dtype, copy=False)


class _BasicInfo(ctypes.Structure):
    """The leading fields of ``JxlBasicInfo`` (unchanged since libjxl 0.7), padded past the whole struct."""

    _fields_ = [("have_container", ctypes.c_int32), ("xsize", ctypes.c_uint32), ("ysize", ctypes.c_uint32),
                ("bits_per_sample", ctypes.c_uint32), ("exponent_bits_per_sample", ctypes.c_uint32),
                ("intensity_target", ctypes.c_float), ("min_nits", ctypes.c_float), ("relative_to_max_display", ctypes.c_int32),
                ("linear_below", ctypes.c_float), ("uses_original_profile", ctypes.c_int32), ("have_preview", ctypes.c_int32),
                ("have_animation", ctypes.c_int32), ("orientation", ctypes.c_int32), ("num_color_channels", ctypes.c_uint32),
                ("num_extra_channels", ctypes.c_uint32), ("rest", ctypes.c_uint8 * 448)]


class _PixelFormat(ctypes.Structure):
    _fields_ = [("num_channels", ctypes.c_uint32), ("data_type", ctypes.c_int), ("endianness", ctypes.c_int),
                ("align", ctypes.c_size_t)]


_FLOAT = 0  # JxlDataType
_SUCCESS, _ERROR, _NEED_MORE_INPUT, _NEED_IMAGE_OUT_BUFFER, _BASIC_INFO, _FULL_IMAGE = 0, 1, 2, 5, 0x40, 0x1000


@functools.cache
def _libjxl() -> ctypes.CDLL:
    """The libjxl imagecodecs encodes with (its wheels bundle it in ``imagecodecs.libs``), else the system's."""
    import ctypes.util

    import imagecodecs
    import imagecodecs._jpegxl  # noqa: F401 - loads what the bundled libjxl links to (its own libjxl_cms ...)

    bundled = sorted((Path(imagecodecs.__file__).parent.parent / "imagecodecs.libs").glob("libjxl-*.so*"))
    path = str(bundled[-1]) if bundled else ctypes.util.find_library("jxl")
    if path is None:
        raise CodecError("libjxl was not found to decode JPEG XL.", hint="Install imagecodecs with JPEG XL support.")
    lib = ctypes.CDLL(path)
    vp = ctypes.c_void_p
    for name, args in (("JxlDecoderSubscribeEvents", [vp, ctypes.c_int]), ("JxlDecoderSetInput", [vp, ctypes.c_char_p, ctypes.c_size_t]),
                       ("JxlDecoderProcessInput", [vp]), ("JxlDecoderGetBasicInfo", [vp, ctypes.POINTER(_BasicInfo)]),
                       ("JxlDecoderSetImageOutBuffer", [vp, ctypes.POINTER(_PixelFormat), vp, ctypes.c_size_t])):
        getattr(lib, name).argtypes, getattr(lib, name).restype = args, ctypes.c_int
    lib.JxlDecoderCreate.argtypes, lib.JxlDecoderCreate.restype = [vp], vp
    lib.JxlDecoderCloseInput.argtypes, lib.JxlDecoderCloseInput.restype = [vp], None
    lib.JxlDecoderDestroy.argtypes, lib.JxlDecoderDestroy.restype = [vp], None
    return lib


def coded_in_xyb(data: bytes) -> bool | None:
    """Whether a JPEG XL codestream is coded in XYB, libjxl's lossy colour space (lossless coding keeps the image's
    own: ``uses_original_profile``), from its header alone; None when the header cannot be read."""
    lib = _libjxl()
    decoder = lib.JxlDecoderCreate(None)
    if not decoder:
        return None
    source, info = ctypes.create_string_buffer(bytes(data), len(data)), _BasicInfo()
    try:
        if lib.JxlDecoderSubscribeEvents(decoder, _BASIC_INFO) or lib.JxlDecoderSetInput(decoder, source, len(data)):
            return None
        lib.JxlDecoderCloseInput(decoder)
        if lib.JxlDecoderProcessInput(decoder) != _BASIC_INFO or lib.JxlDecoderGetBasicInfo(decoder, ctypes.byref(info)):
            return None
    finally:
        lib.JxlDecoderDestroy(decoder)
    return not info.uses_original_profile


def reconstruct(data: bytes, spec: PixelSpec | None = None) -> np.ndarray:
    """A JPEG XL codestream's image at its own bit depth (uint8 up to 8 bits, else uint16): libjxl's float
    reconstruction rounded to the nearest level, rows × columns (× 3 for colour).

    With *spec*, a codestream that is not the image it describes is refused from its header, before anything is
    allocated (a few bytes may declare 100,000 × 100,000 pixels): reshaped to Rows × Columns it would be drawn
    scrambled, cast to Bits Allocated wrapped, and copied "losslessly" that way."""
    lib = _libjxl()
    decoder = lib.JxlDecoderCreate(None)
    if not decoder:
        raise CodecError("libjxl could not create a decoder.")
    source = ctypes.create_string_buffer(bytes(data), len(data))
    info, out = _BasicInfo(), None
    try:
        if lib.JxlDecoderSubscribeEvents(decoder, _BASIC_INFO | _FULL_IMAGE) or lib.JxlDecoderSetInput(decoder, source, len(data)):
            raise CodecError("libjxl refused the JPEG XL codestream.")
        lib.JxlDecoderCloseInput(decoder)
        while (status := lib.JxlDecoderProcessInput(decoder)) != _SUCCESS:
            if status == _BASIC_INFO:
                if lib.JxlDecoderGetBasicInfo(decoder, ctypes.byref(info)):
                    raise CodecError("libjxl could not read the JPEG XL header.")
                if info.exponent_bits_per_sample or not 1 <= info.bits_per_sample <= 16 or info.num_color_channels not in (1, 3):
                    raise CodecError(f"JPEG XL codestream of {info.bits_per_sample}-bit samples, {info.num_color_channels} "
                                     "colour channels: not an image DICOM stores.")
                shape = (info.ysize, info.xsize) + ((3,) if info.num_color_channels == 3 else ())
                if spec is not None and (shape != spec.shape or (info.bits_per_sample > 8) + 1 > spec.dtype.itemsize):
                    raise CodecError(f"The JPEG XL codestream holds a {' × '.join(map(str, shape))} image of "
                                     f"{info.bits_per_sample}-bit samples, but the DICOM header describes "
                                     f"{' × '.join(map(str, spec.shape))} of {spec.bits_allocated}-bit: one of them is wrong.",
                                     hint="Ask the sender for an uncompressed or re-encoded export.")
                out = np.empty(shape, np.float32)
                pixel_format = _PixelFormat(info.num_color_channels, _FLOAT, 0, 0)
            elif status == _NEED_IMAGE_OUT_BUFFER and out is not None:
                if lib.JxlDecoderSetImageOutBuffer(decoder, ctypes.byref(pixel_format), out.ctypes.data, out.nbytes):
                    raise CodecError("libjxl refused the output buffer.")
            elif status != _FULL_IMAGE:
                raise CodecError("The JPEG XL codestream is damaged or truncated" +
                                 (": libjxl needs more data." if status == _NEED_MORE_INPUT else "."))
    finally:
        lib.JxlDecoderDestroy(decoder)
    if out is None:
        raise CodecError("The JPEG XL codestream holds no image.")
    peak = (1 << info.bits_per_sample) - 1
    return np.rint(np.clip(out, 0.0, 1.0, out=out) * np.float32(peak)).astype(np.uint8 if peak < 256 else np.uint16)
