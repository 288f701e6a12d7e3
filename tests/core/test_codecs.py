import glymur
import numpy as np
import pytest
from pydicom.encaps import generate_frames

from core.codecs import CODECS, OHIF_RULE, AutoRule, check_ratio, choose_codec, codec_for_uid, get_codec
from core.codecs.codestream import parse_main_header
from core.codecs.rate import RATIO_TOLERANCE, Knob, encode_to_ratio, pick
from core.compress import compress
from core.errors import InvalidOptionError, UnsupportedError
from core.pixels import decode_all, decode_frame, pixel_spec
from tests.reference import CODEC_SAMPLES
from tests.synthetic import KINDS, make_dataset

WRITERS = ("j2k", "htj2k", "jpegls", "jxl")


def frames_of(ds):
    return list(generate_frames(ds.PixelData, number_of_frames=pixel_spec(ds).frames))


def expected_refusal(codec, spec, lossy):
    """Why a codec must refuse an image, or None when it must encode it."""
    if spec.signed and codec == "jxl":
        return "JPEG XL cannot store signed"
    if spec.signed and codec == "jpegls" and lossy:
        return "wrapping around zero"
    if lossy and spec.photometric == "PALETTE COLOR":
        return "PALETTE COLOR"
    return None


@pytest.mark.parametrize("codec", WRITERS)
@pytest.mark.parametrize("name", CODEC_SAMPLES)
def test_lossless_round_trip_is_bit_exact(codec, name, load):
    source = load(name)
    spec = pixel_spec(source)
    reason = expected_refusal(codec, spec, lossy=False)
    if reason:
        with pytest.raises(UnsupportedError, match=reason):
            compress(source, codec, "lossless")
        return
    result = compress(source, codec, "lossless")
    original = decode_all(source)
    # through the registry's own decoder, frame by frame ...
    registry = np.stack([result.codec.decode(f, spec) for f in frames_of(result.dataset)])
    assert np.array_equal(registry, original)
    # ... and through pydicom's plugins reading the written dataset
    assert np.array_equal(decode_all(result.dataset), original)
    assert result.dataset.file_meta.TransferSyntaxUID == result.codec.transfer_syntax
    assert not result.codec.lossy


@pytest.mark.parametrize("ratio", [5, 10, 20, 50])
@pytest.mark.parametrize("name", ["693_UNCR", "MR2_UNCR", "RG1_UNCR", "RG3_UNCR", "US1_UNCR"])
def test_lossy_j2k_lands_within_10_percent_of_the_target(name, ratio, load):
    result = compress(load(name), "j2k", "lossy", ratio)
    if abs(result.ratio - ratio) / ratio > 0.10:
        # Only allowed where even lossless compresses about as far as the target:
        # the finest 9/7 quantisation cannot make a file larger than that.
        lossless = compress(load(name), "j2k", "lossless").ratio
        assert result.ratio > ratio and lossless >= 0.9 * ratio, f"achieved {result.ratio:.2f}:1 for {ratio}:1"
    info = parse_main_header(frames_of(result.dataset)[0])
    assert not info.reversible, "lossy JPEG 2000 uses the irreversible 9/7 wavelet"


@pytest.mark.parametrize("codec", ["htj2k", "jpegls", "jxl"])
@pytest.mark.parametrize("name", ["MR2_UNCR", "RG3_UNCR"])
def test_other_lossy_codecs_reach_a_10_to_1_target(codec, name, load):
    """RG3 in JPEG-LS is out of reach: lossless (NEAR 0) is 7.3:1 and NEAR 1 already 12:1."""
    result = compress(load(name), codec, "lossy", 10)
    assert result.codec.lossy
    if abs(result.ratio / 10 - 1) > RATIO_TOLERANCE:
        frame = decode_frame(load(name), 0)
        assert_out_of_reach(result.codec, frame, result.spec, 10, result.ratio)


