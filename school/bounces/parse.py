"""Reading what came back: a delivery status notification (RFC 3464), a complaint (ARF, RFC 5965),
one of the many non-standard bounces (flufl.bounce), or nothing we act on (an out-of-office reply,
a delay warning, a human's answer).

Only the message is read here; which recipient it is about comes from the address it was sent to
(see ``verp``), never from the message alone, which anyone can write.
"""
import email
import email.policy
import email.utils
import logging
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser

from flufl.bounce import all_failures

from .models import ReportKind

log = logging.getLogger(__name__)

STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# Refusals that are about this message or about us, not the address: not a reason to give it up.
SOFT_ANYWAY = {(2, 2), (3, 4), (7, None)}  # mailbox full, message too big, policy (spam filters, reputation)
AUTO_REPLY_SUBJECT = re.compile(r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?(reply|response)|"
                                r"abwesenheit|absence|vacation)", re.IGNORECASE)
NOT_COMPLAINTS = ("not-spam",)


@dataclass
class Report:
    """What a message says: ``kind`` hard, soft or complaint, or None with ``ignored`` saying why."""

    kind: str | None
    source: str  # dsn, arf, flufl
    recipients: list[str] = field(default_factory=list)  # the addresses the report names, lower-case
    status: str | None = None
    diagnostic: str | None = None
    ignored: str | None = None


def ignored(why: str, source: str = "mail") -> Report:
    return Report(None, source, ignored=why)


def read_bytes(raw: bytes) -> Message:
    """The message as the ``email`` package reads it (compat32, as flufl.bounce expects)."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def kind_of_status(status: str | None) -> str:
    """Hard or soft, from an enhanced status code (RFC 3463)."""
    found = STATUS.search(status or "")
    if found is None:  # a failure that does not say how: never enough to give an address up
        return ReportKind.SOFT
    klass, subject, detail = (int(part) for part in found.groups())
    if klass != 5 or (subject, detail) in SOFT_ANYWAY or (subject, None) in SOFT_ANYWAY:
        return ReportKind.SOFT
    return ReportKind.HARD


def _text(value) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text[:1000] or None


def _address(value) -> str | None:
    """``rfc822; Someone@Example.org`` -> ``someone@example.org``."""
    if not value:
        return None
    text = str(value).partition(";")[2] if ";" in str(value) else str(value)
    address = email.utils.parseaddr(text.strip())[1]
    return address.lower() if "@" in address else None


def _part(message: Message, content_type: str) -> Message | None:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload
    if isinstance(payload, str):  # an unusual parse: read the fields ourselves
        return [HeaderParser().parsestr(block + "\n") for block in re.split(r"\r?\n\r?\n", payload) if block.strip()]
    return []


def delivery_status(message: Message) -> Report | None:
    """An RFC 3464 report: the first recipient it reports failed (our messages have one)."""
    part = _part(message, "message/delivery-status")
    if part is None:
        return None
    blocks = _blocks(part)[1:]  # the first block is about the message, the rest one per recipient
    actions = []
    for block in blocks:
        action = (block.get("Action") or "").strip().lower()
        actions.append(action)
        if action != "failed":
            continue
        status = _text(block.get("Status"))
        recipients = [a for a in (_address(block.get("Original-Recipient")), _address(block.get("Final-Recipient")))
                      if a]
        return Report(kind_of_status(status), "dsn", recipients, (STATUS.search(status or "") or [status])[0],
                      _text(block.get("Diagnostic-Code")))
    return ignored(f"a delivery status report with no failure ({', '.join(actions) or 'no recipients'})", "dsn")


def feedback_report(message: Message) -> Report | None:
    """An ARF complaint (RFC 5965): the family marked the message as spam."""
    part = _part(message, "message/feedback-report")
    if part is None:
        return None
    blocks = _blocks(part)
    fields = blocks[0] if blocks else Message()
    kind = (fields.get("Feedback-Type") or "").strip().lower()
    if kind in NOT_COMPLAINTS or not kind:
        return ignored(f"a feedback report of type {kind or 'none'}", "arf")
    recipients = [a for a in (_address(fields.get("Original-Rcpt-To")),) if a]
    original = _part(message, "message/rfc822") or _part(message, "text/rfc822-headers")
    if original is not None and not recipients:
        inner = original.get_payload()
        inner = inner[0] if isinstance(inner, list) and inner else original
        to = _address(inner.get("To")) if isinstance(inner, Message) else None
        if to:
            recipients.append(to)
    return Report(ReportKind.COMPLAINT, "arf", recipients, None, f"complaint ({kind})")


def auto_reply(message: Message) -> str | None:
    """Why the message is an out-of-office or other automatic answer (the usual headers and
    subjects), or None. ``Auto-Submitted: auto-replied`` alone does not say it: bounces carry it too."""
    if message.get("X-Autoreply") or message.get("X-Autorespond"):
        return "an automatic reply"
    if (message.get("Precedence") or "").strip().lower() == "auto_reply":
        return "an automatic reply"
    if AUTO_REPLY_SUBJECT.match(str(message.get("Subject") or "")):
        return "an out-of-office reply"
    return None


def other_bounce(message: Message) -> Report | None:
    """The many bounces that are not RFC 3464 (Exim, qmail, old Exchange …), read by flufl.bounce."""
    try:
        temporary, permanent = all_failures(message)
    except Exception as exc:  # a detector choking on an odd message: nothing to act on
        log.info("bounce detectors could not read a message (%s: %s)", type(exc).__name__, exc)
        return None
    if not temporary and not permanent:
        return None
    kind = ReportKind.HARD if permanent else ReportKind.SOFT
    addresses = sorted(a.decode("utf-8", "replace").lower() for a in (permanent or temporary))
    status = STATUS.search(_body_text(message))
    return Report(kind, "flufl", addresses, status[0] if status else None, _text(message.get("Subject")))


def _body_text(message: Message, limit: int = 20_000) -> str:
    """The message's plain text parts, for a status code a non-standard bounce quotes."""
    texts = []
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True) or b""
            texts.append(payload[:limit].decode("utf-8", "replace"))
    return "\n".join(texts)


def read(message: Message) -> Report:
    """What the message reports. Never raises for anything a message can hold."""
    content_type = message.get_content_type()
    report_type = (message.get_param("report-type") or "").lower() if content_type == "multipart/report" else ""
    if report_type == "feedback-report" or _part(message, "message/feedback-report") is not None:
        return feedback_report(message)
    if report_type == "delivery-status" or _part(message, "message/delivery-status") is not None:
        found = delivery_status(message)
        if found is not None:
            return found
    why = auto_reply(message)
    if why:
        return ignored(why)
    found = other_bounce(message)
    if found is not None:
        return found
    if (message.get("Auto-Submitted") or "").strip().lower().startswith("auto-replied"):
        return ignored("an automatic reply")
    return ignored("not a bounce or complaint")
