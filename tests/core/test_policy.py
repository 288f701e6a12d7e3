"""The CAR upper bounds, codec and ratio chosen together, the lossless codec per image kind and modality, the
strategy per modality, the form's checks, and jobs only for studies whose copies change."""

import re
import time

import numpy as np
import pytest

from core.codecs import LOSSLESS_RULES, OHIF_RULE, SMALLEST_RULE, choose_codec, get_rule
from core.errors import InvalidOptionError
from core.pixels import PixelSpec
from core.policy import Policy, check_bound, codec_for, lossy_setting, ratio_for, upper_bound
from tests.synthetic import KINDS, make_dataset, write


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
    ({"lossy_codecs": []}, "objects keyed by modality"),  # was an AttributeError: a 500 from PUT /api/policy
    ({"lossy_banner": 5}, "is not text"),
    ({"ratios": {"ct": 8}}, "'ct' is not a Modality"),  # saved, never matching an image (CT), the API said 200
    ({"ratios": {"../x": 8}}, "is not a Modality"),
    ({"lossy_codecs": {"CT\x00": "j2k"}}, "is not a Modality"),
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
    with store.connect() as db:  # a ratio key no image matches, accepted once by the API: dropped, the archive opens
        db.execute("INSERT OR REPLACE INTO settings VALUES ('policy', ?)", (json.dumps(
            {**policy.to_dict(), "ratios": {"ct": 9, "MR": 7}, "lossy_codecs": {"ct": "jxl", "MR": "j2k"}}),))
    assert store.policy().ratios == {"MR": 7} and store.policy().lossy_codecs == {"MR": "j2k"}
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
    # a wording without the word still says it (it was "10:1"), and it stays one short line (2 MB and ESC were saved)
    assert lossy_banner(10, get_codec("j2k", True), "{ratio}:1").startswith("LOSSY — 10:1")
    assert lossy_banner(10, get_codec("j2k", True), "Verlustbehaftet (lossy) {ratio}:1") == "Verlustbehaftet (lossy) 10:1"
    with pytest.raises(InvalidOptionError, match="must show the ratio"):  # the text "{ratio}", never the ratio, was saved
        Policy.from_dict({**Policy().to_dict(), "lossy_banner": "LOSSY {{ratio}}:1"})
    for bad in ("{ratio}" + "x" * 400, "LOSSY {ratio}\x1b[8m", "LOSSY {ratio}\nsecond line"):
        with pytest.raises(InvalidOptionError, match="one line of at most 300"):
            Policy.from_dict({**Policy().to_dict(), "lossy_banner": bad})


# -- lossless codec per image kind, strategy per modality, the form's checks, jobs only where copies change -------


def spec(rows, columns, samples=1, signed=False, bits=12):
    return PixelSpec(rows, columns, samples, 8 if samples == 3 else 16, 8 if samples == 3 else bits, signed,
                     "RGB" if samples == 3 else "MONOCHROME2")


@pytest.mark.parametrize("kind, ohif, smallest", [
    (spec(512, 512), "jpegls", "jpegls"),  # CT 512²
    (spec(999, 999), "jpegls", "jpegls"),  # both sides under 1000 px
    (spec(512, 1000), "htj2k", "jxl"),  # one side at 1000 px is large
    (spec(2048, 2500), "htj2k", "jxl"),  # CR/DX
    (spec(2048, 2500, signed=True), "htj2k", "jpegls"),  # JPEG XL cannot take signed data: the next that can
    (spec(480, 640, samples=3), "jxl", "jxl"),  # colour
])
def test_each_rule_picks_a_lossless_codec_per_image_kind(kind, ohif, smallest):
    assert choose_codec("ohif", False, kind).name == ohif
    assert choose_codec("smallest", False, kind).name == smallest
    assert choose_codec("auto", False, kind).name == smallest  # the CLI's auto keeps its rule