def assert_out_of_reach(lossy, frame, spec, ratio, achieved):
    """A missed target lies where the codec cannot go, and the copy kept is the nearest lower ratio.

    Either the codec's coarsest setting stays below the target window, or
    the target falls between two neighbouring settings of an integer knob.
    """
    backend, knob = lossy.backend, lossy.backend.knob(spec)

    def at(value):
        return spec.frame_bytes / len(backend.encode_at(frame, spec, value))

    low, high = ratio * (1 - RATIO_TOLERANCE), ratio * (1 + RATIO_TOLERANCE)
    assert achieved < ratio, f"{achieved:.2f}:1 for {ratio}:1: a missed target must land on the lower-ratio side"
    coarsest = at(knob.high if knob.shrinks else knob.low)
    if coarsest < low:
        assert achieved >= 0.9 * coarsest, f"{achieved:.2f}:1 is not the lower ratio nearest {ratio}:1"
        return
    assert knob.integer, f"{achieved:.2f}:1 for {ratio}:1 although the codec reaches {coarsest:.1f}:1"
    step = int(knob.low)
    while at(step + 1) < low:
        step += 1
    assert at(step + 1) > high and at(step) == pytest.approx(achieved)


@pytest.mark.parametrize("name", ["MR2_UNCR", "RG1_UNCR", "US1_UNCR"])
def test_lossy_quality_falls_as_the_ratio_rises(name, load):
    from core.verify import verify

    source = load(name)
    psnrs = [verify(source, compress(source, "j2k", "lossy", r).dataset).metrics.psnr for r in (5, 20, 50)]
    assert psnrs[0] > psnrs[1] > psnrs[2]


