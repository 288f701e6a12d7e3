"""Typed errors whose message a clinic administrator can act on.

Every entry point (CLI, HTTP routes, upload) turns a :class:`RadPressError`
into one readable line and a 4xx status / exit code 2; anything else is a bug.
"""

__all__ = [
    "RadPressError",
    "NotDicomError",
    "TruncatedError",
    "NoPixelDataError",
    "UnsupportedError",
    "InvalidOptionError",
    "CodecError",
    "InvalidHeaderError",
]


class RadPressError(Exception):
    """Base class: ``str(err)`` is the user-facing message."""

    http_status = 400

    def __init__(self, message: str, *, hint: str = ""):
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}".strip())


class NotDicomError(RadPressError):
    """The file is not a DICOM Part 10 file."""

    http_status = 415


class TruncatedError(RadPressError):
    """The file ends before its pixel data does."""


class NoPixelDataError(RadPressError):
    """The dataset holds no image (a report, a DICOMDIR, a key object ...)."""

    http_status = 422


class UnsupportedError(RadPressError):
    """Valid DICOM that this product cannot process in the way asked."""

    http_status = 415


class InvalidOptionError(RadPressError):
    """A parameter is out of range or conflicts with another one."""


class CodecError(RadPressError):
    """An encoder or decoder failed on data it claims to support."""

    http_status = 422


class InvalidHeaderError(RadPressError):
    """A DICOM attribute breaks a rule of the standard (a UID, an image header): refused before any use."""

    http_status = 422
