"""Leases: how one worker at a time holds a job's fan-out or a batch.

A claim writes a fresh owner of its own (this process plus a random part) and an expiry. Every
later write of the holder checks that owner, so a worker whose lease ran out (and whose work the
sweeper handed to someone else) can no longer change anything, and stops.
"""
import uuid
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import update

from ..extensions import db
from ..timeutil import utcnow
from .worker import WORKER


class LeaseLost(RuntimeError):
    """The work is no longer this worker's: its lease ran out and someone else may be doing it."""


def duration() -> timedelta:
    return timedelta(seconds=current_app.config["NOTIFY_LEASE_SECONDS"])


def claim(model, row_id: int, available, owner_column, until_column, **values) -> str | None:
    """Lease row ``row_id`` of ``model`` where ``available(now)`` holds; the new owner, or None.

    ``values`` are written with the claim; a callable among them is given ``now``.
    """
    now = utcnow()
    owner = f"{WORKER}:{uuid.uuid4().hex[:12]}"
    extra = {key: value(now) if callable(value) else value for key, value in values.items()}
    result = db.session.execute(
        update(model).where(model.id == row_id, available(now))
        .values({owner_column.key: owner, until_column.key: now + duration(), **extra}))
    db.session.commit()
    return owner if result.rowcount == 1 else None


def expires_from(now: datetime | None = None) -> datetime:
    """When a lease renewed now runs out."""
    return (now or utcnow()) + duration()