def test_the_lossless_choices_come_from_the_codec_registry():
    from core.codecs import CODECS

    names = [r.name for r in LOSSLESS_RULES]
    assert names[:2] == ["ohif", "smallest"] and get_rule("ohif") is OHIF_RULE and get_rule("auto") is SMALLEST_RULE
    assert set(names[2:]) == {c.name for c in CODECS if not c.lossy and c.writes}
    from core.policy import LOSSLESS_CHOICES

    assert [name for name, _label in LOSSLESS_CHOICES] == names and all(label for _name, label in LOSSLESS_CHOICES)
    with pytest.raises(InvalidOptionError, match="Unknown lossless codec choice 'webp'"):
        get_rule("webp")


def instance(modality="CT", rows=512, columns=512, samples=1, signed=0, bits=12):
    return {"modality": modality, "rows": rows, "columns": columns, "samples": samples, "bits_allocated": 16,
            "bits_stored": bits, "signed": signed, "photometric": "MONOCHROME2", "frames": 1}


def test_the_lossless_codec_follows_the_modality_then_the_clinic():
    from core.policy import lossless_codec_for

    policy = Policy(lossless_codecs={"MR": "smallest", "CR": "j2k"})
    assert lossless_codec_for(policy, instance("CT")) == "jpegls"
    assert lossless_codec_for(policy, instance("CT", 1024, 1024)) == "htj2k"
    assert lossless_codec_for(policy, instance("MR", 1024, 1024)) == "jxl"
    assert lossless_codec_for(policy, instance("MR", 1024, 1024, signed=1)) == "jpegls"
    assert lossless_codec_for(policy, instance("MR", 1024, 1024), signed=True) == "jpegls"  # a row indexed before `signed`
    assert lossless_codec_for(policy, instance("CR", 2048, 2048)) == "j2k"
    assert lossless_codec_for(Policy(lossless_codec="htj2k"), instance("CT")) == "htj2k"


def test_a_large_grayscale_copy_is_htj2k_rpcl_read_back_two_ways(tmp_path):
    """The stored copy of a 1024² MR: HTJ2K, progression RPCL in COD (our parser and glymur's), bit-exact by ojph_expand."""
    import glymur
    from pydicom.encaps import generate_fragmented_frames
    from pydicom.uid import HTJ2KLosslessRPCL

    from core.archive import make_artifact, plan
    from core.codecs.codestream import parse_main_header
    from core.ingest import ingest
    from core.pixels import decode_all, pixel_spec, read_dataset
    from core.store import Store
    from tests.checkers import tool_pixels

    store = Store(tmp_path / "data")
    ds = make_dataset(rows=1024, columns=1024, bits_stored=12, modality="MR")
    [result] = ingest(store, [write(ds, tmp_path / "mr.dcm")])
    [wanted] = [w for w in plan(store, result.study_uid).make if w.variant == "lossless"]
    assert wanted.codec == "htj2k"
    copy = make_artifact(store, wanted)
    assert copy.transfer_syntax == HTJ2KLosslessRPCL
    codestream = b"".join(next(generate_fragmented_frames(read_dataset(copy.path).PixelData)))
    assert parse_main_header(codestream).progression == "RPCL" and parse_main_header(codestream).htj2k
    (tmp_path / "frame.jph").write_bytes(codestream)
    cod = [s for s in glymur.codestream.Codestream(open(tmp_path / "frame.jph", "rb"), len(codestream), header_only=True).segment
           if s.marker_id == "COD"][0]
    assert cod.prog_order == glymur.core.RPCL
    assert np.array_equal(tool_pixels("htj2k", codestream, pixel_spec(ds), tmp_path), decode_all(ds)[0])


def test_a_study_follows_its_modality_strategy_between_clinic_default_and_its_own():
    policy = Policy(strategy=1, strategies={"CR": 4, "CT": 2})
    assert policy.strategy_for({"CT": 300}) == 2 and policy.strategy_for({"MR": 20}) == 1
    assert policy.strategy_for({"CT": 3, "CR": 1}) == 2  # the most frequent image modality
    assert policy.strategy_for({"CR": 2, "CT": 2}) == 4  # a tie goes to the first code in order
    assert policy.strategy_for({}) == 1  # a study of reports only


