import pytest

from core.dims import DimsConfig, DimsError, Geometry, normalise, parse_chain

CONFIG = DimsConfig(overlays={"mark": {"file": "/nonexistent.png"}},
                    byoriginal={"web": [{"max_pixels": 1_000_000, "chain": "thumbnail/128x128"}, {"chain": "thumbnail/256x256"}]})


@pytest.mark.parametrize("text, size, expected", [
    ("200x100", (400, 400), (100, 100)),  # keeps aspect
    ("200x100!", (400, 400), (200, 100)),  # exact
    ("50%", (400, 200), (200, 100)),
    ("200", (400, 200), (200, 100)),  # one-sided width
    ("x50", (400, 200), (100, 50)),  # one-sided height
    ("800x800>", (400, 200), (400, 200)),  # only shrink: unchanged
    ("100x100<", (400, 200), (400, 200)),  # only enlarge: unchanged
    ("800x800<", (400, 200), (800, 400)),
])
def test_geometry(text, size, expected):
    assert Geometry.parse(text, "thumbnail").target(*size, keep_aspect="!" not in text) == expected


def test_chain_parses_and_normalises():
    chain = parse_chain("variant/lossy/ratio/20.0/thumbnail/256x256/format/jpg/quality/80/optimize/firstframeonly/off/limit/4", CONFIG)
    assert [n for n, _ in chain] == ["variant", "ratio", "thumbnail", "format", "quality", "optimize", "firstframeonly", "limit"]
    assert normalise(chain) == "variant/lossy/ratio/20/thumbnail/256x256/format/jpeg/quality/80/optimize/firstframeonly/off/limit/4"
    assert normalise(parse_chain(normalise(chain), CONFIG)) == normalise(chain)  # the inverse round-trips


@pytest.mark.parametrize("path, fragment", [
    ("rotate/90", "unknown command 'rotate'"),
    ("thumbnail", "missing argument"),
    ("thumbnail/abc", "malformed geometry"),
    ("thumbnail/90000x90000", "larger than the limit"),
    ("quality/101", "not between 0 and 100"),
    ("ratio/1000", "out of range"),
    ("composite/nope", "no overlay named"),
    ("byoriginal/nope", "no byoriginal rule"),
    ("frame/0", "counts from 1"),
    ("format/bmp", "bad argument"),
])
def test_bad_chains_are_refused_before_decoding(path, fragment):
    with pytest.raises(DimsError) as info:
        parse_chain(path, CONFIG)
    assert info.value.http_status == 400 and info.value.reason == "invalid command" and fragment in str(info.value)
