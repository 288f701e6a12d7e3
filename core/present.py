"""How DICOM values read to people: names, dates, sexes, sizes, savings and dimensions, written one way everywhere.

Pages and the CLI call these so the same value never appears in two spellings
(20040826 on one screen, 2004-08-26 on another; rows × columns here, columns × rows there).
"""

from __future__ import annotations

import re

from pydicom.valuerep import PersonName

__all__ = ["person_name", "dicom_date", "sex", "human_size", "saving", "copies_saving", "dimensions", "duration", "NO_NAME"]

NO_NAME = "(no name)"

_DATE = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")  # DA, and the ACR-NEMA form 2004.08.26 old files still carry
_SEXES = {"M": "M", "F": "F", "O": "O"}


def person_name(value) -> str:
    """A PN as "Family, Given Middle" (prefix and suffix kept), from its alphabetic group, else the first non-empty one.

    An empty name reads "(no name)" rather than an empty string or "()".
    """
    pn = value if isinstance(value, PersonName) else PersonName(str(value or "").strip())
    for group in (pn.alphabetic, pn.ideographic, pn.phonetic):
        if group.strip("^ "):
            parts = PersonName(group)
            given = " ".join(p for p in (parts.name_prefix, parts.given_name, parts.middle_name) if p.strip())
            text = ", ".join(p for p in (parts.family_name.strip(), given.strip()) if p)
            return text + (f", {parts.name_suffix.strip()}" if parts.name_suffix.strip() else "")
    return NO_NAME


def dicom_date(value) -> str:
    """A DA (20040826) as 2004-08-26; an empty date stays empty and a malformed one is shown as it came, never guessed."""
    text = str(value or "").strip()
    m = _DATE.match(text)
    return f"{m[1]}-{m[2]}-{m[3]}" if m else text


def sex(value) -> str:
    """Patient's Sex (0010,0040) as M, F or O; anything else (empty or not a defined term) is left blank."""
    return _SEXES.get(str(value or "").strip().upper(), "")


def human_size(n: float) -> str:
    """Bytes in binary units with one decimal (1.5 MB)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return ""


def saving(originals: int, copy: int) -> str:
    """A copy's size against its originals: "−62 % smaller", "+710 % larger" or "same size" — the sign said once."""
    if originals <= 0:
        return "no originals"
    change = round(100 * (copy / originals - 1))
    if change < 0:
        return f"−{-change} % smaller"
    if change > 0:
        return f"+{change} % larger"
    return "same size"


def copies_saving(by_variant: dict[str, int]) -> str:
    """Each stored copy kind (lossless, lossy) against the originals it was made from, bytes summed per variant."""
    originals = by_variant.get("original", 0)
    text = ", ".join(f"{v} {saving(originals, by_variant[v])}" for v in ("lossless", "lossy") if v in by_variant and originals)
    return text or "no compressed copy stored"


def dimensions(columns, rows) -> str:
    """Image size as columns × rows (width × height), the order DICOM viewers and the Viewer page use."""
    return f"{columns} × {rows}"


def duration(seconds: float) -> str:
    """A span of time as 0.4 s, 12 s, 3 min 05 s or 2 h 07 min: the unit a person reads at a glance."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
