"""Bringing a bundle's roster into the database: compare, then write the differences in one transaction.

Records are matched by source id. Nothing is deleted: people and classes missing from a bulk file,
or sent as ``tobedeleted``, are deactivated. Rows are streamed from the files and from the tables
and written with bulk Core statements, never as ORM objects, so 100,000 students take seconds. A
dry run does every comparison and writes nothing; re-importing the same bundle finds no
differences ("no changes").
"""
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from sys import intern
from pathlib import Path

from sqlalchemy import bindparam, delete, insert, select, tuple_, update

from ..bounces.suppressions import lift_many
from ..extensions import db
from . import oneroster, simplecsv
from .bundle import Bundle, BundleError, Problem, Problems
from .incoming import FIELDS, KINDS, IncomingRoster, Links, Section
from .models import District, Guardian, School, SchoolClass, Student, Teacher, class_students, class_teachers, \
    student_guardians
from .services import roster_changed

TABLES = {"districts": District.__table__, "schools": School.__table__, "classes": SchoolClass.__table__,
          "students": Student.__table__, "teachers": Teacher.__table__, "guardians": Guardian.__table__}
REFERENCES = {"district_id": "districts", "school_id": "schools", "class_id": "classes"}
# name, table, left column and kind, right column and kind
PAIRS = (
    ("guardian links", student_guardians, "student_id", "students", "guardian_id", "guardians", "guardianship"),
    ("teaching", class_teachers, "class_id", "classes", "teacher_id", "teachers", "teaching"),
    ("scheduled class places", class_students, "class_id", "classes", "student_id", "students", "attending"),
)
MAX_BAD_USERS = 0.01
CHUNK = 5000
STEPS = ("read", *KINDS, "homerooms", *(p[0] for p in PAIRS), "commit")

Progress = Callable[[str, int], None]


@dataclass
class Change:
    added: int = 0
    changed: int = 0
    deactivated: int = 0

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.deactivated)


@dataclass
class ImportSummary:
    source: str
    format: str = ""
    dry_run: bool = False
    refused: bool = False
    counts: dict[str, Change] = field(default_factory=dict)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    problems_total: int = 0

    @property
    def no_changes(self) -> bool:
        return not self.refused and not any(self.counts.values()) and not any(a or r for a, r in self.links.values())

    def lines(self) -> list[str]:
        head = f"{self.format or 'Roster'} from {self.source}"
        if self.refused:
            out = [f"{head}: refused, nothing was changed."]
        else:
            out = [head + (" (dry run: nothing was written)" if self.dry_run else "")]
            if self.no_changes:
                out.append("no changes")
            for kind, change in self.counts.items():
                out.append(f"{kind}: {change.added} added, {change.changed} changed, {change.deactivated} deactivated")
            for name, (added, removed) in self.links.items():
                out.append(f"{name}: {added} added, {removed} removed" if name != "homerooms"
                           else f"{name}: {added} students placed or moved, {removed} left without one")
        if self.problems_total:
            out.append(f"problems ({self.problems_total}):")
            out.extend(f"  {p}" for p in self.problems)
            if self.problems_total > len(self.problems):
                out.append(f"  … and {self.problems_total - len(self.problems)} more")
        return out

    def to_json(self) -> dict:
        return {
            "source": self.source, "format": self.format, "dry_run": self.dry_run, "refused": self.refused,
            "no_changes": self.no_changes,
            "counts": {k: vars(c) for k, c in self.counts.items()},
            "links": {k: {"added": a, "removed": r} for k, (a, r) in self.links.items()},
            "problems": [p.to_json() for p in self.problems], "problems_total": self.problems_total,
        }

    @classmethod
    def from_json(cls, data: dict) -> "ImportSummary":
        return cls(data["source"], data["format"], data["dry_run"], data["refused"],
                   {k: Change(**c) for k, c in data["counts"].items()},
                   {k: (v["added"], v["removed"]) for k, v in data["links"].items()},
                   [Problem(**p) for p in data["problems"]], data["problems_total"])


def _no_progress(step: str, done: int) -> None:
    pass


def import_roster(path: Path, dry_run: bool = False, source: str | None = None,
                  progress: Progress = _no_progress) -> ImportSummary:
    """Read the bundle at ``path`` and bring the database in line with it (unless ``dry_run``).

    A bundle that cannot be read, or where more than 1% of users have errors, is refused whole
    (``summary.refused``) and nothing is written. Otherwise the good rows apply in one
    transaction (the session's: whatever it held before is rolled back) and every problem is listed
    with its file and line.
    """
    summary = ImportSummary(source or path.name, dry_run=dry_run)
    problems = Problems()
    db.session.rollback()  # the import is a transaction of its own
    if dry_run:  # reads only: on SQLite it need not take the write lock and hold up events meanwhile
        db.session.connection(execution_options={"sqlite_readonly": True})
    try:
        with Bundle(path) as bundle:
            progress("read", 0)
            roster = _read(bundle, problems)
        summary.format = roster.format
        if roster.users_seen and roster.users_refused / roster.users_seen > MAX_BAD_USERS:
            # First in the list, however many row problems there are.
            problems.kept.insert(0, Problem("users", None, f"{roster.users_refused} of {roster.users_seen} users "
                                                           f"have errors (more than {MAX_BAD_USERS:.0%}); the bundle "
                                                           f"is refused"))
            problems.total += 1
            summary.refused = True
    except BundleError as exc:
        for problem in exc.problems:
            problems.add(problem.file, problem.line, problem.message)
        summary.refused = True
    if not summary.refused:
        try:
            _apply(roster, summary, dry_run, progress)
        except Exception:
            db.session.rollback()
            raise
        if dry_run or summary.no_changes:
            db.session.rollback()
        else:
            progress("commit", 0)
            db.session.commit()
            roster_changed()
    summary.problems, summary.problems_total = problems.kept, problems.total
    return summary


