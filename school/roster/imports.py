"""Imports run on a consumer: the row is the truth, the queue carries only its id.

``start`` saves the upload and hands the id to ``enqueue``; a consumer's ``run`` writes the bundle
to a temporary file, imports it and stores the summary in the row. While it runs, the step it is
on sits in the shared cache (the import's own transaction holds the database's write lock on
SQLite, so progress cannot be written to the row meanwhile).
"""
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import and_, or_, select, update

from ..extensions import cache, db
from ..timeutil import utcnow
from .importer import STEPS, ImportSummary, import_roster
from .models import RosterImport

log = logging.getLogger(__name__)
MAX_FILENAME = 255
# An import still "running" this long after it started was lost with its consumer (100,000 students
# take about two minutes); one still "queued" after DISPATCH_GRACE was lost by the queue.
LEASE = timedelta(minutes=15)
DISPATCH_GRACE = timedelta(minutes=1)

Enqueue = Callable[[int], object]


class ImportStateError(ValueError):
    pass


def _step_key(import_id: int) -> str:
    return f"roster-import-step:{import_id}"


def start(filename: str, data: bytes, dry_run: bool, user, enqueue: Enqueue) -> RosterImport:
    record = RosterImport(filename=(Path(filename or "").name or "roster")[:MAX_FILENAME], dry_run=dry_run,
                          bundle=data, created_by=user)
    db.session.add(record)
    db.session.commit()
    _dispatch(record, enqueue)
    return record


def apply(import_id: int, user, enqueue: Enqueue) -> RosterImport:
    """Run for real the bundle a finished dry run looked at."""
    dry = db.session.get(RosterImport, import_id)
    if dry is None:
        raise LookupError(import_id)
    if not dry.dry_run or dry.status != "done" or dry.bundle is None:
        raise ImportStateError("only a finished dry run can be applied")
    return start(dry.filename, dry.bundle, False, user, enqueue)


def _dispatch(record: RosterImport, enqueue: Enqueue) -> None:
    try:
        enqueue(record.id)
    except Exception as exc:  # the queue is down: say so on the row rather than leave it waiting
        log.warning("could not queue roster import %s", record.id, exc_info=True)
        _finish(record.id, "failed", error=f"could not be queued: {exc}")


def _claimable(now):
    return or_(RosterImport.status == "queued",
               and_(RosterImport.status == "running", RosterImport.started_at < now - LEASE))


def stale() -> list[int]:
    """Imports the queue lost (never picked up, or their consumer died): ``run`` them again. A
    consumer that died mid-import rolled nothing half-way: its transaction never committed."""
    now = utcnow()
    return list(db.session.scalars(select(RosterImport.id).where(
        _claimable(now), RosterImport.created_at < now - DISPATCH_GRACE).order_by(RosterImport.id)))


def run(import_id: int) -> None:
    """Claim the import (once, whatever the queue redelivers) and run it."""
    now = utcnow()
    claimed = db.session.execute(update(RosterImport).where(
        RosterImport.id == import_id, _claimable(now)).values(status="running", started_at=now)
        .execution_options(synchronize_session=False))
    db.session.commit()
    if claimed.rowcount != 1:
        return
    data, filename, dry_run = db.session.execute(select(RosterImport.bundle, RosterImport.filename,
                                                        RosterImport.dry_run).where(RosterImport.id == import_id)).one()
    db.session.rollback()  # no transaction held open across the import's own
    try:
        with tempfile.TemporaryDirectory(prefix="roster-") as folder:
            path = Path(folder) / (filename if filename.lower().endswith((".zip", ".csv")) else filename + ".zip")
            path.write_bytes(data or b"")
            del data
            summary = import_roster(path, dry_run=dry_run, source=filename,
                                    progress=lambda step, _done: cache.set(_step_key(import_id), step, timeout=3600))
    except Exception as exc:
        db.session.rollback()
        log.exception("roster import %s failed", import_id)
        _finish(import_id, "failed", error=f"{type(exc).__name__}: {exc}")
        return
    _finish(import_id, "refused" if summary.refused else "done", summary=summary.to_json(), keep_bundle=dry_run)


def _finish(import_id: int, status: str, summary: dict | None = None, error: str | None = None,
            keep_bundle: bool = False) -> None:
    values = {"status": status, "finished_at": utcnow(), "summary": summary, "error": error}
    if not keep_bundle:
        values["bundle"] = None
    db.session.execute(update(RosterImport).where(RosterImport.id == import_id).values(**values))
    db.session.commit()
    cache.delete(_step_key(import_id))


@dataclass
class ImportProgress:
    id: int
    status: str
    dry_run: bool
    filename: str
    step: str | None
    percent: int
    ended: bool
    summary: ImportSummary | None
    error: str | None

    def to_json(self) -> dict:
        return {"id": self.id, "status": self.status, "dry_run": self.dry_run, "filename": self.filename,
                "step": self.step, "percent": self.percent,
                "summary": self.summary.to_json() if self.summary else None, "error": self.error}


def progress(record: RosterImport) -> ImportProgress:
    step = None
    if record.ended:
        percent = 100
    elif record.status == "running":
        step = cache.get(_step_key(record.id)) or STEPS[0]
        percent = round(100 * STEPS.index(step) / len(STEPS)) if step in STEPS else 0
    else:
        percent = 0
    summary = ImportSummary.from_json(record.summary) if record.summary else None
    return ImportProgress(record.id, record.status, record.dry_run, record.filename, step, percent, record.ended,
                          summary, record.error)
