"""What the Study page shows of one study: read in a few queries, its series paged and each series' cards paged.

A 300-instance study drawn whole was 730 KB of layout built in 0.5-1.8 s before a thumbnail could start (two
queries per card for its thumbnail's version, a dozen components each).  The page now draws at most
:data:`FIRST_CARDS` cards at first: at most :data:`SERIES_PER_PAGE` series (a CT of 300 one-slice series was
950 KB and 0.5 s of layout with a row of cards for every series), each with an equal share of cards, at least one
row of :data:`MIN_PER_PAGE`.  The other series and the rest of a series' cards are drawn on the server when paged
to: everything stays one click away, nothing is left out, and every series' heading counts its lossy originals.
"""

from __future__ import annotations

from dataclasses import dataclass

from .archive import thumbnail_versions
from .errors import InvalidOptionError
from .master import Master, masters
from .store import Artifact, Store
from .users import User, visible_instances

__all__ = ["FIRST_CARDS", "MIN_PER_PAGE", "SERIES_PER_PAGE", "Card", "SeriesPage", "SeriesGroup", "StudyView", "study_view"]

FIRST_CARDS = 48  # cards drawn when the page opens, shared by its series (12 rows of 4)
MIN_PER_PAGE = 4  # a series never shows less than a row at once
SERIES_PER_PAGE = FIRST_CARDS // MIN_PER_PAGE  # series drawn at once: each still gets a row within FIRST_CARDS


@dataclass(frozen=True)
class Card:
    """One instance as its card shows it: the index row, its stored copies, its thumbnail's URL, its master."""

    row: object  # sqlite3.Row of Store.instances
    artifacts: tuple[Artifact, ...]
    thumbnail: str
    master: Master | None


@dataclass(frozen=True)
class SeriesPage:
    """One page of a series' cards (*number* from 1 of *pages*)."""

    series_uid: str
    modality: str
    description: str
    number: int
    pages: int
    total: int
    start: int  # index of the first card shown, from 0
    cards: tuple[Card, ...]
    lossy: int  # instances of the whole series that arrived lossy-compressed, shown or not

    @property
    def shown(self) -> str:
        """E.g. ``instances 49–96 of 300`` (or ``3 instances`` when they all fit)."""
        if self.pages == 1:
            return f"{self.total} instance{'' if self.total == 1 else 's'}"
        return f"instances {self.start + 1}–{self.start + len(self.cards)} of {self.total}"


@dataclass(frozen=True)
class SeriesGroup:
    """The series drawn at once (page *number* from 1 of *pages*), each at its first page of cards."""

    number: int
    pages: int
    total: int  # series in the study
    start: int  # index of the first series shown, from 0
    series: tuple[SeriesPage, ...]

    @property
    def shown(self) -> str:
        """E.g. ``series 13–24 of 300`` (or ``2 series`` when they all fit)."""
        if self.pages == 1:
            return f"{self.total} series"
        return f"series {self.start + 1}–{self.start + len(self.series)} of {self.total}"


@dataclass(frozen=True)
class StudyView:
    """A study's instances this user may see, with every copy and master decision, grouped by series."""

    study_uid: str
    instances: tuple
    series: dict  # series UID -> its rows, in display order
    artifacts: dict  # SOP Instance UID -> tuple of Artifact
    thumbnails: dict  # SOP Instance UID -> version (core.archive.thumbnail_versions)
    masters: dict  # SOP Instance UID -> Master

    @property
    def mastered(self) -> int:
        return sum(1 for r in self.instances if (m := self.masters.get(r["sop_uid"])) is not None and m.mastered)

    @property
    def lossy(self) -> int:
        """Instances of the study that arrived lossy-compressed (said before any series is paged to)."""
        return sum(1 for r in self.instances if r["lossy"])

    @property
    def per_page(self) -> int:
        """Cards per page of each series: an equal share of :data:`FIRST_CARDS` among the series drawn at once,
        whole rows, at least one row."""
        share = FIRST_CARDS // max(min(len(self.series), SERIES_PER_PAGE), 1)
        return max(MIN_PER_PAGE, share - share % MIN_PER_PAGE)

    def pages(self) -> list[SeriesPage]:
        """The first page of every series of the first group, as the Study page opens."""
        return list(self.group().series)

    def group(self, number=1) -> SeriesGroup:
        """Group *number* (from 1) of :data:`SERIES_PER_PAGE` series; past the last group is the last group."""
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise InvalidOptionError(f"Page {number!r} of series: pages are whole numbers from 1.")
        uids = list(self.series)
        pages = max(1, -(-len(uids) // SERIES_PER_PAGE))
        number = min(number, pages)
        start = (number - 1) * SERIES_PER_PAGE
        return SeriesGroup(number, pages, len(uids), start, tuple(self.page(uid) for uid in uids[start:start + SERIES_PER_PAGE]))

    def page(self, series_uid: str, number=1) -> SeriesPage:
        """Page *number* (from 1) of a series of this study; past the last page is the last page."""
        rows = self.series.get(series_uid)
        if rows is None:
            raise InvalidOptionError(f"Series Instance UID {series_uid!r} is not a series of study {self.study_uid} "
                                     "that you may see.", hint="Reload the Study page.")
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise InvalidOptionError(f"Page {number!r} of a series: pages are whole numbers from 1.")
        size = self.per_page
        pages = -(-len(rows) // size)
        number = min(number, pages)
        start = (number - 1) * size
        cards = tuple(self._card(row) for row in rows[start:start + size])
        first = rows[0]
        return SeriesPage(series_uid, first["modality"] or "", first["series_description"] or "", number, pages, len(rows),
                          start, cards, sum(1 for r in rows if r["lossy"]))

    def _card(self, row) -> Card:
        sop = row["sop_uid"]
        version = self.thumbnails.get(sop)
        thumbnail = f"/thumbnail/{sop}" + (f"?v={version}" if version else "")
        return Card(row, self.artifacts.get(sop, ()), thumbnail, self.masters.get(sop))


def study_view(store: Store, user: User, study_uid: str) -> StudyView:
    """Everything the page shows of a study in four queries, whatever its size (after ``authorize`` allowed it)."""
    instances = visible_instances(store, user, study_uid)
    stored = store.artifacts(study_uid=study_uid)
    artifacts: dict[str, list] = {}
    for a in stored:
        artifacts.setdefault(a.sop_uid, []).append(a)
    series: dict[str, list] = {}
    for row in instances:
        series.setdefault(row["series_uid"], []).append(row)
    return StudyView(study_uid, tuple(instances), series, {k: tuple(v) for k, v in artifacts.items()},
                     thumbnail_versions(stored), masters(store, study_uid))
