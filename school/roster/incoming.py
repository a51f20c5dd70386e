"""The roster a bundle describes, before it is compared with the database.

Each kind of record is a ``Section``: how the source sent it (``bulk``: the whole list, so what is
missing leaves; ``delta``: only changes; ``absent``: not sent, left alone), the records by source
id as tuples in ``FIELDS`` order (a field ending in ``_id`` holds the source id of the record it
points to), and the source ids sent as ``tobedeleted``.
"""
import re
from dataclasses import dataclass, field

MODES = ("bulk", "delta", "absent")
KINDS = ("districts", "schools", "classes", "students", "teachers", "guardians")
PEOPLE = ("students", "teachers", "guardians")

FIELDS = {
    "districts": ("name",),
    "schools": ("name", "identifier", "district_id"),
    "classes": ("school_id", "name", "title", "kind", "grade"),
    "students": ("name", "email", "invalid_email", "phone", "language", "grade", "school_id"),
    "teachers": ("name", "email", "invalid_email", "phone", "language", "school_id"),
    "guardians": ("name", "email", "invalid_email", "phone", "language"),
}
# Which kind a reference field points to.
REFERENCES = {"district_id": "districts", "school_id": "schools"}

GRADE_CODES = {"IT": -4, "PR": -3, "PK": -2, "TK": -1, "KG": 0, "K": 0, "PS": 14}


def parse_grade(value: str) -> tuple[int | None, bool]:
    """``(grade, understood)``: OneRoster's codes (``KG``, ``01``..``13``, ``PK`` …) as the numbers
    audiences use; ``UG``/``Other`` and blanks are no grade."""
    value = value.strip().upper()
    if not value or value in ("UG", "OTHER"):
        return None, True
    if value in GRADE_CODES:
        return GRADE_CODES[value], True
    if re.fullmatch(r"\d{1,2}", value) and 1 <= int(value) <= 13:
        return int(value), True
    return None, False


@dataclass
class Section:
    mode: str = "absent"
    records: dict[str, tuple] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    # Source ids of rows skipped for an error: a bulk file does not make them leave.
    kept: set[str] = field(default_factory=set)


class Pairs:
    """(left, right) source-id pairs, kept as left -> list of rights: at 700,000 enrollments a set
    of tuples costs several times the memory. Duplicates are harmless; the importer merges them."""

    def __init__(self):
        self.by_left: dict[str, list[str]] = {}

    def add(self, pair: tuple[str, str]) -> None:
        left, right = pair
        rights = self.by_left.get(left)
        if rights is None:
            self.by_left[left] = [right]
        else:
            rights.append(right)

    def __iter__(self):
        for left, rights in self.by_left.items():
            for right in rights:
                yield left, right

    def __bool__(self) -> bool:
        return bool(self.by_left)


@dataclass
class Links:
    """Pairs between two kinds (guardianship, teaching, scheduled classes) or a student's homeroom.

    ``bulk``: ``pairs`` is the whole set. ``delta``: ``pairs`` are added, ``removed`` taken away, and
    for each owner in ``replaced`` (a person sent again) pairs not listed are taken away too.
    """

    mode: str = "absent"
    pairs: Pairs = field(default_factory=Pairs)
    removed: Pairs = field(default_factory=Pairs)
    replaced: set[str] = field(default_factory=set)


@dataclass
class IncomingRoster:
    format: str
    sections: dict[str, Section] = field(default_factory=lambda: {kind: Section() for kind in KINDS})
    # (student, guardian), (class, teacher), (class, student) for scheduled classes, (student, class) for homerooms
    guardianship: Links = field(default_factory=Links)
    teaching: Links = field(default_factory=Links)
    attending: Links = field(default_factory=Links)
    homerooms: Links = field(default_factory=Links)
    users_seen: int = 0
    users_refused: int = 0
