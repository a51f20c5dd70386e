"""Addresses no notice goes to any more: what the fan-out asks, what a bounce adds, what an admin
or a corrected roster address lifts."""
import logging
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..timeutil import aware, utcnow
from .models import BounceReport, ReportKind, Suppression

log = logging.getLogger(__name__)

SOFT_LIMIT = 3  # soft bounces within SOFT_WINDOW that suppress an address
SOFT_WINDOW = timedelta(days=30)


def _key(email: str) -> str:
    return (email or "").strip().lower()


def suppressed_among(emails: list[str]) -> set[str]:
    """The addresses of ``emails`` (lower-cased) that are suppressed now."""
    if not emails:
        return set()
    return set(db.session.scalars(select(Suppression.email).where(
        Suppression.email.in_({_key(e) for e in emails}), Suppression.lifted_at.is_(None))))


def active(emails: list[str] | None = None) -> list[Suppression]:
    """Suppressed addresses, newest first (only those of ``emails`` when given)."""
    statement = select(Suppression).where(Suppression.lifted_at.is_(None)).order_by(Suppression.since.desc(),
                                                                                     Suppression.id.desc())
    if emails is not None:
        if not emails:
            return []
        statement = statement.where(Suppression.email.in_({_key(e) for e in emails}))
    return list(db.session.scalars(statement))


def suppress(email: str, kind: str, reason: str) -> bool:
    """Suppress the address (in the caller's transaction); True if it was not suppressed before."""
    email = _key(email)
    dialect_insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    made = db.session.execute(dialect_insert(Suppression).values(email=email, kind=kind, reason=reason[:2000],
                                                                  since=now)
                              .on_conflict_do_nothing(index_elements=["email"])).rowcount
    if made:
        log.info("suppressed %s (%s)", email, reason)
        return True
    renewed = db.session.execute(update(Suppression).where(Suppression.email == email,
                                                           Suppression.lifted_at.is_not(None))
                                 .values(kind=kind, reason=reason[:2000], since=now, lifted_at=None,
                                         lifted_why=None)).rowcount
    if renewed:
        log.info("suppressed %s again (%s)", email, reason)
    return bool(renewed)


def lift(email: str, why: str) -> bool:
    """Lift the address's suppression (in the caller's transaction); False if it had none."""
    lifted = db.session.execute(update(Suppression).where(Suppression.email == _key(email),
                                                          Suppression.lifted_at.is_(None))
                                .values(lifted_at=utcnow(), lifted_why=why[:200])).rowcount
    if lifted:
        log.info("lifted the suppression of %s (%s)", _key(email), why)
    return bool(lifted)


def lift_many(emails, why: str) -> int:
    return sum(lift(email, why) for email in {_key(e) for e in emails if e})


def soft_bounces(email: str) -> int:
    """Soft bounces of the address within SOFT_WINDOW, not counting those before its last lift."""
    email = _key(email)
    since = utcnow() - SOFT_WINDOW
    lifted = db.session.scalar(select(Suppression.lifted_at).where(Suppression.email == email))
    if lifted is not None and aware(lifted) > since:
        since = aware(lifted)
    return db.session.scalar(select(func.count()).select_from(BounceReport).where(
        BounceReport.email == email, BounceReport.kind == ReportKind.SOFT, BounceReport.received_at > since)) or 0


def to_json(suppression: Suppression) -> dict:
    return {"email": suppression.email, "kind": suppression.kind, "reason": suppression.reason,
            "since": aware(suppression.since).isoformat()}
