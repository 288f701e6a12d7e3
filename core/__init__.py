"""RadPress core: decode clinical DICOM, compress it honestly, measure what was lost.

No Dash here: the web app, the CLI and the tests all call this library.
"""

from .codecs import CODECS, Codec, choose_codec, codec_for_uid, get_codec
from .compress import Compressed, compress
from .errors import RadPressError
from .metrics import Metrics, compare
from .pixels import PixelSpec, decode_frame, pixel_spec, read_dataset
from .verify import Verification, verify

__all__ = [
    "CODECS",
    "Codec",
    "Compressed",
    "Metrics",
    "PixelSpec",
    "RadPressError",
    "Verification",
    "choose_codec",
    "codec_for_uid",
    "compare",
    "compress",
    "decode_frame",
    "get_codec",
    "pixel_spec",
    "read_dataset",
    "verify",
]
