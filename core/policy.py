"""Storage strategies and the clinic's lossy policy: what is kept for each study.

The strategy table and the ratio defaults are data, read by the archive, the
storage API and the Policy page alike.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Mapping

from .codecs import LOSSLESS_RULES, MAX_RATIO, MIN_RATIO, choose_codec, get_codec, get_rule
from .errors import InvalidOptionError, UnsupportedError
from .pixels import PixelSpec

__all__ = [
    "Strategy",
    "STRATEGIES",
    "get_strategy",
    "Policy",
    "RECOMMENDED_RATIOS",
    "UPPER_BOUNDS",
    "VARIANTS",
    "LossySetting",
    "codec_for",
    "ratio_for",
    "lossy_setting",
    "lossless_codec_for",
    "upper_bound",
    "check_bound",
    "ratio_warning",
    "MODALITIES",
    "LOSSLESS_CHOICES",
    "parse_ratio",
    "ratio_fallback",
    "check_modality",
]

VARIANTS = ("original", "lossless", "lossy", "thumbnail")


@dataclass(frozen=True)
class Strategy:
    number: int
    name: str
    stored: tuple[str, ...]  # made at ingest and kept
    on_demand: tuple[str, ...]  # made when asked for, cached
    pros: str
    cons: str
    suits: str


STRATEGIES: tuple[Strategy, ...] = (
    Strategy(1, "Everything ready", ("original", "lossless", "lossy", "thumbnail"), (),
             "Every download and viewer is served at once.", "Most disk: three copies of every image.",
             "Busy clinics with plenty of disk and many remote viewers."),
    Strategy(2, "Original + lossless", ("original", "lossless"), ("lossy",),
             "Bit-exact compressed copy ready for transfer; no lossy copy stored.", "Lossy views are made on first request.",
             "Clinics that rarely use lossy images."),
    Strategy(3, "Original + lossy", ("original", "lossy"), ("lossless",),
             "Cheap, fast web viewing.", "Lossless transfers are compressed on demand.",
             "Teleradiology and web viewing on slow links."),
    Strategy(4, "Original only", ("original",), ("lossless", "lossy"),
             "Least disk of the strategies that keep the original file.", "Everything is compressed on the fly at download.",
             "Small archives, rare downloads."),
    Strategy(5, "Lossless master", ("master",), ("lossy",),
             "Least disk: each image once, as a JPEG-LS lossless master that a second decoder confirmed bit-exact "
             "(every other attribute and the SOP Instance UID kept); it is the lossless copy too.",
             "The original file is replaced by its master (audited); downloads of the original are the master. "
             "Lossy copies are made on first request. Already-lossy originals stay as they came.",
             "Archives short of disk that still need every image bit-exact."),
)


def _strategy_hint() -> str:
    numbers = [str(s.number) for s in STRATEGIES]
    return f"Choose {', '.join(numbers[:-1])} or {numbers[-1]}."


def get_strategy(number: int) -> Strategy:
    """The strategy numbered *number*, a whole number (5.0 or True from a hand-made request was stored as given)."""
    for strategy in STRATEGIES:
        if strategy.number == number and type(number) is int:
            return strategy
    raise InvalidOptionError(f"Storage strategy {number!r} does not exist.", hint=_strategy_hint())


# What lossless copies may be made with, clinic-wide or per modality: (name, label), from the codec registry.
LOSSLESS_CHOICES: tuple[tuple[str, str], ...] = tuple((r.name, r.label) for r in LOSSLESS_RULES)
# Modalities the Policy page offers a row for (any other valid code may be set through the API).
MODALITIES: tuple[str, ...] = ("CR", "DX", "CT", "MR", "MG", "US", "XA", "RF", "NM", "PT", "OT")
_MODALITY = re.compile(r"[A-Z0-9_ ]{1,16}")


def check_modality(code) -> str:
    """A Modality (0008,0060) code as a policy key: CS, upper case, at most 16 characters."""
    if not isinstance(code, str) or not _MODALITY.fullmatch(code) or code != code.strip():
        raise InvalidOptionError(f"{code!r} is not a Modality (0008,0060) code.",
                                 hint="Use the DICOM defined term in capitals, e.g. CT, MR, CR, DX.")
    return code


# German radiology consensus (Loose et al., RöFo 2009; endorsed by the German
# Radiation Protection Commission, 2011): keys are (modality, anatomy or "").
RECOMMENDED_RATIOS: dict[tuple[str, str], float] = {
    ("CT", "BRAIN"): 5,
    ("CT", ""): 8,
    ("CR", ""): 10,
    ("DX", ""): 10,
    ("MG", ""): 15,
    ("MR", ""): 7,
    ("XA", ""): 6,
    ("RF", ""): 6,
}
# Canadian Association of Radiologists (2008): the outer limit an admin is warned about.
UPPER_BOUNDS: dict[tuple[str, str], float] = {
    ("CR", ""): 30,
    ("DX", ""): 30,
    ("CT", "BRAIN"): 12,
    ("CT", ""): 15,
    ("US", ""): 12,
    ("MR", ""): 24,
    ("NM", ""): 11,
}
_BRAIN_WORDS = ("BRAIN", "HEAD", "SKULL", "NEURO", "CEREBR")


def anatomy(body_part: str, description: str = "") -> str:
    text = f"{body_part} {description}".upper()
    return "BRAIN" if any(w in text for w in _BRAIN_WORDS) else ""


@dataclass(frozen=True)
class Policy:
    """Clinic-wide settings; per-study strategy overrides live with the study."""

    strategy: int = 1
    lossy_enabled: bool = True
    default_ratio: float = 10.0
    ratios: dict[str, float] = field(default_factory=lambda: {_key(k): v for k, v in RECOMMENDED_RATIOS.items()})
    # Lossless copies: a rule or a codec from LOSSLESS_CHOICES; the web-delivery rule by default.  A policy
    # stored by an older version keeps the codec it was saved with (JPEG 2000), so an upgrade re-encodes nothing.
    lossless_codec: str = "ohif"
    lossy_codec: str = "j2k"
    # A ratio is chosen for one codec (the lab measures codec and ratio together):
    # keys of ``ratios`` whose ratio was chosen for another codec than lossy_codec.
    lossy_codecs: dict[str, str] = field(default_factory=dict)
    lossy_banner: str = "LOSSY — compressed {ratio}:1 ({codec}, {method}) — not for primary diagnosis"  # clinic's wording
    # Per modality, between the clinic default and a study's own override: a strategy number, a lossless choice.
    strategies: dict[str, int] = field(default_factory=dict)
    lossless_codecs: dict[str, str] = field(default_factory=dict)

    def validated(self) -> "Policy":
        # JSON from the API: "false" or 1 where a boolean goes would silently leave lossy copies switched on.
        if isinstance(self.strategy, bool) or not isinstance(self.strategy, int):
            raise InvalidOptionError(f"Storage strategy {self.strategy!r} is not a number.", hint="Choose 1, 2, 3 or 4.")
        if not isinstance(self.lossy_enabled, bool):
            raise InvalidOptionError(f"lossy_enabled {self.lossy_enabled!r} is not true or false.",
                                     hint="Send a JSON boolean, not a string or a number.")
        if not isinstance(self.lossy_banner, str):
            raise InvalidOptionError(f"The lossy banner {self.lossy_banner!r} is not text.")
        get_strategy(self.strategy)
        if not isinstance(self.strategies, dict) or not isinstance(self.lossless_codecs, dict):
            raise InvalidOptionError("strategies and lossless_codecs are objects keyed by modality.", hint='For example {"CT": 2}.')
        for modality, number in self.strategies.items():
            check_modality(modality)
            if isinstance(number, bool) or not isinstance(number, int):
                raise InvalidOptionError(f"Storage strategy {number!r} for {modality} is not a number.", hint=_strategy_hint())
            get_strategy(number)
        get_rule(self.lossless_codec)
        for modality, choice in self.lossless_codecs.items():
            check_modality(modality)
            get_rule(choice)
        _check_banner(self.lossy_banner)
        if not isinstance(self.ratios, dict) or not isinstance(self.lossy_codecs, dict):
            raise InvalidOptionError("ratios and lossy_codecs are objects keyed by modality.", hint='For example {"CT": 8}.')
        get_codec(self.lossy_codec, True)
        for codec in self.lossy_codecs.values():
            get_codec(codec, True)
        for key in (*self.ratios, *self.lossy_codecs):
            if not _ratio_key(key):  # "ct" or "../x" would be saved and never match an image
                raise InvalidOptionError(f"{key!r} is not a Modality (0008,0060) code (optionally followed by BRAIN) "
                                         "to key a ratio by.", hint='Use the DICOM defined term in capitals, e.g. "CT", "CT BRAIN".')
        for key, value in {"default": self.default_ratio, **self.ratios}.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidOptionError(f"Lossy ratio {value!r} for {key} is not a number.", hint="For example 10.")
            if not MIN_RATIO <= float(value) <= MAX_RATIO:
                raise InvalidOptionError(
                    f"Lossy ratio {value}:1 for {key} is out of range.", hint=f"Choose between {MIN_RATIO:g} and {MAX_RATIO:g}."
                )
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def strategy_for(self, modalities: Mapping[str, int]) -> int:
        """A study's strategy when it has no override: that of its most frequent image modality (counts of
        instances with pixels), else the clinic default."""
        if modalities:
            main = min(modalities, key=lambda m: (-modalities[m], m))
            return self.strategies.get(main, self.strategy)
        return self.strategy

    def lossless_choice(self, modality: str) -> str:
        """The rule or codec lossless copies of this modality's images are made with."""
        return self.lossless_codecs.get(modality, self.lossless_codec)

    @classmethod
    def from_dict(cls, data: dict) -> "Policy":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return replace(cls(), **known).validated()

    @classmethod
    def stored(cls, data: dict) -> "Policy":
        """The policy kept in the index; one saved before types were checked ("false", true, "10") is read as meant."""
        data = dict(data)
        if isinstance(data.get("lossy_enabled"), str):
            data["lossy_enabled"] = data["lossy_enabled"].strip().lower() in ("1", "true", "yes", "on")
        elif "lossy_enabled" in data:
            data["lossy_enabled"] = bool(data["lossy_enabled"])
        if isinstance(data.get("strategy"), (bool, str, float)):
            data["strategy"] = int(data["strategy"])
        for key in ("default_ratio",):
            if isinstance(data.get(key), str):
                data[key] = float(data[key])
        if isinstance(data.get("ratios"), dict):  # a key no image matches (accepted once by the API) is dropped
            data["ratios"] = {k: float(v) if isinstance(v, str) else v for k, v in data["ratios"].items() if _ratio_key(k)}
        if isinstance(data.get("lossy_codecs"), dict):
            data["lossy_codecs"] = {k: v for k, v in data["lossy_codecs"].items() if _ratio_key(k)}
        return cls.from_dict(data)