def _read(bundle: Bundle, problems: Problems) -> IncomingRoster:
    if oneroster.is_oneroster(bundle):
        return oneroster.read(bundle, _known_source_ids, problems)
    if simplecsv.is_simple(bundle):
        return simplecsv.read(bundle, problems)
    raise BundleError([Problem(bundle.path.name, None, "neither a OneRoster bundle (no manifest.csv) nor the simple CSV "
                                                       f"(no {simplecsv.STUDENTS}); found: "
                                                       + (", ".join(bundle.names()) or "no files"))])


def _known_source_ids(kind: str) -> set[str]:
    """Active source ids in the database, which a delta file may refer to."""
    if kind == "homerooms":
        table, where = TABLES["classes"], [TABLES["classes"].c.kind == "homeroom"]
    else:
        table, where = TABLES[kind], []
    return set(db.session.scalars(select(table.c.sourced_id).where(
        table.c.sourced_id.is_not(None), table.c.active, *where)))


def _apply(roster: IncomingRoster, summary: ImportSummary, dry_run: bool, progress: Progress) -> None:
    ids: dict[str, dict[str, int]] = {}
    gone: dict[str, set[int]] = {}
    homerooms = dict(roster.homerooms.pairs) if roster.homerooms.mode != "absent" else None  # one room each
    for kind in KINDS:
        progress(kind, 0)
        section = roster.sections[kind]
        extra = {"class_id": homerooms} if kind == "students" and homerooms is not None else {}
        summary.counts[kind] = _sync_records(kind, section, ids, gone, dry_run, extra)
    progress("homerooms", 0)
    summary.links["homerooms"] = _sync_homerooms(roster.homerooms, ids, gone.get("students", set()), dry_run)
    for name, table, left, left_kind, right, right_kind, attribute in PAIRS:
        progress(name, 0)
        links = getattr(roster, attribute)
        if links.mode != "absent":
            summary.links[name] = _sync_pairs(table, left, left_kind, right, right_kind, links, ids, dry_run)


def _resolve(fields: tuple[str, ...], record: tuple, ids: dict) -> tuple:
    return tuple(ids[REFERENCES[f]].get(v) if f in REFERENCES and v is not None else v
                 for f, v in zip(fields, record))


def _load_ids(kind: str) -> dict[str, int]:
    """Source id -> row id; the ids are interned, so they share the strings the bundle's records hold."""
    table = TABLES[kind]
    rows = db.session.execute(select(table.c.sourced_id, table.c.id).where(table.c.sourced_id.is_not(None))
                              .execution_options(yield_per=CHUNK))
    return {intern(sid): row_id for sid, row_id in rows}


def _sync_records(kind: str, section: Section, ids: dict, gone: dict, dry_run: bool, extra: dict) -> Change:
    """Insert, update and deactivate one kind's rows; ``ids[kind]`` then maps every source id to its
    row id (a provisional negative one for rows a dry run would insert), ``gone[kind]`` holds the
    row ids deactivated (or that a dry run would deactivate)."""
    table, fields = TABLES[kind], FIELDS[kind]
    if section.mode == "absent":
        ids[kind] = _load_ids(kind)
        return Change()
    change = Change()
    corrected: set[str] = set()  # addresses the bundle changes: a suppression on them is lifted
    columns = [table.c[f] for f in fields]
    found: dict[str, int] = {}
    updates, deactivate = [], []
    rows = db.session.execute(select(table.c.id, table.c.sourced_id, table.c.active, *columns)
                              .execution_options(yield_per=CHUNK))
    for row_id, sid, active, *values in rows:
        if sid is not None:
            found[intern(sid)] = row_id
        record = section.records.get(sid) if sid is not None else None
        if record is None:
            if active and (section.mode == "bulk" or sid in section.deleted) and sid not in section.kept:
                deactivate.append(row_id)
            continue
        resolved = _resolve(fields, record, ids)
        if not active or tuple(values) != resolved:
            updates.append({"row_id": row_id, **{f"v_{f}": v for f, v in zip(fields, resolved)}})
            if "email" in fields and values[fields.index("email")] != resolved[fields.index("email")]:
                corrected.add(resolved[fields.index("email")])
    new = [sid for sid in section.records if sid not in found]
    change.added, change.changed, change.deactivated = len(new), len(updates), len(deactivate)
    gone[kind] = set(deactivate)
    if dry_run:
        found.update((sid, -n) for n, sid in enumerate(new, start=1))
        ids[kind] = found
        return change
    if updates:
        statement = update(table).where(table.c.id == bindparam("row_id")).values(
            active=True, **{f: bindparam(f"v_{f}") for f in fields})
        for start in range(0, len(updates), CHUNK):
            db.session.execute(statement, updates[start:start + CHUNK])
        lift_many(corrected, "address corrected by a roster import")
    for start in range(0, len(deactivate), CHUNK):
        db.session.execute(update(table).where(table.c.id.in_(deactivate[start:start + CHUNK])).values(active=False))
    if new:
        for start in range(0, len(new), CHUNK):
            batch = []
            for sid in new[start:start + CHUNK]:
                row = dict(zip(fields, _resolve(fields, section.records[sid], ids)), sourced_id=sid, active=True)
                for name, mapping in extra.items():
                    target = mapping.get(sid)
                    row[name] = ids[REFERENCES[name]].get(target) if target is not None else None
                batch.append(row)
            db.session.execute(insert(table), batch)
        found = _load_ids(kind)
    ids[kind] = found
    return change


