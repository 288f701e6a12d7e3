"""Names, dates, sexes, savings and dimensions as people read them."""

import pytest
from pydicom.valuerep import PersonName

from core.present import NO_NAME, copies_saving, dicom_date, dimensions, duration, human_size, person_name, saving, sex


@pytest.mark.parametrize("value, expected", [
    ("Doe^Jane", "Doe, Jane"),
    ("Doe^Jane^Quinn", "Doe, Jane Quinn"),
    ("Doe^Jane^Quinn^Dr.^PhD", "Doe, Dr. Jane Quinn, PhD"),
    ("Doe", "Doe"),
    ("^Jane", "Jane"),
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada, Tarou"),  # the alphabetic group first
    ("=山田^太郎", "山田, 太郎"),  # no alphabetic group: the ideographic one
    (PersonName("Müller^Jürgen"), "Müller, Jürgen"),
    ("", NO_NAME), ("^^^^", NO_NAME), (None, NO_NAME), ("  ", NO_NAME),
], ids=repr)
def test_person_name_is_family_comma_given_and_never_empty(value, expected):
    assert person_name(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("20040826", "2004-08-26"), ("2004.08.26", "2004-08-26"), (" 19700101 ", "1970-01-01"),
    ("", ""), (None, ""),
    ("2004", "2004"), ("20041", "20041"), ("26/08/2004", "26/08/2004"),  # malformed: shown as it came, not guessed
])
def test_dicom_date_is_iso(value, expected):
    assert dicom_date(value) == expected


@pytest.mark.parametrize("value, expected", [("M", "M"), ("F", "F"), ("O", "O"), ("f", "F"), ("", ""), (None, ""), ("X", "")])
def test_sex_keeps_only_defined_terms(value, expected):
    assert sex(value) == expected


def test_saving_says_its_sign_once():
    assert saving(100, 810) == "+710 % larger"  # the case the Studies list showed as "−-710 %"
    assert saving(1000, 380) == "−62 % smaller"
    assert saving(1000, 1002) == "same size"
    assert saving(0, 10) == "no originals"


def test_copies_saving_lists_each_copy_against_the_originals():
    assert copies_saving({"original": 1000, "lossless": 500, "lossy": 8100}) == "lossless −50 % smaller, lossy +710 % larger"
    assert copies_saving({"original": 1000}) == "no compressed copy stored"
    assert copies_saving({"lossless": 10}) == "no compressed copy stored"


def test_human_size_and_dimensions():
    assert human_size(512) == "512.0 B" and human_size(1536) == "1.5 KB" and human_size(3 * 1024 ** 3) == "3.0 GB"
    assert dimensions(640, 480) == "640 × 480"  # columns (width) first


def test_duration_in_the_unit_a_person_reads():
    assert [duration(s) for s in (0.42, 9.94, 12.4, 59.4, 185, 3599.4, 7620)] == [
        "0.4 s", "9.9 s", "12 s", "59 s", "3 min 05 s", "59 min 59 s", "2 h 07 min"]
