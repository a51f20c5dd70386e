"""A job's recipient ledger for staff: who it reached, what their server said, who read and answered.

Filters run on the job's own rows (the (job_id, status) index narrows them); a search by part of a
name or address looks in the address directory first (trigram-indexed on PostgreSQL); the CSV
export streams rows from a server-side cursor, so a job of any size is exported in flat memory.
"""
import csv
import io
from collections.abc import Iterator

from sqlalchemy import func, select, text

from ..extensions import db
from ..pagination import Page
from ..timeutil import aware
from .models import Notification, RecipientAddress, RecipientStatus

FILTERS = {
    "sent": Notification.status == RecipientStatus.SENT,
    "failed": Notification.status == RecipientStatus.FAILED,
    "pending": Notification.status.in_((RecipientStatus.PENDING, RecipientStatus.SENDING)),
    "canceled": Notification.status == RecipientStatus.CANCELED,
    "opted_out": Notification.status == RecipientStatus.OPTED_OUT,
    "suppressed": Notification.status == RecipientStatus.SUPPRESSED,
    "bounced": Notification.status == RecipientStatus.BOUNCED,
    "acknowledged": Notification.acknowledged_at.is_not(None),
    # Those the notice was meant to reach who have not said they read it (not those it left out).
    "not_acknowledged": Notification.acknowledged_at.is_(None) & Notification.status.not_in(
        (RecipientStatus.OPTED_OUT, RecipientStatus.SUPPRESSED)),
}
COLUMNS = ("name", "email", "children", "status", "sent_at", "server_reply", "acknowledged_at", "rsvp")
MAX_QUERY = 200
COUNT_AHEAD = 1000  # rows counted past a page before the total says "more than"


class LedgerError(ValueError):
    def __init__(self, fields: dict[str, str]):
        super().__init__("; ".join(fields.values()))
        self.fields = fields


def _query(job_id: int, status: str = "", q: str = ""):
    where = [Notification.job_id == job_id]
    if status:
        if status not in FILTERS:
            raise LedgerError({"status": "Choose one of: " + ", ".join(FILTERS)})
        where.append(FILTERS[status])
    q = (q or "").strip()
    if len(q) > MAX_QUERY:
        raise LedgerError({"q": f"At most {MAX_QUERY} characters."})
    if q:
        pattern = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        # Looked up in the address directory (indexed for it, and never updated by sending), then
        # the job's rows by (job, address).
        where.append(Notification.email.in_(select(RecipientAddress.email).where(
            RecipientAddress.search.like(pattern, escape="\\"))))
    return where


def _plan_for_this_pattern(q: str) -> None:
    """PostgreSQL: plan a search for its own pattern. psycopg prepares a statement run often, and
    the server's generic plan for ``LIKE :pattern`` cannot use the trigram indexes (a search took
    over 150 ms instead of 10); ``SET LOCAL`` lasts until this request's transaction ends."""
    if q.strip() and db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def row(recipient: Notification) -> dict:
    return {"id": recipient.id, "name": recipient.name, "email": recipient.email, "children": recipient.children,
            "status": recipient.status, "sent_at": _iso(recipient.sent_at), "server_reply": recipient.last_error,
            "acknowledged_at": _iso(recipient.acknowledged_at), "rsvp": recipient.rsvp}


def _iso(value) -> str | None:
    return aware(value).isoformat() if value else None


def page(job_id: int, status: str = "", q: str = "", number: int = 1, per_page: int = 50) -> Page:
    """One page of the ledger in address order; ``LedgerError`` for an unknown filter."""
    where = _query(job_id, status, q)
    _plan_for_this_pattern(q)
    offset = (number - 1) * per_page
    # Counted only so far past this page: a broad search or filter on a large job would otherwise
    # count tens of thousands of rows on every page, to print a number nobody needs exactly.
    limit = offset + per_page + COUNT_AHEAD + 1
    counted = db.session.scalar(select(func.count()).select_from(
        select(Notification.id).where(*where).limit(limit).subquery()))
    items = db.session.scalars(select(Notification).where(*where).order_by(Notification.email)
                               .limit(per_page).offset(offset)).all()
    exact = counted < limit
    return Page(items=items, page=number, per_page=per_page, total=counted if exact else limit - 1, exact=exact)


def csv_lines(job_id: int, status: str = "", q: str = "") -> Iterator[str]:
    """The ledger as CSV, a line at a time."""
    where = _query(job_id, status, q)  # refuses a bad filter before the first line goes out
    _plan_for_this_pattern(q)
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(COLUMNS)
    stream = db.session.execute(select(Notification).where(*where).order_by(Notification.id)
                                .execution_options(yield_per=1000)).scalars()
    for recipient in stream:
        data = row(recipient)
        yield line([_safe(data[column]) for column in COLUMNS])


def _safe(value) -> str:
    """A cell as text, never a formula a spreadsheet would run (CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