@pytest.fixture
def archive_of_three(tmp_path):
    """A CT, a CR and an MR study, indexed (no copies made)."""
    from core.ingest import ingest
    from core.store import Store

    store = Store(tmp_path / "data")
    paths = [write(make_dataset(**{**KINDS[k], "seed": n}), tmp_path / f"{k}.dcm") for n, k in enumerate(("s12", "u12_odd", "u16"))]
    results = list(ingest(store, paths))
    return store, {r["modalities"]: r["study_uid"] for r in store.studies()}, results


def test_the_plan_and_the_projection_follow_the_modality_strategy(archive_of_three):
    from core.archive import plan, storage_report

    store, study, _ = archive_of_three
    store.set_policy(Policy(strategies={"CR": 4, "CT": 2}))
    assert store.study_strategy(study["CR"]) == 4 and store.study_strategy(study["CT"]) == 2
    assert store.study_strategy(study["MR"]) == 1
    assert plan(store, study["CR"]).make == () and {w.variant for w in plan(store, study["CT"]).make} == {"lossless"}
    store.set_study_strategy(study["CR"], 1)  # the study's own strategy wins
    assert store.study_strategy(study["CR"]) == 1
    store.set_study_strategy(study["CR"], None)
    report = storage_report(store)
    cost = {uid: {c["strategy"]: c["bytes"] for c in storage_report(store, uid)["strategies"]} for uid in study.values()}
    expected = cost[study["CR"]][4] + cost[study["CT"]][2] + cost[study["MR"]][1]
    assert abs(report["policy"]["bytes"] - expected) <= 2 and report["policy"]["studies_per_strategy"] == {4: 1, 2: 1, 1: 1}
    store.set_policy(Policy(strategies={"CR": 1, "CT": 1}))
    assert storage_report(store)["policy"]["bytes"] > report["policy"]["bytes"]


def test_a_policy_stored_by_an_older_version_loads_and_keeps_its_codec(tmp_path):
    """Saved before per-modality settings existed: no strategies, lossless_codec "j2k" (or "auto"): loads, nothing re-encoded."""
    import json

    from core.store import Store

    store = Store(tmp_path / "data")
    old = {k: v for k, v in Policy().to_dict().items() if k not in ("strategies", "lossless_codecs")}
    for codec, rule in (("j2k", "j2k"), ("auto", "smallest")):
        with store.connect() as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES ('policy', ?)", (json.dumps({**old, "lossless_codec": codec}),))
        policy = store.policy()
        assert policy.strategies == {} and policy.lossless_codecs == {} and policy.lossless_codec == codec
        assert get_rule(policy.lossless_choice("CT")).name == rule
    assert Policy().lossless_codec == "ohif"  # a new archive follows the web-delivery rule


@pytest.mark.parametrize("text, words", [
    ("500", "The CT ratio 500:1 is out of range. Choose between 2:1 and 200:1."),
    ("1.5", "1.5:1 is out of range"),
    ("abc", "The CT ratio 'abc' is not a number."),
    ("nan", "is out of range"),
])
def test_a_typed_ratio_is_refused_with_its_reason(text, words):
    from core.policy import parse_ratio

    with pytest.raises(InvalidOptionError, match=re.escape(words)):
        parse_ratio(text, "CT")
    assert parse_ratio(" 8,5 ", "CT") == 8.5 and parse_ratio("", "CT") is None and parse_ratio(None, "CT") is None


@pytest.mark.parametrize("change, words", [
    ({"strategies": {"CT": 9}}, "Storage strategy 9 does not exist"),
    ({"strategies": {"CT": "2"}}, "Storage strategy '2' for CT is not a number"),
    ({"strategies": {"ct": 2}}, "'ct' is not a Modality (0008,0060) code"),
    ({"strategies": {"../x": 2}}, "is not a Modality"),
    ({"lossless_codecs": {"CT": "webp"}}, "Unknown lossless codec choice 'webp'"),
    ({"lossless_codec": "png"}, "Unknown lossless codec choice 'png'"),
    ({"strategies": ["CT", 2]}, "objects keyed by modality"),
    ({"ratios": {"CT": 500}}, "Lossy ratio 500:1 for CT is out of range"),
])
def test_bad_per_modality_values_are_refused_with_reasons(change, words):
    with pytest.raises(InvalidOptionError, match=re.escape(words)):
        Policy.from_dict({**Policy().to_dict(), **change})


