from pydicom.encaps import encapsulate, generate_frames

from core.compress import compress
from core.verify import claims_lossless, verify


def test_lossless_output_verifies(load):
    source = load("RG3_UNCR")
    result = verify(source, compress(source, "j2k", "lossless").dataset)
    assert result.ok and result.claims_lossless and result.metrics.identical
    assert result.metrics.ratio > 7


def test_lossy_output_is_not_a_violation(load):
    source = load("MR2_UNCR")
    result = verify(source, compress(source, "htj2k", "lossy", 20).dataset)
    assert result.ok and not result.claims_lossless and result.metrics.max_error > 0
    assert 35 < result.metrics.psnr < 80


def test_lossy_pixels_under_a_lossless_syntax_are_caught(load):
    """The worst bug: a file that says lossless but is not."""
    source = load("MR2_UNCR")
    liar = compress(source, "j2k", "lossless").dataset
    lossy = compress(source, "j2k", "lossy", 20).dataset
    liar.PixelData = encapsulate(list(generate_frames(lossy.PixelData, number_of_frames=1)), has_bot=True)
    result = verify(source, liar)
    assert claims_lossless(liar) and not result.ok


def test_lossless_flag_counts_as_a_claim(load):
    lossy = compress(load("MR2_UNCR"), "j2k", "lossy", 10).dataset
    lossy.LossyImageCompression = "00"
    assert claims_lossless(lossy)


def test_a_lossless_copy_of_a_lossy_image_is_exact_and_still_lossy():
    from tests.synthetic import KINDS, make_dataset

    source = make_dataset(**KINDS["already_lossy"])
    result = verify(source, compress(source, "j2k", "lossless").dataset)
    assert result.ok and result.metrics.identical and result.claims_lossless  # the encoding step was lossless
    report = result.to_dict()
    assert report["lossy"] and report["lossy_ratio"] == 18 and report["lossy_label"] == "JPEG 2000, 18:1"
    plain = make_dataset(**KINDS["u12_odd"])
    assert verify(plain, compress(plain, "j2k", "lossless").dataset).to_dict()["lossy"] is False
