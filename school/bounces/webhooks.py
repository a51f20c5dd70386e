"""Reports that providers send by HTTP: Amazon SES (through an SNS topic) and Postmark, turned into
``intake.receive_report`` calls. The caller has checked the shared secret."""
import json
import logging
import re

from . import parse, verp
from .intake import Outcome, ignore, receive_report
from .models import ReportKind

log = logging.getLogger(__name__)

OUR_MESSAGE_ID = re.compile(r"^\s*<job\d+\.n(\d+)@[^>]+>\s*$")
POSTMARK_HARD = {"HardBounce", "BadEmailAddress"}
POSTMARK_SOFT = {"SoftBounce", "Transient", "DnsError"}


class WebhookError(ValueError):
    """The body is not what the provider sends; the view answers 400."""


def _row_of(mail: dict) -> int | None:
    """The ledger row an SES ``mail`` object is about: the tag of the envelope sender it was sent
    with (``source``), else our Message-ID."""
    found = verp.read_address(str(mail.get("source") or ""))
    if found is not None:
        return found
    headers = mail.get("commonHeaders") if isinstance(mail.get("commonHeaders"), dict) else {}
    message_id = str(headers.get("messageId") or "")
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
            message_id = message_id or str(header.get("value") or "")
    matched = OUR_MESSAGE_ID.match(message_id)
    return int(matched[1]) if matched else None


def _listed(value) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def ses(body: dict) -> list[Outcome]:
    """An SNS message (Notification, SubscriptionConfirmation) or, with raw message delivery, the
    SES notification itself: one outcome per recipient it reports."""
    sns_type = body.get("Type")
    if sns_type in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        # Confirming means visiting a URL on Amazon's side: an operator's step, never done from here.
        log.warning("SES webhook: SNS %s for topic %s; to confirm, open %s", sns_type, body.get("TopicArn"),
                    body.get("SubscribeURL"))
        return [ignore(f"an SNS {sns_type}")]
    if sns_type == "Notification":
        try:
            message = json.loads(body.get("Message") or "")
        except (TypeError, ValueError) as exc:
            raise WebhookError("the SNS Message is not JSON") from exc
    elif "notificationType" in body or "eventType" in body:
        message = body
    else:
        raise WebhookError("not an SNS message or an SES notification")
    if not isinstance(message, dict):
        raise WebhookError("the SES notification is not a JSON object")
    kind = message.get("notificationType") or message.get("eventType")
    mail = message.get("mail") if isinstance(message.get("mail"), dict) else {}
    row = _row_of(mail)
    if kind == "Bounce":
        bounce = message.get("bounce") if isinstance(message.get("bounce"), dict) else {}
        hard = bounce.get("bounceType") == "Permanent"
        outcomes = []
        for recipient in _listed(bounce.get("bouncedRecipients")):
            status = str(recipient.get("status") or "") or None
            report_kind = ReportKind.HARD if hard else ReportKind.SOFT
            diagnostic = recipient.get("diagnosticCode") or f"{bounce.get('bounceType')}/{bounce.get('bounceSubType')}"
            outcomes.append(receive_report(report_kind, str(recipient.get("emailAddress") or ""), status,
                                           str(diagnostic), "ses", row))
        return outcomes or [ignore("an SES bounce with no recipients")]
    if kind == "Complaint":
        complaint = message.get("complaint") if isinstance(message.get("complaint"), dict) else {}
        feedback = complaint.get("complaintFeedbackType") or "abuse"
        if feedback == "not-spam":
            return [ignore("an SES not-spam report")]
        outcomes = [receive_report(ReportKind.COMPLAINT, str(r.get("emailAddress") or ""), None,
                                   f"complaint ({feedback})", "ses", row)
                    for r in _listed(complaint.get("complainedRecipients"))]
        return outcomes or [ignore("an SES complaint with no recipients")]
    return [ignore(f"an SES {kind or 'unknown'} notification")]


def postmark(body: dict) -> list[Outcome]:
    """A Postmark Bounce or SpamComplaint webhook."""
    record_type, kind = body.get("RecordType"), body.get("Type")
    if record_type not in ("Bounce", "SpamComplaint") and "TypeCode" not in body:
        return [ignore(f"a Postmark {record_type or 'unknown'} record")]
    email = str(body.get("Email") or "")
    details = str(body.get("Details") or body.get("Description") or "") or None
    status = parse.STATUS.search(details or "")
    status = status[0] if status else None
    if record_type == "SpamComplaint" or kind == "SpamComplaint":
        return [receive_report(ReportKind.COMPLAINT, email, None, "complaint (spam)", "postmark")]
    if kind in POSTMARK_HARD:
        return [receive_report(ReportKind.HARD, email, status, f"{kind}: {details}", "postmark")]
    if kind in POSTMARK_SOFT:
        return [receive_report(ReportKind.SOFT, email, status, f"{kind}: {details}", "postmark")]
    return [ignore(f"a Postmark {kind or 'untyped'} bounce")]


PROVIDERS = {"ses": ses, "postmark": postmark}