def test_only_studies_whose_copies_change_get_a_job(archive_of_three):
    from dataclasses import replace

    from core.archive import changed_studies, save_policy
    from core.jobs import Jobs

    store, study, _ = archive_of_three
    base = store.policy()
    assert changed_studies(store, base, replace(base, lossy_banner="LOSSY {ratio}:1")) == []
    assert changed_studies(store, base, replace(base, ratios={**base.ratios, "CT": 9})) == [study["CT"]]
    assert changed_studies(store, base, replace(base, lossless_codecs={"MR": "j2k"})) == [study["MR"]]
    assert changed_studies(store, base, replace(base, strategies={"CR": 3})) == [study["CR"]]
    assert changed_studies(store, base, replace(base, ratios={**base.ratios, "MG": 20})) == []  # no MG study here
    jobs = Jobs(store, workers=1)
    compare = Jobs(store, workers=1, kinds=("policy",))  # the comparison's own lane, in a worker process as in the app
    first = save_policy(store, jobs, replace(base, lossy_banner="LOSSY {ratio}:1 here"), "admin")
    assert store.policy().lossy_banner == "LOSSY {ratio}:1 here"  # saved (and audited) before anything is compared
    [done] = compare.run_pending()
    assert done["id"] == first and done["state"] == "done" and "no study's copies change" in done["message"]
    assert queued_studies(store) == []
    second = save_policy(store, jobs, replace(store.policy(), strategies={"CT": 4, "CR": 4}), "admin")
    [done] = compare.run_pending()
    assert done["id"] == second and done["message"] == "Policy compared: 2 studies get new copies (their jobs are queued)."
    assert done["done"] == done["total"] == 3  # its progress: studies compared, of how many
    assert queued_studies(store) == sorted([study["CT"], study["CR"]])
    assert store.query("SELECT count(*) FROM audit WHERE what='policy'")[0][0] == 2


def queued_studies(store) -> list[str]:
    return sorted(r["study_uid"] for r in store.query("SELECT study_uid FROM jobs WHERE kind='materialize' AND state='queued'"))


def test_saving_a_policy_compares_nothing_in_the_request(archive_of_three, monkeypatch):
    """The save stores the policy and queues one job (joined by the next save while it waits); the comparison is the job's."""
    from dataclasses import replace

    import core.archive
    import core.policyjobs
    from core.archive import save_policy
    from core.jobs import Jobs

    store, study, _ = archive_of_three
    base = store.policy()
    monkeypatch.setattr(core.archive, "changed_studies", None)  # called in the request, it would raise
    jobs = Jobs(store, workers=1)
    job = save_policy(store, jobs, replace(base, ratios={**base.ratios, "CT": 9}), "admin")
    assert save_policy(store, jobs, replace(store.policy(), strategies={"CR": 3}), "admin") == job  # one comparison for both
    assert store.policy().strategies == {"CR": 3} and store.policy().ratios["CT"] == 9 and queued_studies(store) == []
    assert core.policyjobs.pending_policy(store) == base  # the copies still follow the first policy
    assert jobs.get(job)["state"] == "queued" and jobs.get(job)["study_uid"] is None
    assert not core.policyjobs.comparison_stalled(store)
    jobs.cancel(job)  # nothing will compare now: the Policy page says so, and the next save compares from the first policy
    assert core.policyjobs.comparison_stalled(store)
    again = save_policy(store, jobs, store.policy(), "admin")
    assert again != job and not core.policyjobs.comparison_stalled(store) and core.policyjobs.pending_policy(store) == base