def _ratio_key(key) -> bool:
    """A key of ``ratios``: a modality code, maybe with an anatomy ("CT BRAIN"); images without a modality follow the
    default ratio (an empty key broke the Policy page and PUT /api/policy)."""
    return isinstance(key, str) and bool(_MODALITY.fullmatch(key)) and key == key.strip()


MAX_BANNER = 300


def _check_banner(template: str) -> None:
    """The banner is a str.format template shown on every lossy image: only the plain fields {ratio}, {codec} and
    {method}, so that a typo cannot break Compare for everyone and no field can reach into Python objects."""
    import string

    if len(template) > MAX_BANNER or any(ord(c) < 32 or ord(c) == 127 for c in template):
        raise InvalidOptionError(f"The lossy banner must be one line of at most {MAX_BANNER} characters.",
                                 hint="It is shown above every lossy image: keep it short.")
    try:
        fields = [(name, spec, conv) for _text, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise InvalidOptionError(f"The lossy banner is not a valid template: {exc}.", hint="Write braces as {{ and }}.") from None
    if "ratio" not in {name for name, _spec, _conv in fields}:  # "{{ratio}}" holds the text, not the field
        raise InvalidOptionError("The lossy banner must show the ratio.", hint="Keep {ratio} in the wording.")
    for name, spec, conv in fields:
        if name not in ("ratio", "codec", "method") or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise InvalidOptionError(f"The lossy banner's field {shown} is not allowed.",
                                     hint="Use {ratio}, {codec} and {method} only, without formats.")


def _key(key: tuple[str, str]) -> str:
    return f"{key[0]} {key[1]}".strip()


def _keys(modality: str, body_part: str, description: str) -> tuple[str, str]:
    return _key((modality, anatomy(body_part, description))), modality


def ratio_for(policy: Policy, modality: str, body_part: str = "", description: str = "") -> float:
    """The clinic's ratio for an image: modality + anatomy, then modality, then the clinic default."""
    for key in _keys(modality, body_part, description):
        if key in policy.ratios:
            return float(policy.ratios[key])
    return float(policy.default_ratio)


def codec_for(policy: Policy, modality: str, body_part: str = "", description: str = "") -> str:
    """The codec the clinic's ratio for this image was chosen for (the same key order as :func:`ratio_for`)."""
    for key in _keys(modality, body_part, description):
        if key in policy.ratios:
            return policy.lossy_codecs.get(key, policy.lossy_codec)
    return policy.lossy_codec


def parse_ratio(text, label: str) -> float | None:
    """A ratio typed into a form: None when empty (the ratio then follows the next one in :func:`ratio_for`'s
    order), else a number within MIN_RATIO–MAX_RATIO, or InvalidOptionError saying what is wrong."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        value = float(text.strip().replace(",", ".")) if isinstance(text, str) else float(text)
    except (TypeError, ValueError):
        raise InvalidOptionError(f"The {label} ratio {text!r} is not a number.", hint="For example 10 (meaning 10:1).") from None
    if not MIN_RATIO <= value <= MAX_RATIO:  # NaN fails this too
        raise InvalidOptionError(f"The {label} ratio {value:g}:1 is out of range.",
                                 hint=f"Choose between {MIN_RATIO:g}:1 and {MAX_RATIO:g}:1.")
    return value


def ratio_fallback(policy: Policy, key: str) -> tuple[float, str]:
    """The ratio an empty field for *key* ("CT BRAIN", "CT") means, and where it comes from."""
    modality = key.split()[0]
    if modality != key and modality in policy.ratios:
        return float(policy.ratios[modality]), modality
    return float(policy.default_ratio), "the default"


def upper_bound(modality: str, body_part: str = "", description: str = "") -> float | None:
    """The CAR 2008 upper bound for this kind of image, or None where CAR sets none."""
    region = anatomy(body_part, description)
    return UPPER_BOUNDS.get((modality, region)) or UPPER_BOUNDS.get((modality, ""))


def _label(modality: str, body_part: str, description: str) -> str:
    return f"{modality} {anatomy(body_part, description).lower()}".strip()


def check_bound(ratio: float, modality: str, body_part: str = "", description: str = "", *, cap: bool) -> tuple[float, str | None]:
    """Keep a lossy target within the CAR upper bound: refuse it (``cap=False``) or lower it to the bound, saying so."""
    bound = upper_bound(modality, body_part, description)
    if bound is None or ratio <= bound:
        return ratio, None
    label = _label(modality, body_part, description)
    message = (f"{ratio:g}:1 exceeds the Canadian Association of Radiologists' upper bound of {bound:g}:1 "
               f"for {label} (Modality (0008,0060) = {modality})")
    if not cap:
        raise InvalidOptionError(f"{message}.", hint=f"Choose a ratio of at most {bound:g}:1.")
    return bound, f"{message}: capped at {bound:g}:1."


def ratio_warning(modality: str, ratio: float, body_part: str = "", description: str = "") -> str | None:
    """A warning when *ratio* exceeds the CAR 2008 upper bound for this kind of image."""
    bound = upper_bound(modality, body_part, description)
    if bound and ratio > bound:
        label = _label(modality, body_part, description)
        return (f"{ratio:g}:1 exceeds the Canadian Association of Radiologists' upper bound of {bound:g}:1 for {label}: "
                f"lossy copies are capped at {bound:g}:1.")
    return None


@dataclass(frozen=True)
class LossySetting:
    """What an instance's lossy copy is made with: codec and ratio chosen together, within the CAR bound."""

    codec: str
    ratio: float
    requested: float
    bound: float | None
    note: str | None  # set when the requested ratio was capped at the bound


def lossy_setting(policy: Policy, row) -> LossySetting:
    """Codec and ratio for one indexed instance: the study's own pair when set, else the clinic's for its kind.

    *row* is an instance row of the index (modality, body_part, study_description,
    study_ratio, study_codec).
    """
    kind = (row["modality"] or "", row["body_part"] or "", row["study_description"] or "")
    if row["study_ratio"]:
        requested, codec = float(row["study_ratio"]), row["study_codec"] or policy.lossy_codec
    else:
        requested, codec = ratio_for(policy, *kind), codec_for(policy, *kind)
    ratio, note = check_bound(requested, *kind, cap=True)
    return LossySetting(codec, ratio, requested, upper_bound(*kind), note)


def lossless_codec_for(policy: Policy, row, signed: bool | None = None) -> str:
    """The codec of an instance's lossless copy: its modality's choice (a rule or a codec) applied to its kind.

    *row* is an instance row of the index; *signed* overrides its Pixel Representation (rows indexed before
    it was recorded have none).  When no codec takes the image, the choice's own codec is named and making
    the copy fails with the reason.
    """
    rule = get_rule(policy.lossless_choice(row["modality"] or ""))
    spec = PixelSpec(row["rows"], row["columns"], row["samples"], row["bits_allocated"], row["bits_stored"],
                     bool(row["signed"]) if signed is None else signed, row["photometric"] or "", row["frames"] or 1)
    try:
        return choose_codec("auto", False, spec, rule).name
    except UnsupportedError:
        return rule.preferred(spec, False)
