"""Searches over the index (never the files): QIDO-RS and C-FIND both answer from here.

One function per level takes matching keys by DICOM keyword, the way PS3.4
C.2.2.2 and PS3.18 §8.3.4 define them: single value (``*`` / ``?`` wildcards;
Patient's Name case-insensitive), a list of UIDs (``\\`` or ``,``), a date
range (``YYYYMMDD-YYYYMMDD``, open at either end); an empty value matches
everything.  What the user may see is decided by the same rule as
:func:`core.users.authorize` (:func:`core.users.visibility_sql`), in SQL, so
10,000 studies answer in milliseconds.  Matches are dicts keyed by keyword;
:func:`as_dataset` turns one into a pydicom Dataset (C-FIND), :func:`as_json` into DICOM JSON (QIDO-RS).
"""

from __future__ import annotations

import functools
import re

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from .errors import InvalidOptionError
from .store import Store
from .users import User, authorize, visibility_sql
from .validate import check_uid

__all__ = ["STUDY_KEYS", "SERIES_KEYS", "INSTANCE_KEYS", "MAX_LIMIT", "find_studies", "find_series", "find_instances",
           "study_where", "as_dataset", "as_json"]

MAX_LIMIT = 5000  # one answer never holds more; ask again with offset

# keyword -> (SQL column, kind); kinds: uid (list of UIDs), date (range), pn (case-insensitive), text, int, modality
_PATIENT = {"PatientID": ("p.patient_id", "text"), "PatientName": ("p.name", "pn"), "PatientBirthDate": ("p.birth_date", "date")}
_STUDY = {"StudyInstanceUID": ("st.study_uid", "uid"), "StudyDate": ("st.date", "date"),
          "AccessionNumber": ("st.accession", "text"), "StudyDescription": ("st.description", "text"),
          "ModalitiesInStudy": ("", "modality")}
_SERIES = {"SeriesInstanceUID": ("s.series_uid", "uid"), "Modality": ("s.modality", "text"),
           "SeriesNumber": ("s.number", "int"), "SeriesDescription": ("s.description", "text"),
           "BodyPartExamined": ("s.body_part", "text")}
_INSTANCE = {"SOPInstanceUID": ("i.sop_uid", "uid"), "SOPClassUID": ("i.sop_class", "uid"), "InstanceNumber": ("i.number", "int")}
STUDY_KEYS = {**_PATIENT, **_STUDY}
SERIES_KEYS = {**STUDY_KEYS, **_SERIES}
INSTANCE_KEYS = {**SERIES_KEYS, **_INSTANCE}
_DATE = re.compile(r"\d{8}")


def find_studies(store: Store, user: User | None, filters: dict | None = None, limit: int | None = None,
                 offset: int = 0) -> list[dict]:
    """Studies matching *filters* that *user* may open, newest first, with their related-series/instance counts."""
    where, params, inst = _where(store, user, filters, STUDY_KEYS)
    limit, offset = _page(limit, offset)
    rows = store.query(
        f"SELECT m.*, (SELECT group_concat(DISTINCT s.modality) FROM series s JOIN instances i USING (series_uid) "
        f"  WHERE s.study_uid = m.study_uid AND s.modality != '' AND {inst}) AS modalities, "
        f"(SELECT count(DISTINCT s.series_uid) FROM series s JOIN instances i USING (series_uid) "
        f"  WHERE s.study_uid = m.study_uid AND {inst}) AS n_series, "
        f"(SELECT count(*) FROM series s JOIN instances i USING (series_uid) WHERE s.study_uid = m.study_uid AND {inst}) AS n_instances "
        f"FROM (SELECT st.*, p.name AS patient_name, p.patient_id, p.birth_date FROM studies st JOIN patients p USING (patient_key) "
        f"  WHERE {where} ORDER BY st.date DESC, st.study_uid LIMIT ? OFFSET ?) m",
        (*params, limit, offset))
    return [_study(r) for r in rows]


def find_series(store: Store, user: User | None, filters: dict | None = None, limit: int | None = None,
                offset: int = 0) -> list[dict]:
    """Series matching *filters* (study-level keys too) in studies *user* may open, with their instance counts."""
    where, params, inst = _where(store, user, filters, SERIES_KEYS)
    limit, offset = _page(limit, offset)
    rows = store.query(
        f"SELECT m.*, (SELECT count(*) FROM instances i WHERE i.series_uid = m.series_uid AND {inst}) AS n_instances "
        f"FROM (SELECT s.*, s.description AS series_description, st.date, st.accession, st.description AS study_description, "
        f"  p.name AS patient_name, p.patient_id, p.birth_date FROM series s JOIN studies st USING (study_uid) "
        f"  JOIN patients p USING (patient_key) WHERE {where} "
        f"  AND EXISTS (SELECT 1 FROM instances i WHERE i.series_uid = s.series_uid AND {inst}) "
        f"  ORDER BY st.date DESC, s.study_uid, s.number, s.series_uid LIMIT ? OFFSET ?) m",
        (*params, limit, offset))
    return [_series(r) for r in rows]