def test_two_saves_racing_leave_no_study_on_the_older_policy(archive_of_three, monkeypatch):
    """A save that lands while the job compares: the job compares again from the policy it just compared, so a
    study that changes only in the later save gets its job too, and nothing stays pending."""
    from dataclasses import replace

    import core.policyjobs
    from core.archive import changed_studies, save_policy
    from core.jobs import Jobs

    store, study, _ = archive_of_three
    base = store.policy()
    jobs = Jobs(store, workers=1)
    runner = Jobs(store, workers=1, kinds=("policy",))
    first = save_policy(store, jobs, replace(base, ratios={**base.ratios, "CT": 9}), "admin")
    compared = []

    def racing(store_, old, new, progress=None):
        if not compared:  # another administrator saves while the first comparison runs
            save_policy(store, jobs, replace(store.policy(), strategies={"CR": 3}), "admin2")
        compared.append((old, new))
        return changed_studies(store_, old, new, progress)

    monkeypatch.setattr(core.policyjobs, "changed_studies", racing)
    assert runner.claim()["id"] == first
    state, message = core.policyjobs.run_policy_job(str(store.root), first, runner.owner)
    assert state == "done" and message.startswith("Policy compared: 2 studies get new copies")
    assert [(o.ratios["CT"], n.ratios["CT"], n.strategies) for o, n in compared] == [(base.ratios["CT"], 9, {}), (9, 9, {"CR": 3})]
    assert queued_studies(store) == sorted([study["CT"], study["CR"]]) and core.policyjobs.pending_policy(store) is None
    # the second save found the first job running, so it queued another: it finds nothing left to compare
    [second] = [j for j in jobs.list() if j["kind"] == "policy" and j["state"] == "queued"]
    assert core.policyjobs.run_policy_job(str(store.root), second["id"], runner.owner) == ("done", "Policy already compared.")


def test_put_policy_refuses_bad_modality_values_and_queues_only_changed_studies(live_app, tmp_path):
    """PUT /api/policy goes through the same save: 400 with the reason and nothing saved, else jobs only where copies change."""
    import requests

    from core.ingest import ingest
    from tests.conftest import ADMIN

    base, app = live_app(demo=False)
    store = app.server.extensions["radpress"]["store"]
    list(ingest(store, [write(make_dataset(**{**KINDS[k], "seed": n}), tmp_path / f"{k}.dcm") for n, k in enumerate(("s12", "u12_odd"))]))
    cr = next(s["study_uid"] for s in store.studies() if s["modalities"] == "CR")
    http = requests.Session()
    http.auth = ADMIN
    bad = http.put(f"{base}/api/policy", json={"strategies": {"CR": 9}, "lossy_banner": "LOSSY {ratio}"})
    assert bad.status_code == 400 and "Storage strategy 9 does not exist" in bad.json()["error"]
    assert store.policy().strategies == {} and store.policy().lossy_banner != "LOSSY {ratio}"  # nothing of it saved
    answer = http.put(f"{base}/api/policy", json={"strategies": {"CR": 4}, "lossless_codecs": {"CT": "smallest"}})
    assert answer.status_code == 200, answer.text
    progress = answer.json()["progress"]
    assert answer.json()["message"] == f"Saved; working out which studies' copies change (job {answer.json()['job']})."
    deadline = time.monotonic() + 60
    while (job := http.get(f"{base}{progress}").json())["state"] != "done":  # the app's runner compares
        assert time.monotonic() < deadline and job["state"] in ("queued", "running"), job
        time.sleep(0.1)
    assert "1 study gets new copies" in job["message"] and job["study_uid"] is None
    assert queued_studies(store) in ([cr], [])  # CT 91×83: JPEG-LS either way (the app's runner may have run it already)
    assert [r["study_uid"] for r in store.query("SELECT study_uid FROM jobs WHERE kind='materialize'")] == [cr]
    from core.users import Users

    Users(store).add("rad", "radiologist-pw", "radiologist")
    other = requests.get(f"{base}{progress}", auth=("rad", "radiologist-pw"))  # a job about every study: administrators only
    assert other.status_code == 403 and "may not change the storage policy" in other.json()["error"]
    assert job["id"] not in [j["id"] for j in requests.get(f"{base}/api/jobs", auth=("rad", "radiologist-pw")).json()]
    assert http.get(f"{base}/api/policy").json()["strategies"] == {"CR": 4}
    # an empty key was saved, then answered 500 (and broke the Policy page); a lower-case one was saved, matching nothing
    for key in ("", "ct"):
        bad = http.put(f"{base}/api/policy", json={"ratios": {key: 40}})
        assert bad.status_code == 400 and f"{key!r} is not a Modality" in bad.json()["error"] and key not in store.policy().ratios