def _sync_homerooms(links: Links, ids: dict, leaving: set[int], dry_run: bool) -> tuple[int, int]:
    """``(placed or moved, left without a homeroom)`` for students' ``class_id``."""
    if links.mode == "absent":
        return 0, 0
    classes, students = ids["classes"], ids["students"]
    desired = {students[s]: classes.get(c) for s, c in links.pairs if s in students}
    table = TABLES["students"]
    moves = []
    if links.mode == "bulk":
        for row_id, class_id in db.session.execute(select(table.c.id, table.c.class_id).where(table.c.active)
                                                   .execution_options(yield_per=CHUNK)):
            target = desired.get(row_id)
            if target != class_id and row_id not in leaving:
                moves.append({"row_id": row_id, "v_class_id": target})
    else:
        current = dict(db.session.execute(select(table.c.id, table.c.class_id).where(
            table.c.id.in_([students[s] for s in {*links.pairs.by_left, *links.removed.by_left} if s in students]))).all())
        for row_id, target in desired.items():
            if current.get(row_id, target) != target:
                moves.append({"row_id": row_id, "v_class_id": target})
        for s, c in links.removed:
            row_id = students.get(s)
            if row_id in current and current[row_id] == classes.get(c) and row_id not in desired:
                moves.append({"row_id": row_id, "v_class_id": None})
    placed = sum(1 for m in moves if m["v_class_id"] is not None)
    if not dry_run and moves:
        statement = update(table).where(table.c.id == bindparam("row_id")).values(class_id=bindparam("v_class_id"))
        for start in range(0, len(moves), CHUNK):
            db.session.execute(statement, moves[start:start + CHUNK])
    return placed, len(moves) - placed


def _sync_pairs(table, left: str, left_kind: str, right: str, right_kind: str, links: Links, ids: dict,
                dry_run: bool) -> tuple[int, int]:
    """Compare one link table with the bundle owner by owner (class, or student for guardians),
    streaming the table in key order: memory stays at the bundle's own size."""
    lefts, rights = ids[left_kind], ids[right_kind]
    desired: dict[int, tuple[int, ...]] = {}
    for owner, others in links.pairs.by_left.items():
        owner_id = lefts.get(owner)
        if owner_id is not None:
            wanted = {rights[o] for o in others if o in rights}
            desired[owner_id] = tuple(sorted({*desired.get(owner_id, ()), *wanted}))
    named_removed = {}
    for owner, others in links.removed.by_left.items():
        if owner in lefts:
            named_removed[lefts[owner]] = {rights[o] for o in others if o in rights}
    replaced = {lefts[s] for s in links.replaced if s in lefts}
    adds: list[tuple[int, tuple[int, ...]]] = []
    removes: list[tuple[int, int]] = []
    rows = db.session.execute(select(table.c[left], table.c[right]).order_by(table.c[left], table.c[right])
                              .execution_options(yield_per=CHUNK))
    for owner_id, group in groupby(rows, key=itemgetter(0)):
        have = {other for _, other in group}
        want = desired.pop(owner_id, ())
        missing = tuple(o for o in want if o not in have)
        if missing:
            adds.append((owner_id, missing))
        if links.mode == "bulk" or owner_id in replaced:
            gone = have.difference(want)
        else:
            gone = have & named_removed.get(owner_id, set())
        removes.extend((owner_id, o) for o in sorted(gone))
    adds.extend(desired.items())  # owners with no links yet
    added = sum(len(others) for _, others in adds)
    if not dry_run:
        batch = []
        for owner_id, others in adds:
            batch.extend({left: owner_id, right: other} for other in others)
            if len(batch) >= CHUNK:
                db.session.execute(insert(table), batch)
                batch = []
        if batch:
            db.session.execute(insert(table), batch)
        for start in range(0, len(removes), 500):
            db.session.execute(delete(table).where(
                tuple_(table.c[left], table.c[right]).in_(removes[start:start + 500])))
    return added, len(removes)


__all__ = ["STEPS", "Change", "ImportSummary", "import_roster"]
