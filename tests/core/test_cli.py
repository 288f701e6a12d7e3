import json
import subprocess
import sys

import pytest

from core.cli import main
from core.pixels import read_dataset
from core.samples import pydicom_test_dir, sample

MR2, CT, US = sample("MR2_UNCR"), sample("693_UNCR"), sample("US1_UNCR")


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json(capsys):
    code, out, _ = run_cli(capsys, "info", MR2, US, "--json")
    assert code == 0
    rows = json.loads(out)
    assert rows[0]["modality"] == "MR" and rows[0]["rows"] == 1024 and rows[0]["uncompressed_bytes"] == 2 * 1024 * 1024
    assert rows[1]["photometric"] == "RGB" and rows[1]["samples_per_pixel"] == 3
    assert rows[0]["transfer_syntax"] == "1.2.840.10008.1.2.1"
    assert set(rows[0]) >= {"frames", "bits_stored", "bits_allocated", "signed", "transfer_syntax_name"}


def test_info_text(capsys):
    code, out, _ = run_cli(capsys, "info", CT)
    assert code == 0 and "CT 512 × 512, 1 frame(s)" in out and "signed" in out


@pytest.mark.parametrize("codec", ["j2k", "htj2k", "jpegls", "jxl", "auto"])
def test_compress_then_verify(codec, capsys, tmp_path):
    code, out, err = run_cli(capsys, "compress", MR2, US, "--codec", codec, "--mode", "lossless", "--out", tmp_path, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 2 and len(list(tmp_path.glob("*.dcm"))) == 2
    for row in rows:
        assert row["ratio"] > 1.5 and row["seconds"] > 0 and row["transfer_syntax"].startswith("1.2.840.10008.1.2.4.")
        code, out, _ = run_cli(capsys, "verify", row["file"], row["output"], "--json")
        assert code == 0 and json.loads(out)["identical"] is True


def test_compress_lossy_text_output(capsys, tmp_path):
    code, out, err = run_cli(capsys, "compress", MR2, "--codec", "j2k", "--mode", "lossy", "--ratio", "20", "--out", tmp_path)
    assert code == 0 and err == ""
    assert "1.2.840.10008.1.2.4.91" in out and "ratio 2" in out and "(target 20:1 reached)" in out
    written = read_dataset(next(tmp_path.glob("*.dcm")))
    assert written.LossyImageCompression == "01"
    code, out, _ = run_cli(capsys, "verify", MR2, next(tmp_path.glob("*.dcm")))
    assert code == 0 and "claims lossless: no" in out


def test_verify_exits_1_for_a_false_lossless_claim(capsys, tmp_path):
    from pydicom.encaps import encapsulate, generate_frames

    from core.compress import compress
    from core.files import write_dataset

    source = read_dataset(MR2)
    liar = compress(source, "j2k", "lossless").dataset
    lossy = compress(source, "j2k", "lossy", 30).dataset
    liar.PixelData = encapsulate(list(generate_frames(lossy.PixelData, number_of_frames=1)), has_bot=True)
    write_dataset(liar, tmp_path / "liar.dcm")
    code, _, err = run_cli(capsys, "verify", MR2, tmp_path / "liar.dcm")
    assert code == 1 and "claims to be lossless" in err


def _bad_inputs(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(MR2.read_bytes()[:300000])
    return {
        "not DICOM": (["compress", text, "--codec", "j2k", "--out", tmp_path / "o"], "not a DICOM file"),
        "truncated": (["compress", cut, "--codec", "j2k", "--out", tmp_path / "o"], "cut short"),
        "no pixel data": (["compress", pydicom_test_dir() / "rtplan.dcm", "--codec", "j2k", "--out", tmp_path / "o"], "no Pixel Data"),
        "unsupported": (["compress", CT, "--codec", "jxl", "--out", tmp_path / "o"], "signed"),
        "ratio out of range": (["compress", MR2, "--codec", "j2k", "--mode", "lossy", "--ratio", "1000", "--out", tmp_path / "o"], "out of range"),
        "ratio not a number": (["compress", MR2, "--codec", "j2k", "--mode", "lossy", "--ratio", "ten", "--out", tmp_path / "o"], "must be a number"),
        "missing ratio": (["compress", MR2, "--codec", "j2k", "--mode", "lossy", "--out", tmp_path / "o"], "needs --ratio"),
        "ratio with lossless": (["compress", MR2, "--codec", "j2k", "--ratio", "10", "--out", tmp_path / "o"], "--mode lossless"),
        "ratio above the CAR bound": (["compress", MR2, "--codec", "htj2k", "--mode", "lossy", "--ratio", "25", "--out", tmp_path / "o"],
                                      "upper bound of 24:1"),
        "unknown mode": (["compress", MR2, "--codec", "j2k", "--mode", "lossier", "--out", tmp_path / "o"], "invalid choice"),
        "unknown codec": (["compress", MR2, "--codec", "webp", "--out", tmp_path / "o"], "invalid choice"),
        "missing file": (["info", tmp_path / "nope.dcm"], "no such file"),
        "verify not DICOM": (["verify", text, MR2], "not a DICOM file"),
        "verify mismatch": (["verify", MR2, CT], "do not match"),
    }


@pytest.mark.parametrize(
    "case",
    ["not DICOM", "truncated", "no pixel data", "unsupported", "ratio out of range", "ratio not a number",
     "missing ratio", "ratio with lossless", "ratio above the CAR bound", "unknown mode", "unknown codec", "missing file",
     "verify not DICOM", "verify mismatch"],
)
def test_bad_input_one_line_exit_2_nothing_written(case, tmp_path):
    args, message = _bad_inputs(tmp_path)[case]
    proc = subprocess.run(
        [sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    out = tmp_path / "o"
    assert not out.exists() or not any(out.iterdir()), "no partial output"


def test_good_files_still_processed_next_to_a_bad_one(capsys, tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_text("x")
    code, out, err = run_cli(capsys, "compress", bad, MR2, "--codec", "htj2k", "--out", tmp_path / "o")
    assert code == 2 and "bad.dcm" in err
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["MR2_UNCR.htj2k-lossless.dcm"]


def test_never_overwrites_an_input(capsys, tmp_path):
    src = tmp_path / "MR2_UNCR.htj2k-lossless.dcm"
    src.write_bytes(MR2.read_bytes())
    code, _, err = run_cli(capsys, "compress", src, "--codec", "htj2k", "--out", tmp_path)
    assert code == 0  # output is MR2_UNCR.htj2k-lossless.htj2k-lossless.dcm, the input is untouched
    assert src.read_bytes() == MR2.read_bytes()


def test_users_command(capsys, tmp_path):
    data = tmp_path / "data"
    assert main(["users", "add", "boss", "--role", "admin", "--password", "long-enough", "--data", str(data)]) == 0
    assert main(["users", "list", "--data", str(data)]) == 0
    assert "boss\tadmin" in capsys.readouterr().out
    assert main(["users", "add", "boss", "--password", "long-enough", "--data", str(data)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["users", "add", "x", "--password", "short", "--data", str(data)]) == 2
    assert main(["users", "remove", "boss", "--data", str(data)]) == 2  # the last administrator stays
    assert "last administrator" in capsys.readouterr().err
    assert main(["users", "add", "chief", "--role", "admin", "--password", "long-enough", "--data", str(data)]) == 0
    assert main(["users", "remove", "boss", "--data", str(data)]) == 0