def test_a_codec_change_replaces_the_copy_and_its_file(tmp_path):
    """Made again in the new codec, a copy's old file goes with its row (it was left on disk, never reclaimed)."""
    from dataclasses import replace

    from core.archive import save_policy
    from core.ingest import ingest
    from core.jobs import Jobs
    from core.store import Store

    store = Store(tmp_path / "data")
    store.set_policy(replace(store.policy(), lossless_codec="j2k", strategies={"MR": 2}))
    list(ingest(store, [write(make_dataset(**KINDS["u16"]), tmp_path / "mr.dcm")]))
    jobs = Jobs(store, workers=1)
    jobs.submit(store.studies()[0]["study_uid"])
    jobs.run_pending()
    [before] = [a for a in store.artifacts() if a.variant == "lossless"]
    assert before.codec == "j2k" and before.path.exists()
    save_policy(store, jobs, replace(store.policy(), lossless_codec="ohif"), "admin")
    assert [j["kind"] for j in jobs.run_pending()] == ["policy", "materialize"]  # the comparison, then the one study's job
    [after] = [a for a in store.artifacts() if a.variant == "lossless"]
    assert after.codec == "jpegls" and after.path.exists() and not before.path.exists()
    on_disk = {p for p in (tmp_path / "data" / "artifacts").rglob("*") if p.is_file()}
    assert on_disk == {a.path for a in store.artifacts() if a.variant != "original"}


def test_changed_studies_agrees_with_comparing_each_study_whole(tmp_path):
    """The quick comparison (what each kind of instance keeps, once) against every study's artifacts compared whole;
    a CT head study goes by the CT brain ratio, a CT study of another region by the CT one."""
    from dataclasses import replace

    from core.archive import changed_studies, study_wanted
    from core.ingest import ingest
    from core.store import Store

    store = Store(tmp_path / "data")
    kinds = [("s12", "CT HEAD"), ("s12", "CT ABDOMEN"), ("u12_odd", ""), ("rgb", ""), ("multiframe", ""), ("u16", "")]
    paths = []
    for n, (kind, description) in enumerate(kinds):
        ds = make_dataset(**{**KINDS[kind], "seed": n})
        ds.StudyDescription = description
        paths.append(write(ds, tmp_path / f"{n}.dcm"))
    list(ingest(store, paths))
    head = next(s["study_uid"] for s in store.studies() if s["description"] == "CT HEAD")
    body = next(s["study_uid"] for s in store.studies() if s["description"] == "CT ABDOMEN")
    base = store.policy()
    changes = [replace(base, ratios={**base.ratios, "CT BRAIN": 6}), replace(base, ratios={**base.ratios, "CT": 9}),
               replace(base, strategies={"MR": 3}), replace(base, lossless_codec="smallest"), replace(base, lossy_enabled=False),
               replace(base, lossless_codecs={"US": "j2k"}), replace(base, default_ratio=12), replace(base, strategy=4)]
    for new in changes:
        whole = sorted(s["study_uid"] for s in store.studies()
                       if study_wanted(store, s["study_uid"], base)[1] != study_wanted(store, s["study_uid"], new)[1])
        assert changed_studies(store, base, new) == whole
    assert changed_studies(store, base, changes[0]) == [head] and changed_studies(store, base, changes[1]) == [body]


@pytest.mark.parametrize("value", [5.0, True, "2", None])
def test_a_study_strategy_is_a_whole_number(tmp_path, value):
    """The Study page's menu sends its value as it comes: 5.0 or True from a hand-made callback was stored as given."""
    from core.ingest import ingest
    from core.store import Store

    store = Store(tmp_path / "data")
    ds = make_dataset(**KINDS["u12_odd"])
    list(ingest(store, [write(ds, tmp_path / "in.dcm")]))
    if value is None:  # follow the policy again
        store.set_study_strategy(ds.StudyInstanceUID, 4)
        store.set_study_strategy(ds.StudyInstanceUID, None)
        assert store.study(ds.StudyInstanceUID)["strategy"] is None
        return
    with pytest.raises(InvalidOptionError, match="does not exist"):
        store.set_study_strategy(ds.StudyInstanceUID, value)
    assert store.study(ds.StudyInstanceUID)["strategy"] is None
