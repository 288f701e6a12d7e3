"""The Studies list: one page of studies, searched, filtered and sorted in SQL, ready to show.

A clinic holds tens of thousands of studies, so the list never loads them all:
the search is :func:`core.query.study_where` (the QIDO-RS / C-FIND matching and
the :func:`core.users.authorize` rule, in SQL), the sort is an ORDER BY on an
indexed column, and only the studies of the page asked for are summed up
(series, instances, sizes, achieved ratios), over the instances the user may see.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .codecs.rate import RATIO_TOLERANCE
from .derive import LossyHistory
from .errors import InvalidOptionError
from .present import copies_saving, dicom_date, human_size, person_name, sex
from .query import study_where
from .store import Store
from .users import User

__all__ = ["SORTABLE", "PAGE_SIZE", "StudyPage", "study_page", "list_filters", "visible_modalities"]

PAGE_SIZE = 25
MAX_PAGE_SIZE = 200
# column id -> ORDER BY expression; each is an indexed column (core.store SCHEMA), so a page costs the same at 10,000 studies
SORTABLE = {"patient": "p.name COLLATE NOCASE", "patient_id": "p.patient_id", "birth_date": "p.birth_date",
            "date": "st.date", "accession": "st.accession", "description": "st.description COLLATE NOCASE"}
_ISO_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})")


@dataclass(frozen=True)
class StudyPage:
    """One page of the list: its rows, how many studies match in all, and the page count."""

    rows: list[dict]
    total: int
    page: int
    pages: int


def list_filters(patient_id: str | None = None, name: str | None = None, accession: str | None = None,
                 modalities: list[str] | None = None, date_from: str | None = None, date_to: str | None = None) -> dict:
    """The list's search fields as matching keys of :mod:`core.query`.

    A name without wildcards matches as a prefix ("doe" finds DOE^JANE) and may be typed
    as the list shows it ("Doe, Jane"); patient ID and accession match exactly unless they
    hold ``*`` or ``?``.  Dates come from the date picker as YYYY-MM-DD; either end may be open.
    """
    filters: dict = {}
    name, patient_id, accession = (_field(v, label) for v, label in ((name, "patient name"), (patient_id, "patient ID"),
                                                                       (accession, "accession number")))
    if modalities is not None and (not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities)):
        raise InvalidOptionError("The modalities to search for must be a list of names (CT, MR ...).")
    if name:
        name = re.sub(r"\s*,\s*", "^", name)
        filters["PatientName"] = name if "*" in name or "?" in name else name + "*"
    for key, value in (("PatientID", patient_id), ("AccessionNumber", accession)):
        if value:
            filters[key] = value
    if modalities:
        filters["ModalitiesInStudy"] = list(modalities)
    low, high = _da(date_from, "from"), _da(date_to, "to")
    if low or high:
        if low and high and low > high:
            raise InvalidOptionError(f"The study date range ends ({date_to}) before it starts ({date_from}).",
                                     hint="Swap the two dates.")
        filters["StudyDate"] = f"{low}-{high}"
    return filters


def study_page(store: Store, user: User | None, filters: dict | None = None, sort: str = "date",
               descending: bool = True, page: int = 0, page_size: int = PAGE_SIZE) -> StudyPage:
    """Page *page* (0-based) of the studies matching *filters* that *user* may open, sorted by column id *sort*."""
    if not isinstance(sort, str) or sort not in SORTABLE:
        raise InvalidOptionError(f"The list cannot be sorted by '{sort}'.", hint="Sortable: " + ", ".join(SORTABLE) + ".")
    if not isinstance(page, int) or not isinstance(page_size, int) or page < 0 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidOptionError(f"Page {page!r} of size {page_size!r} is not a page of the list.",
                                 hint=f"Pages count from 0 and hold 1 to {MAX_PAGE_SIZE} studies.")
    where, params, inst = study_where(store, user, filters)
    base = f"FROM studies st JOIN patients p USING (patient_key) WHERE {where}"
    total = store.query(f"SELECT count(*) {base}", params)[0][0]
    pages = max(1, math.ceil(total / page_size))
    page = min(page, pages - 1)
    order = "DESC" if descending else "ASC"
    studies = store.query(
        f"SELECT st.study_uid, st.date, st.description, st.accession, p.name AS patient_name, p.patient_id, p.birth_date, "
        f"p.sex {base} ORDER BY {SORTABLE[sort]} {order}, st.study_uid {order} LIMIT ? OFFSET ?",
        (*params, page_size, page * page_size))
    return StudyPage(_rows(store, studies, inst), total, page, pages)


def visible_modalities(store: Store, user: User | None) -> list[str]:
    """The modalities of the series the user may see, for the filter's choices."""
    where, params, inst = study_where(store, user)
    rows = store.query(
        f"SELECT DISTINCT s.modality FROM series s JOIN studies st USING (study_uid) JOIN patients p USING (patient_key) "
        f"WHERE s.modality != '' AND {where} AND EXISTS (SELECT 1 FROM instances i WHERE i.series_uid = s.series_uid AND {inst}) "
        f"ORDER BY s.modality", params)
    return [r[0] for r in rows]


