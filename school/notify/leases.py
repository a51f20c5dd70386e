"""Leases: how one worker at a time holds a job's fan-out or a batch.

A claim writes a fresh owner of its own (this process plus a random part) and an expiry. Every
later write of the holder checks that owner, so a worker whose lease ran out (and whose work the
sweeper handed to someone else) can no longer change anything, and stops.

Lease times come from the database's clock, never a consumer's: consumers on machines whose clocks
disagree still agree on when a lease runs out.
"""
import uuid
from datetime import datetime, timedelta, timezone

from flask import current_app
from sqlalchemy import text, update

from ..extensions import db
from .worker import WORKER

_NOW = {
    "postgresql": text("SELECT statement_timestamp()"),
    "sqlite": text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"),
}


class LeaseLost(RuntimeError):
    """The work is no longer this worker's: its lease ran out and someone else may be doing it."""


def db_now(connection=None) -> datetime:
    """The database's time now (UTC), read on ``connection`` or the session's."""
    executor = connection if connection is not None else db.session
    dialect = (connection.dialect if connection is not None else db.engine.dialect).name
    value = executor.scalar(_NOW[dialect])
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def duration() -> timedelta:
    return timedelta(seconds=current_app.config["NOTIFY_LEASE_SECONDS"])


def claim(model, row_id: int, available, owner_column, until_column, **values) -> str | None:
    """Lease row ``row_id`` of ``model`` where ``available(now)`` holds; the new owner, or None.

    ``values`` are written with the claim; a callable among them is given ``now``.
    """
    now = db_now()
    owner = new_owner()
    extra = {key: value(now) if callable(value) else value for key, value in values.items()}
    result = db.session.execute(
        update(model).where(model.id == row_id, available(now))
        .values({owner_column.key: owner, until_column.key: now + duration(), **extra}))
    db.session.commit()
    return owner if result.rowcount == 1 else None


def new_owner() -> str:
    return f"{WORKER}:{uuid.uuid4().hex[:12]}"


def expires_from(now: datetime | None = None) -> datetime:
    """When a lease renewed now runs out."""
    return (now or db_now()) + duration()


def renew(connection, model, row_id: int, owner_column, until_column, owner: str, lease: timedelta) -> bool:
    """Extend a held lease by ``lease`` on ``connection`` (committed at once); False when the claim
    no longer holds. Needs no app context: a worker's helper thread calls it."""
    until = db_now(connection) + lease
    result = connection.execute(update(model).where(model.id == row_id, owner_column == owner)
                                .values({until_column.key: until}))
    connection.commit()
    return result.rowcount == 1