def find_instances(store: Store, user: User | None, filters: dict | None = None, limit: int | None = None,
                   offset: int = 0) -> list[dict]:
    """Instances matching *filters* (study- and series-level keys too) that *user* may open."""
    where, params, inst = _where(store, user, filters, INSTANCE_KEYS)
    limit, offset = _page(limit, offset)
    rows = store.query(
        "SELECT i.*, s.study_uid, s.modality, s.number AS series_number, s.description AS series_description, s.body_part, "
        "st.date, st.accession, st.description AS study_description, p.name AS patient_name, p.patient_id, p.birth_date "
        "FROM instances i JOIN series s USING (series_uid) JOIN studies st USING (study_uid) JOIN patients p USING (patient_key) "
        f"WHERE {where} AND {inst} ORDER BY st.date DESC, s.study_uid, s.number, s.series_uid, i.number, i.sop_uid "
        "LIMIT ? OFFSET ?", (*params, limit, offset))
    return [_instance(r) for r in rows]


def study_where(store: Store, user: User | None, filters: dict | None = None) -> tuple[str, list, str]:
    """The WHERE clause of :func:`find_studies` (on ``st`` and ``p``) with its parameters, and the clause on ``i``
    for the instances *user* may see: the same matching and rule for other views of a search (the Studies list)."""
    return _where(store, user, filters, STUDY_KEYS)


def as_dataset(match: dict) -> Dataset:
    """A match as a Dataset (``to_json_dict()`` gives DICOM JSON); empty values stay present but empty."""
    ds = Dataset()
    for keyword, value in match.items():
        setattr(ds, keyword, "" if value is None else value)
    return ds


def as_json(match: dict) -> dict:
    """A match in DICOM JSON (PS3.18 F.2), as ``as_dataset(match).to_json_dict()`` gives it, 50 times faster."""
    out = {}
    for keyword, value in match.items():
        tag, vr = _tag_vr(keyword)
        values = [v for v in (value if isinstance(value, list) else [value]) if v not in (None, "")]
        if vr == "PN":
            values = [{"Alphabetic": v} for v in values]
        out[tag] = {"vr": vr, "Value": values} if values else {"vr": vr}
    return dict(sorted(out.items()))


@functools.lru_cache(maxsize=None)
def _tag_vr(keyword: str) -> tuple[str, str]:
    tag = tag_for_keyword(keyword)
    return f"{tag:08X}", dictionary_VR(tag)


# -- building the WHERE clause ----------------------------------------------------------
def _where(store: Store, user: User | None, filters: dict | None, keys: dict) -> tuple[str, list, str]:
    authorize(store, user, "view")  # logged in, with a role that may open studies; which ones is visibility_sql
    study_sql, study_params, inst = visibility_sql(user)
    clauses, params = [study_sql], list(study_params)
    for keyword, value in (filters or {}).items():
        if keyword not in keys:
            raise InvalidOptionError(f"'{keyword}' is not a matching key at this level.",
                                     hint="Keys: " + ", ".join(keys) + ".")
        value = _text(keyword, value)
        if value in ("", "*"):
            continue  # universal match
        column, kind = keys[keyword]
        sql, values = _match(keyword, column, kind, value, inst)
        clauses.append(sql)
        params.extend(values)
    return " AND ".join(f"({c})" for c in clauses), params, inst


def _text(keyword: str, value) -> str:
    if isinstance(value, (list, tuple)):
        value = "\\".join(str(v) for v in value)
    if value is None:
        return ""
    value = str(value).strip()
    if len(value) > 1024 or any(ord(c) < 32 for c in value):
        raise InvalidOptionError(f"The value of '{keyword}' is too long or holds control characters.")
    return value