def _field(value, label: str) -> str:
    """A search field's text (a hand-made request may send a number or a list)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidOptionError(f"The {label} to search for must be text, not {type(value).__name__}.")
    return value.strip()


def _da(value, end: str) -> str:
    text = str(value or "").strip()
    if not text:
        return ""
    m = _ISO_DATE.match(text)
    if not m:
        raise InvalidOptionError(f"The study date '{end}' must be a date (YYYY-MM-DD), not '{text[:40]}'.")
    return m[1] + m[2] + m[3]


def _rows(store: Store, studies, inst: str) -> list[dict]:
    """The page's studies as the table shows them; counts and sizes cover the instances the user may see (*inst*)."""
    uids = [s["study_uid"] for s in studies]
    if not uids:
        return []
    marks = ",".join("?" * len(uids))
    counts = {r["study_uid"]: r for r in store.query(
        f"SELECT s.study_uid, group_concat(DISTINCT s.modality) AS modalities, count(DISTINCT s.series_uid) AS series, "
        f"count(*) AS instances FROM series s JOIN instances i USING (series_uid) WHERE s.study_uid IN ({marks}) AND {inst} "
        f"GROUP BY s.study_uid", uids)}
    sizes: dict[str, dict[str, int]] = {}
    for r in store.query(
            f"SELECT s.study_uid, a.variant, sum(a.bytes) AS bytes FROM series s JOIN instances i USING (series_uid) "
            f"JOIN artifacts a USING (sop_uid) WHERE s.study_uid IN ({marks}) AND {inst} GROUP BY s.study_uid, a.variant", uids):
        sizes.setdefault(r["study_uid"], {})[r["variant"]] = r["bytes"]
    lossy: dict[str, list] = {}
    for r in store.query(
            f"SELECT s.study_uid, a.ratio, a.achieved_ratio FROM series s JOIN instances i USING (series_uid) "
            f"JOIN artifacts a USING (sop_uid) WHERE s.study_uid IN ({marks}) AND {inst} AND a.variant = 'lossy'", uids):
        lossy.setdefault(r["study_uid"], []).append(r)
    already: dict[str, list] = {}
    for r in store.query(
            f"SELECT s.study_uid, i.lossy, i.lossy_ratio, i.lossy_methods FROM series s JOIN instances i USING (series_uid) "
            f"WHERE s.study_uid IN ({marks}) AND {inst} AND i.lossy", uids):
        already.setdefault(r["study_uid"], []).append(r)
    rows = []
    for s in studies:
        uid, count, by_variant = s["study_uid"], counts.get(s["study_uid"]), sizes.get(s["study_uid"], {})
        rows.append({
            "patient": person_name(s["patient_name"]), "patient_id": s["patient_id"],
            "birth_date": dicom_date(s["birth_date"]), "sex": sex(s["sex"]),
            "date": dicom_date(s["date"]), "accession": s["accession"], "description": s["description"],
            "modalities": ",".join(sorted(set((count["modalities"] or "").split(",")) - {""})) if count else "",
            "series": count["series"] if count else 0, "instances": count["instances"] if count else 0,
            "strategy": store.study_strategy(uid),
            "originals": human_size(by_variant.get("original", 0)), "stored": human_size(sum(by_variant.values())),
            "saving": copies_saving(by_variant),
            "lossy_ratio": _achieved(lossy.get(uid, [])),
            "lossy_originals": _lossy_originals(already.get(uid, [])),
            "uid": uid,
        })
    return rows


def _achieved(lossy) -> str:
    """The ratios the stored lossy copies achieved (not the ones asked for), and how many missed their target."""
    values = [a["achieved_ratio"] for a in lossy if a["achieved_ratio"]]
    if not values:
        return "—"
    low, high = min(values), max(values)
    text = f"{low:.1f}:1" if round(low, 1) == round(high, 1) else f"{low:.1f}–{high:.1f}:1"
    missed = sum(1 for a in lossy if a["achieved_ratio"] and a["ratio"]
                 and abs(a["achieved_ratio"] / a["ratio"] - 1) > RATIO_TOLERANCE)
    return text + (f" ({missed} missed the target)" if missed else "")


def _lossy_originals(rows) -> str:
    """Instances that were already lossy when they came in, with their cumulative ratios."""
    if not rows:
        return ""
    ratios = sorted({LossyHistory.from_index(r).compressed for r in rows})
    return f"⚠ {len(rows)} ({'; '.join(ratios)})"