@pytest.mark.parametrize("name", ["693_UNCR", "MR2_UNCR", "RG1_UNCR", "US1_UNCR"])
def test_j2k_lossless_settings_read_back(name, load, tmp_path):
    source = load(name)
    spec = pixel_spec(source)
    codestream = frames_of(compress(source, "j2k", "lossless").dataset)[0]
    info = parse_main_header(codestream)
    assert info.progression == "RPCL" and info.reversible and info.layers == 1
    assert max(info.base_resolution) <= 64 and info.decompositions >= 1
    assert info.signed == spec.signed
    assert info.mct == (spec.samples == 3)
    # glymur (OpenJPEG) reads the same settings, and a reduced resolution decodes.
    path = tmp_path / "frame.j2k"
    path.write_bytes(codestream)
    jp2 = glymur.Jp2k(path)
    cod = next(s for s in jp2.codestream.segment if s.marker_id == "COD")
    assert cod.prog_order == glymur.core.RPCL
    assert cod.layers == 1
    assert jp2[::4, ::4].shape[:2] == (-(-spec.rows // 4), -(-spec.columns // 4))


def test_signed_ct_is_encoded_as_signed(load):
    source = load("693_UNCR")
    for codec in ("j2k", "htj2k"):
        for mode, ratio in (("lossless", None), ("lossy", 10)):
            info = parse_main_header(frames_of(compress(source, codec, mode, ratio).dataset)[0])
            assert info.signed, f"{codec} {mode} lost the sign"


@pytest.mark.parametrize("name", ["MR2_UNCR", "RG1_UNCR", "US1_UNCR"])
def test_htj2k_rpcl_syntax_requirements(name, load):
    result = compress(load(name), "htj2k", "lossless")
    assert result.codec.transfer_syntax == "1.2.840.10008.1.2.4.202"
    info = parse_main_header(frames_of(result.dataset)[0])
    assert info.htj2k and info.progression == "RPCL" and info.tlm and info.reversible
    assert max(info.base_resolution) <= 64


def test_colour_transform_sets_photometric(load):
    source = load("US1_UNCR")
    assert compress(source, "j2k", "lossless").dataset.PhotometricInterpretation == "YBR_RCT"
    assert compress(source, "j2k", "lossy", 10).dataset.PhotometricInterpretation == "YBR_ICT"
    assert compress(source, "htj2k", "lossy", 10).dataset.PhotometricInterpretation == "YBR_ICT"
    assert compress(source, "jpegls", "lossless").dataset.PhotometricInterpretation == "RGB"
    ybr = compress(load("SC_ybr_full_uncompressed"), "j2k", "lossless")
    assert ybr.dataset.PhotometricInterpretation == "YBR_FULL"  # no colour transform on YBR data
    assert not parse_main_header(frames_of(ybr.dataset)[0]).mct


@pytest.mark.parametrize(
    "name, lossy, expected",
    [
        ("emri_small", False, "jpegls"),  # small grayscale
        ("693_UNCR", False, "jpegls"),
        ("MR2_UNCR", False, "jxl"),  # large grayscale, archived: smallest
        ("RG1_UNCR", True, "htj2k"),  # large grayscale, web delivery: fastest
        ("US1_UNCR", False, "jxl"),  # colour
        ("693_UNCR", True, "htj2k"),  # signed: JPEG-LS near-lossless refuses, first fallback
    ],
)
def test_auto_rule(name, lossy, expected, load):
    assert choose_codec("auto", lossy, pixel_spec(load(name))).name == expected


def test_auto_rule_is_configurable(load):
    rule = AutoRule(small_side=2048, lossless=("j2k", "htj2k", "jxl"))
    assert choose_codec("auto", False, pixel_spec(load("MR2_UNCR")), rule).name == "j2k"
    assert choose_codec("auto", False, pixel_spec(load("MR2_UNCR")), OHIF_RULE).name == "htj2k"


def test_registry_is_consistent():
    uids = [c.transfer_syntax for c in CODECS]
    assert len(uids) == len(set(uids))
    for codec in CODECS:
        assert codec_for_uid(codec.transfer_syntax) is codec
        assert codec.method.startswith("ISO_")
    assert get_codec("j2k", True).transfer_syntax == "1.2.840.10008.1.2.4.91"
    assert get_codec("jpegls", False).transfer_syntax == "1.2.840.10008.1.2.4.80"
    with pytest.raises(InvalidOptionError, match="Choose one of"):
        get_codec("webp", False)


@pytest.mark.parametrize("ratio, lossy", [(1, True), (500, True), (None, True), (10, False)])
def test_ratio_is_validated_before_work(ratio, lossy):
    with pytest.raises(InvalidOptionError):
        check_ratio(ratio, lossy)


def test_unsupported_bit_depths_are_refused(load):
    with pytest.raises(UnsupportedError, match="Bits Allocated"):
        compress(load("liver"), "j2k", "lossless")
    with pytest.raises(UnsupportedError, match="Bits Allocated"):
        compress(load("SC_rgb_32bit"), "htj2k", "lossless")


def test_rate_search_converges_on_a_monotonic_encoder():
    calls = []

    def encode(q):
        calls.append(q)
        return b"x" * int(100000 / q)

    data, knob = encode_to_ratio(encode, Knob(low=0.1, high=1000), uncompressed=1_000_000, ratio=20)
    assert abs(1_000_000 / len(data) - 20) / 20 <= 0.04
    assert len(calls) <= 16


def test_rate_search_integer_knob_returns_closest():
    data, near = encode_to_ratio(lambda n: b"x" * (1000 // (int(n) + 1)), Knob(low=1, high=50, integer=True), 10000, 40)
    assert near == int(near) and abs(10000 / len(data) - 40) <= 5


RATIO_KINDS = ("rgb", "u8_odd", "u10", "u12_odd", "u16", "s12", "s16", "multiframe")  # multiframe: 64 x 64 frames


@pytest.mark.parametrize("ratio", [5, 10, 20, 50])
@pytest.mark.parametrize("codec", WRITERS)
@pytest.mark.parametrize("kind", RATIO_KINDS)
def test_lossy_target_is_reached_or_shown_out_of_reach(kind, codec, ratio):
    """Within ±10 % of the target, or provably out of the codec's reach and kept on the lower-ratio side.

    Out of reach (see :func:`assert_out_of_reach`) on these kinds: the
    61 x 47 8-bit frame at 50:1 (2867 bytes: a 57-byte target under ~140
    bytes of J2K/HTJ2K headers; JPEG-LS and JPEG XL at their coarsest reach
    ~20:1); JPEG-LS, whose NEAR is at most 255 (ISO 14495-1): 16-bit data
    stops near 4:1, 12-bit near 17-21:1, 8-bit RGB near 44:1.
    """
    ds = make_dataset(**KINDS[kind])
    spec = pixel_spec(ds)
    reason = expected_refusal(codec, spec, lossy=True)
    if reason:
        with pytest.raises(UnsupportedError, match=reason):
            get_codec(codec, True).check(spec)
        return
    lossy = get_codec(codec, True)
    frame = decode_frame(ds, 0)
    achieved = spec.frame_bytes / len(lossy.encode(frame, spec, ratio))
    if abs(achieved / ratio - 1) <= RATIO_TOLERANCE:
        return
    assert_out_of_reach(lossy, frame, spec, ratio, achieved)


def test_pick_prefers_the_lower_ratio_when_the_target_is_missed():
    # target 100 bytes (e.g. 1000 bytes at 10:1)
    assert pick([130, 104, 60], 100) == 1  # within 10 %: the closest
    assert pick([130, 112, 60], 100) == 1  # 8.9:1 and 16.7:1 both miss: the lower ratio loses less
    assert pick([80, 60], 100) == 0  # every file too small: the finest of them


@pytest.mark.parametrize("kind, lossy", [(k, False) for k in ("u8_odd", "u10", "u12_dirty", "u16", "s12", "rgb")]
                         + [(k, True) for k in ("u8_odd", "u10", "u12_dirty", "u16", "rgb")])  # signed lossy is refused
def test_jpegls_header_precision_is_bits_stored(kind, lossy):
    """P in SOF55 (ISO 14495-1 C.2.2) is Bits Stored, so near-lossless decoders clamp at 2^BitsStored - 1."""
    ds = make_dataset(**KINDS[kind])
    spec = pixel_spec(ds)
    codec = get_codec("jpegls", lossy)
    data = codec.encode(decode_frame(ds, 0), spec, 10 if lossy else None)
    sof = data.index(b"\xff\xf7")
    assert data[sof + 4] == spec.bits_stored
    low, high = spec.value_range
    decoded = codec.decode(data, spec)
    assert low <= decoded.min() and decoded.max() <= high


def test_jpegls_refuses_one_bit_samples():
    ds = make_dataset(rows=16, columns=16, bits_allocated=8, bits_stored=1)
    with pytest.raises(UnsupportedError, match="at least 2 bits"):
        get_codec("jpegls", False).check(pixel_spec(ds))
    j2k = get_codec("j2k", False)
    spec = pixel_spec(ds)
    data = j2k.encode(decode_frame(ds, 0), spec)
    assert parse_main_header(data).precision == 1
    assert np.array_equal(j2k.decode(data, spec), decode_frame(ds, 0))



@pytest.mark.parametrize("exponent", [0.5, 1.0, 2.0])
def test_rate_search_interpolates_on_power_laws(exponent):
    """Ratio growing as knob**exponent (jxl distance ~0.5-1.3, OpenJPH step ~1.2): a few encodes, not a bisection."""
    calls = []

    def encode(q):
        calls.append(q)
        return b"x" * int(1_000_000 / (3 * q**exponent))

    data, _ = encode_to_ratio(encode, Knob(low=1e-3, high=1e3, guess=lambda r: 1.0), 1_000_000, 20)
    assert abs(1_000_000 / len(data) / 20 - 1) <= 0.04
    assert len(calls) <= 6


def test_rate_search_tries_the_integer_below_an_overshoot():
    """NEAR 0 gives 7:1, NEAR 1 already 12:1: for 10:1 both miss and the lower ratio (NEAR 0) is kept."""
    sizes = {0: 1000 // 7, 1: 1000 // 12, 2: 1000 // 20}
    data, near = encode_to_ratio(lambda n: b"x" * sizes.get(int(n), 10), Knob(low=0, high=255, integer=True, log=False),
                                 1000, 10)
    assert near == 0 and len(data) == sizes[0]


def test_rate_search_survives_a_flat_stretch():
    """Sizes that stop changing (a blank image, headers only) must not throw the next guess out of range."""
    sizes = iter([400_000, 399_999] + [399_998] * 20)
    data, _ = encode_to_ratio(lambda q: b"x" * next(sizes), Knob(low=1e-5, high=1.0, guess=lambda r: 1e-3),
                              10_000_000, 50)
    assert len(data) == 399_998  # every file too big: the smallest of them


@pytest.mark.parametrize("kind, lossy, side", [("multiframe", False, 64), ("multiframe", True, 16),
                                               ("u12_odd", True, 16), ("rgb", True, 16)])
def test_j2k_code_blocks_read_back(kind, lossy, side, load):
    """Small lossy frames get small code-blocks (finer rate-control cut points); lossless and large frames keep 64."""
    ds = make_dataset(**KINDS[kind])
    spec = pixel_spec(ds)
    codec = get_codec("j2k", lossy)
    assert parse_main_header(codec.encode(decode_frame(ds, 0), spec, 10 if lossy else None)).codeblock == (side, side)
    mr = load("MR2_UNCR")
    assert parse_main_header(codec.encode(decode_frame(mr, 0), pixel_spec(mr), 10 if lossy else None)).codeblock == (64, 64)



@pytest.mark.parametrize("name, ratio", [("693_UNCR", 8), ("693_UNCR", 15), ("MR2_UNCR", 7), ("MR2_UNCR", 20)])
def test_j2k_lossy_reaches_its_target_in_one_or_two_encodes_at_bits_stored(name, ratio, load, monkeypatch):
    """OpenJPEG's own rate control at the Bits Stored precision: the first guess lands, a second trims the header."""
    from core.codecs import j2k

    calls, real = [], j2k.encode_at
    monkeypatch.setattr(j2k, "encode_at", lambda *args: calls.append(args[2]) or real(*args))
    source = load(name)
    spec = pixel_spec(source)
    result = compress(source, "j2k", "lossy", ratio)
    assert len(calls) <= 2 and abs(result.ratio / ratio - 1) <= RATIO_TOLERANCE, (calls, result.ratio)
    assert calls[0] == pytest.approx(ratio * spec.bits_stored / spec.bits_allocated)
    info = parse_main_header(frames_of(result.dataset)[0])
    assert (info.precision, info.signed, info.reversible) == (spec.bits_stored, spec.signed, False)


def test_j2k_lossy_samples_are_the_stored_values_at_bits_stored():
    from core.codecs.j2k import stored_samples

    ds = make_dataset(**KINDS["s12"])
    spec = pixel_spec(ds)
    frame = decode_frame(ds, 0)
    samples = stored_samples(frame, spec)
    assert samples.dtype == np.uint16 and samples.max() < 1 << 12
    assert np.array_equal(samples.astype(np.int64) - (1 << 11), frame.astype(np.int64))


@pytest.mark.parametrize("kind", ["emri_small", "s12", "u16"])
def test_lossy_htj2k_is_as_good_as_j2k_at_the_same_ratio(kind, tmp_path):
    """OpenJPH has no rate control: with one decomposition a small frame's lowest band ate the budget
    (the Lab's emri_small at 20:1: HTJ2K 20.8 dB, JPEG 2000 40.8 dB).  PSNR from independent decoders."""
    from pydicom.data import get_testdata_file

    from core.metrics import compare
    from core.pixels import read_dataset
    from tests.checkers import tool_pixels

    source = read_dataset(get_testdata_file("emri_small.dcm")) if kind == "emri_small" else make_dataset(**KINDS[kind])
    spec = pixel_spec(source)
    frame = decode_frame(source, 0)
    psnr = {}
    for name in ("j2k", "htj2k"):
        codec = get_codec(name, True)
        codestream = codec.encode(frame, spec, 20)
        assert abs(spec.frame_bytes / len(codestream) / 20 - 1) <= RATIO_TOLERANCE
        truth, app = (compare(frame[None], values[None], spec.bits_stored).psnr
                      for values in (tool_pixels(name, codestream, spec, tmp_path), codec.decode(codestream, spec)))
        assert app == pytest.approx(truth, abs=0.1)
        psnr[name] = truth
    assert psnr["htj2k"] >= psnr["j2k"] - 1.5, psnr


def test_htj2k_lossless_small_frame_uses_five_levels_bit_exactly(tmp_path, monkeypatch):
    """The rule's single level cost emri_small 8.80 bpp; 5 levels (base 2 x 2, still RPCL-valid) 7.81, bit-exact."""
    from pydicom.data import get_testdata_file

    from core.codecs import htj2k
    from core.pixels import read_dataset
    from tests.checkers import tool_pixels

    source = read_dataset(get_testdata_file("emri_small.dcm"))
    spec = pixel_spec(source)
    frame = decode_frame(source, 0)
    codestream = get_codec("htj2k", False).encode(frame, spec, None)
    info = parse_main_header(codestream)
    assert info.decompositions == 5 and info.reversible and max(info.base_resolution) <= 64
    assert np.array_equal(tool_pixels("htj2k", codestream, spec, tmp_path), frame)
    monkeypatch.setattr(htj2k, "levels", htj2k.decompositions)  # the base-resolution rule alone: one level
    assert len(codestream) < 0.95 * len(htj2k.encode_at(frame, spec, None))
