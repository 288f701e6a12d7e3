"""The CAR upper bounds, and codec and ratio chosen together."""

import re

import pytest

from core.errors import InvalidOptionError
from core.policy import Policy, check_bound, codec_for, lossy_setting, ratio_for, upper_bound


def test_upper_bounds_by_modality_and_anatomy():
    assert upper_bound("CT") == 15 and upper_bound("CT", "HEAD") == 12 and upper_bound("CT", "", "MRT Brain") == 12
    assert upper_bound("MR") == 24 and upper_bound("CR") == 30 and upper_bound("US") == 12
    assert upper_bound("MG") is None and upper_bound("OT") is None


def test_check_bound_refuses_or_caps():
    assert check_bound(15, "CT", cap=False) == (15, None)
    with pytest.raises(InvalidOptionError, match=r"16:1 exceeds .* 15:1 for CT") as info:
        check_bound(16, "CT", cap=False)
    assert "at most 15:1" in info.value.hint and "(0008,0060)" in str(info.value)
    ratio, note = check_bound(40, "MR", cap=True)
    assert ratio == 24 and "capped at 24:1" in note
    assert check_bound(100, "MG", cap=False) == (100, None)


def test_a_ratio_keeps_the_codec_it_was_chosen_for():
    policy = Policy(lossy_codec="j2k", ratios={**Policy().ratios, "MR": 12}, lossy_codecs={"MR": "htj2k"})
    assert codec_for(policy, "MR") == "htj2k" and ratio_for(policy, "MR") == 12
    assert codec_for(policy, "CT") == "j2k"  # the CT ratio was not chosen with the lab: the clinic's codec
    assert codec_for(policy, "XX") == "j2k"  # the clinic default ratio goes with the clinic codec
    with pytest.raises(InvalidOptionError, match="Unknown codec"):
        Policy(lossy_codecs={"MR": "webp"}).validated()
    assert Policy.from_dict({"lossy_codecs": {"CR": "jxl"}}).lossy_codecs == {"CR": "jxl"}


def row(modality="MR", body_part="", description="", study_ratio=None, study_codec=None):
    return {"modality": modality, "body_part": body_part, "study_description": description,
            "study_ratio": study_ratio, "study_codec": study_codec}


def test_lossy_setting_for_an_instance():
    policy = Policy(ratios={**Policy().ratios, "MR": 40}, lossy_codecs={"MR": "jxl"})
    clinic = lossy_setting(policy, row())
    assert (clinic.codec, clinic.ratio, clinic.requested, clinic.bound) == ("jxl", 24, 40, 24) and "capped" in clinic.note
    study = lossy_setting(policy, row(study_ratio=8, study_codec="htj2k"))
    assert (study.codec, study.ratio, study.note) == ("htj2k", 8, None)
    legacy = lossy_setting(policy, row(study_ratio=8))  # a study ratio set before codecs were stored with it
    assert legacy.codec == policy.lossy_codec
    brain = lossy_setting(Policy(default_ratio=20), row("CT", "HEAD", study_ratio=14))
    assert brain.ratio == 12 and brain.bound == 12


def test_the_policy_warning_says_copies_are_capped():
    from core.policy import ratio_warning

    assert ratio_warning("CT", 20).endswith("lossy copies are capped at 15:1.")
    assert ratio_warning("CT", 13, "BRAIN") and ratio_warning("CT", 13) is None


@pytest.mark.parametrize("change, words", [
    ({"lossy_enabled": "false"}, "lossy_enabled 'false' is not true or false"),
    ({"lossy_enabled": 0}, "is not true or false"),
    ({"strategy": True}, "Storage strategy True is not a number"),
    ({"strategy": "2"}, "is not a number"),
    ({"default_ratio": "10"}, "Lossy ratio '10' for default is not a number"),
    ({"ratios": {"CT": None}}, "for CT is not a number"),
    ({"ratios": ["CT", 8]}, "objects keyed by modality"),
    ({"lossy_banner": 5}, "is not text"),
])
def test_policy_values_have_their_types(change, words):
    """A string "false" where a boolean goes would leave lossy copies on while the API answered 200."""
    with pytest.raises(InvalidOptionError, match=words):
        Policy.from_dict({**Policy().to_dict(), **change})
    assert Policy.from_dict({**Policy().to_dict(), "lossy_enabled": False, "strategy": 2, "default_ratio": 12}).lossy_enabled is False


def test_a_policy_saved_before_types_were_checked_still_opens(tmp_path):
    """An archive whose stored policy holds "false" or true (accepted once by PUT /api/policy) opens as meant and can be fixed."""
    import json

    from core.store import Store

    store = Store(tmp_path / "data")
    with store.connect() as db:
        db.execute("INSERT OR REPLACE INTO settings VALUES ('policy', ?)",
                   (json.dumps({**Policy().to_dict(), "lossy_enabled": "false", "strategy": True, "default_ratio": "12"}),))
    policy = store.policy()
    assert policy.lossy_enabled is False and policy.strategy == 1 and policy.default_ratio == 12.0
    store.set_policy(policy)
    assert json.loads(store.query("SELECT value FROM settings WHERE key='policy'")[0]["value"])["lossy_enabled"] is False


@pytest.mark.parametrize("banner, words", [
    ("LOSSY {ratio}:1 {nope}", "field {nope} is not allowed"),
    ("LOSSY {ratio} {ratio.__class__}", "{ratio.__class__} is not allowed"),
    ("LOSSY {ratio} {ratio:>999999999}", "{ratio:>999999999} is not allowed"),
    ("LOSSY {ratio} {ratio!r}", "{ratio!r} is not allowed"),
    ("LOSSY {ratio}:1 {", "not a valid template"),
    ("LOSSY {0} {ratio}", "field {0} is not allowed"),
])
def test_the_banner_template_has_plain_fields_only(banner, words):
    """A bad field used to be saved, then every Compare failed (KeyError) or the banner reached into Python objects."""
    from core.comparison import lossy_banner
    from core.codecs import get_codec

    with pytest.raises(InvalidOptionError, match=re.escape(words)):
        Policy.from_dict({**Policy().to_dict(), "lossy_banner": banner})
    fine = Policy.from_dict({**Policy().to_dict(), "lossy_banner": "LOSSY {{{ratio}:1}} {codec} {method}"})
    assert lossy_banner(10, get_codec("j2k", True), fine.lossy_banner).startswith("LOSSY {10:1} ")
