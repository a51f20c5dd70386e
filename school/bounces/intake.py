"""One way in for everything that comes back, however it arrives (the MTA's pipe, the listener,
a provider's webhook): find the ledger row it is about, then record it and act on it.

- a hard bounce marks the row ``bounced`` (with the status and the diagnostic) and suppresses the
  address;
- a soft bounce is recorded on the row; SOFT_LIMIT of them within SOFT_WINDOW suppress it;
- a complaint opts the address out of normal notices, as the unsubscribe link would.

Anything else (an automatic reply, a delay warning, garbage, a message too large, a bounce without
our signed tag) is ignored: logged and counted, and nothing changes.
"""
import email.utils
import logging
from dataclasses import dataclass
from email.message import Message

from flask import current_app
from sqlalchemy import select, update

from ..counters import record
from ..extensions import db
from ..family.preferences import set_normal_notices
from ..notify.models import Notification, NotificationJob, RecipientStatus
from . import parse, suppressions, verp
from .models import BounceReport, ReportKind

log = logging.getLogger(__name__)

# Headers an MTA leaves the envelope recipient in, when the pipe does not pass it.
RECIPIENT_HEADERS = ("X-Original-To", "Delivered-To", "Envelope-To", "To")


@dataclass
class Outcome:
    """What became of one message or report: ``handled`` (hard, soft, complaint) or ignored, and why."""

    handled: bool
    what: str
    email: str | None = None

    def __str__(self) -> str:
        return f"{self.what}: {self.email}" if self.email else self.what


def ignore(why: str) -> Outcome:
    log.info("bounce intake: ignored %s", why)
    record.count("bounces:ignored")
    return Outcome(False, why)


def _candidates(message: Message, envelope_recipients) -> list[str]:
    """Where the tag may be: the envelope first, then the headers, then the Return-Path of the
    original message a report carries (a complaint comes to another address)."""
    found = [str(a) for a in envelope_recipients or ()]
    for name in RECIPIENT_HEADERS:
        found += [str(value) for value in message.get_all(name) or []]
    for part in message.walk():
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else None
            if isinstance(inner, Message):
                found += [str(value) for value in inner.get_all("Return-Path") or []]
    addresses = []
    for value in found:
        for _name, address in email.utils.getaddresses([value]):
            if address and address not in addresses:
                addresses.append(address)
    return addresses


def receive_mail(raw: bytes, envelope_recipients=()) -> Outcome:
    """A bounce or complaint as mail delivers it. Database errors propagate (the caller asks the
    MTA to try again later); nothing the message holds does."""
    limit = current_app.config["BOUNCE_MAX_BYTES"]
    if len(raw) > limit:
        return ignore(f"a message of more than {limit} bytes")
    try:
        message = parse.read_bytes(raw)
        addresses = _candidates(message, envelope_recipients)
        report = parse.read(message)
    except Exception as exc:  # what the email package or a detector cannot read
        return ignore(f"an unreadable message ({type(exc).__name__})")
    tagged = [verp.read_address(a) for a in addresses]
    notification_id = next((n for n in tagged if n is not None), None)
    if notification_id is None:
        if any(verp.is_ours(a) and "+" in a for a in addresses):
            return ignore("a bounce address with a tag we did not sign")
        return ignore("a message without our bounce tag")
    row = db.session.get(Notification, notification_id)
    if row is None:
        return ignore(f"a report about recipient {notification_id}, whose row is gone")
    if report.kind is None:
        return ignore(report.ignored or "nothing to act on")
    return apply(report.kind, row.email, report.status, report.diagnostic, report.source, row)


def receive_report(kind: str, email: str, status: str | None, diagnostic: str | None, source: str,
                   notification_id: int | None = None) -> Outcome:
    """A provider's report (already authenticated): about ``notification_id`` when it names one of
    ours for that address, else the latest row sent to the address. An address we never sent to
    is ignored."""
    email = (email or "").strip().lower()
    if "@" not in email:
        return ignore(f"a {source} report without an address")
    row = db.session.get(Notification, notification_id) if notification_id else None
    if row is None or row.email.lower() != email:
        row = db.session.scalar(select(Notification).where(
            Notification.email == email, Notification.status.in_((RecipientStatus.SENT, RecipientStatus.BOUNCED)))
            .order_by(Notification.id.desc()).limit(1))
    if row is None and not db.session.scalar(select(BounceReport.id).where(BounceReport.email == email).limit(1)):
        return ignore(f"a {source} report about an address we never sent to")
    return apply(kind, email, status, diagnostic, source, row)


def _diagnostic(status: str | None, diagnostic: str | None) -> str:
    return " ".join(part for part in (status, diagnostic) if part) or "no reason given"


def apply(kind: str, email: str, status: str | None, diagnostic: str | None, source: str,
          row: Notification | None) -> Outcome:
    """Record the report and act on it, in one transaction."""
    email = email.strip().lower()
    reason = _diagnostic(status, diagnostic)
    db.session.add(BounceReport(email=email, kind=kind, status=(status or None) and status[:20],
                                diagnostic=diagnostic, source=source,
                                notification_id=row.id if row else None, job_id=row.job_id if row else None))
    if kind == ReportKind.HARD:
        if row is not None:
            _mark_bounced(row, f"bounced: {reason}")
        suppressions.suppress(email, kind, f"bounced: {reason}")
    elif kind == ReportKind.SOFT:
        if row is not None:
            db.session.execute(update(Notification).where(
                Notification.id == row.id, Notification.status == RecipientStatus.SENT)
                .values(last_error=f"soft bounce: {reason}"[:2000]))
        db.session.flush()
        if suppressions.soft_bounces(email) >= suppressions.SOFT_LIMIT:
            suppressions.suppress(email, kind, f"{suppressions.SOFT_LIMIT} soft bounces in "
                                               f"{suppressions.SOFT_WINDOW.days} days, the last: {reason}")
    if kind == ReportKind.COMPLAINT:
        set_normal_notices(email, False)  # commits the whole transaction
    else:
        db.session.commit()
    record.count(f"bounces:{kind}")
    log.info("bounce intake: %s bounce report for %s via %s (%s)", kind, email, source, reason)
    return Outcome(True, {"hard": "hard bounce", "soft": "soft bounce"}.get(kind, str(kind)), email)


def _mark_bounced(row: Notification, reason: str) -> None:
    """The row goes from sent to bounced, and its job counts it once."""
    changed = db.session.execute(update(Notification).where(
        Notification.id == row.id, Notification.status == RecipientStatus.SENT)
        .values(status=RecipientStatus.BOUNCED, last_error=reason[:2000])).rowcount
    if changed:
        db.session.execute(update(NotificationJob).where(NotificationJob.id == row.job_id)
                           .values(bounced=NotificationJob.bounced + 1))
