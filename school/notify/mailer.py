"""Rendering and sending one notification email over a connection the batch holds open."""
import smtplib
import socket
from dataclasses import dataclass
from email.utils import parseaddr

from flask import current_app, render_template
from flask_mail import Message

from ..extensions import mail

TEMPORARY, PERMANENT, CONNECTION = "temporary", "permanent", "connection"


@dataclass
class SendError(Exception):
    """Why a message did not go: ``kind`` says whether to retry, ``reply`` is what the server said."""

    kind: str
    reply: str

    def __str__(self) -> str:
        return self.reply


def one_line(value: str) -> str:
    """Header values never carry line breaks, whatever the data holds."""
    return " ".join((value or "").split())


def sender_domain() -> str:
    address = parseaddr(current_app.config["MAIL_DEFAULT_SENDER"])[1]
    return address.rpartition("@")[2] or "localhost"


def message_id(job_id: int, notification_id: int) -> str:
    """The same for every (re)send of this recipient of this job, so receivers can drop duplicates."""
    return f"<job{job_id}.n{notification_id}@{sender_domain()}>"


def build_message(event, job_id: int, recipient) -> Message:
    """``recipient`` has id, email, name and children (comma-separated names)."""
    children = [c for c in (recipient.children or "").split(", ") if c]
    link = f"{current_app.config['PUBLIC_URL']}/events/{event.id}"
    context = {"event": event, "name": recipient.name, "children": children, "link": link}
    subject = ("Urgent: " if event.priority == "urgent" else "") + one_line(event.title)
    message = Message(
        subject=subject,
        recipients=[(one_line(recipient.name), recipient.email)],
        body=render_template("email/event.txt", **context),
        html=render_template("email/event.html", **context),
        extra_headers={"Auto-Submitted": "auto-generated"},
    )
    message.msgId = message_id(job_id, recipient.id)
    return message


def classify(exc: Exception) -> SendError:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return _by_code(code, text)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SendError(CONNECTION, f"connection lost: {exc}")
    if isinstance(exc, smtplib.SMTPResponseException):
        return _by_code(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, (OSError, socket.timeout, smtplib.SMTPException)):
        return SendError(CONNECTION, f"{type(exc).__name__}: {exc}")
    raise exc


def _by_code(code: int, text) -> SendError:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    reply = f"{code} {text}".strip()
    if code == 421:  # the server is closing the connection
        return SendError(CONNECTION, reply)
    return SendError(TEMPORARY if 400 <= code < 500 else PERMANENT, reply)


class Outbox:
    """One SMTP connection for a batch: ``send`` raises ``SendError`` and keeps the connection usable
    after a refused recipient; after a ``CONNECTION`` error the batch stops."""

    def __init__(self):
        self.connection = None

    def __enter__(self) -> "Outbox":
        try:
            self.connection = mail.connect().__enter__()
            if self.connection.host is not None and self.connection.host.sock is not None:
                self.connection.host.sock.settimeout(current_app.config["MAIL_TIMEOUT"])
        except Exception as exc:  # refused, unreachable, TLS or login failure
            raise classify(exc) from exc
        return self

    def send(self, message: Message) -> None:
        try:
            self.connection.send(message)
        except Exception as exc:
            raise classify(exc) from exc

    def __exit__(self, *exc_info) -> None:
        try:
            self.connection.__exit__(*exc_info)
        except Exception:  # QUIT on a dead connection; the messages are already accounted for
            pass