def _match(keyword: str, column: str, kind: str, value: str, inst: str) -> tuple[str, list]:
    if kind == "uid":
        uids = [u.strip() for u in re.split(r"[\\,]", value) if u.strip()]
        for uid in uids:
            check_uid(uid, keyword)
        return f"{column} IN ({','.join('?' * len(uids))})", uids
    if kind == "date":
        return _date_range(keyword, column, value)
    if kind == "int":  # an IS value: -2^31 .. 2^31-1 (PS3.5 6.2); a larger one is 400, not SQLite's overflow (500)
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not -(1 << 31) <= number < 1 << 31:
            raise InvalidOptionError(f"'{keyword}' must be a whole number (IS, 32-bit), not '{value[:40]}'.")
        return f"{column} = ?", [number]
    if kind == "modality":
        values = [v.strip() for v in re.split(r"[\\,]", value) if v.strip()]
        return (f"EXISTS (SELECT 1 FROM series ms JOIN instances i USING (series_uid) WHERE ms.study_uid = st.study_uid "
                f"AND ms.modality IN ({','.join('?' * len(values))}) AND {inst})"), values
    values = [v for v in value.split("\\") if v]
    sqls, out = [], []
    for v in values:
        if kind == "pn":  # case-insensitive; '^' separates name components as stored
            sqls.append(f"casefold({column}) LIKE casefold(?) ESCAPE '\\'")
            out.append(re.sub(r"([%_\\])", r"\\\1", v).replace("*", "%").replace("?", "_"))
        elif "*" in v or "?" in v:
            sqls.append(f"{column} GLOB ?")
            out.append(v.replace("[", "[[]"))
        else:
            sqls.append(f"{column} = ?")
            out.append(v)
    return " OR ".join(sqls), out


def _date_range(keyword: str, column: str, value: str) -> tuple[str, list]:
    low, sep, high = value.partition("-")
    for part in (low, high):
        if part and not _DATE.fullmatch(part):
            raise InvalidOptionError(f"'{keyword}' must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD, not '{value}'.",
                                     hint="Either end of a range may be left open: 20240101- or -20241231.")
    if not sep:
        return f"{column} = ?", [low]
    sql, params = [f"{column} != ''"], []
    if low:
        sql.append(f"{column} >= ?")
        params.append(low)
    if high:
        sql.append(f"{column} <= ?")
        params.append(high)
    return " AND ".join(sql), params


def _page(limit, offset) -> tuple[int, int]:
    try:
        limit = MAX_LIMIT if limit in (None, "") else int(limit)
        offset = 0 if offset in (None, "") else int(offset)
    except (TypeError, ValueError):
        raise InvalidOptionError(f"limit and offset must be whole numbers (got {limit!r}, {offset!r}).") from None
    if limit < 0 or not 0 <= offset < 1 << 62:  # SQLite integers are 64-bit: a larger offset was a 500
        raise InvalidOptionError(f"limit and offset must not be negative, offset below 2^62 (got {limit}, {offset}).")
    return min(limit, MAX_LIMIT), offset


# -- rows to matches ----------------------------------------------------------------------
def _patient_study(r) -> dict:
    return {"PatientName": r["patient_name"] or "", "PatientID": r["patient_id"] or "",
            "PatientBirthDate": r["birth_date"] or "", "StudyInstanceUID": r["study_uid"], "StudyDate": r["date"] or "",
            "AccessionNumber": r["accession"] or "", "StudyDescription": r["study_description"] or ""}


def _study(r) -> dict:
    row = dict(r)
    row["study_description"] = row["description"]
    return {**_patient_study(row), "ModalitiesInStudy": sorted(set((r["modalities"] or "").split(",")) - {""}),
            "NumberOfStudyRelatedSeries": r["n_series"], "NumberOfStudyRelatedInstances": r["n_instances"]}


def _series(r) -> dict:
    return {**_patient_study(r), "SeriesInstanceUID": r["series_uid"], "Modality": r["modality"] or "",
            "SeriesNumber": r["number"], "SeriesDescription": r["series_description"] or "",
            "BodyPartExamined": r["body_part"] or "", "NumberOfSeriesRelatedInstances": r["n_instances"]}


def _instance(r) -> dict:
    out = {**_patient_study(r), "SeriesInstanceUID": r["series_uid"], "Modality": r["modality"] or "",
           "SeriesNumber": r["series_number"], "SeriesDescription": r["series_description"] or "",
           "SOPInstanceUID": r["sop_uid"], "SOPClassUID": r["sop_class"] or "", "InstanceNumber": r["number"],
           "AvailableTransferSyntaxUID": r["transfer_syntax"] or ""}
    if r["rows"]:
        out.update({"Rows": r["rows"], "Columns": r["columns"], "NumberOfFrames": r["frames"] or 1,
                    "SamplesPerPixel": r["samples"], "BitsAllocated": r["bits_allocated"],
                    "PhotometricInterpretation": r["photometric"] or "",
                    "LossyImageCompression": "01" if r["lossy"] else "00"})
    return out
