"""The SMTP side of sending: a connection a batch holds open (Flask-Mail's, opened with a timeout),
one message at a time over it, and what the server's reply means for the recipient."""
import re
import smtplib
import socket
from dataclasses import dataclass
from typing import Callable

from flask import current_app
from flask_mail import Connection, Message, email_dispatched

TEMPORARY, PERMANENT, CONNECTION = "temporary", "permanent", "connection"


@dataclass
class SendError(Exception):
    """Why a message did not go: ``kind`` says whether to retry, ``reply`` is what the server said."""

    kind: str
    reply: str

    def __str__(self) -> str:
        return self.reply


@dataclass
class Outgoing:
    """One message as it goes over the wire: its envelope and its bytes."""

    sender: str
    to: str
    data: bytes
    # The same message as a Flask-Mail ``Message``, for when sending is suppressed (testing).
    as_message: Callable[[], Message]


def one_line(value: str) -> str:
    """Header values and envelope addresses never carry line breaks, whatever the data holds."""
    return " ".join((value or "").split())


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


LEADING_DOT = re.compile(rb"(?m)^\.")


def _pipelined(host: smtplib.SMTP, sender: str, to: str, data: bytes) -> None:
    """Send one message in two round trips instead of four: MAIL, RCPT and DATA written at once,
    then the content (RFC 2920 PIPELINING). Raises what ``SMTP.sendmail`` raises for the same
    replies, so ``classify`` reads them alike."""
    host.send(f"MAIL FROM:<{one_line(sender)}>\r\nRCPT TO:<{one_line(to)}>\r\nDATA\r\n".encode("ascii"))
    mail_reply, rcpt_reply, data_reply = host.getreply(), host.getreply(), host.getreply()
    refused = mail_reply[0] != 250 or rcpt_reply[0] not in (250, 251)
    if refused and data_reply[0] == 354:
        # The server wants content it should have refused; ending it could deliver an empty message.
        host.close()
        raise smtplib.SMTPServerDisconnected(f"the server accepted DATA after refusing {mail_reply} {rcpt_reply}")
    try:
        if mail_reply[0] != 250:
            raise smtplib.SMTPSenderRefused(mail_reply[0], mail_reply[1], sender)
        if refused:
            raise smtplib.SMTPRecipientsRefused({to: rcpt_reply})
        if data_reply[0] != 354:
            raise smtplib.SMTPDataError(*data_reply)
        host.send(LEADING_DOT.sub(b"..", data) + (b"" if data.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        reply = host.getreply()
        if reply[0] != 250:
            raise smtplib.SMTPDataError(*reply)
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused):
        try:  # as sendmail does: the connection stays usable for the next recipient
            host.rset()
        except smtplib.SMTPServerDisconnected:
            pass
        raise


class TimedConnection(Connection):
    """Flask-Mail's connection, opened with ``MAIL_TIMEOUT``. Flask-Mail opens its SMTP session
    without a timeout, so a server that accepts the connection but never greets would hold the
    worker (and its batch) forever."""

    def __init__(self, state, timeout: float):
        super().__init__(state)
        self.timeout = timeout

    def configure_host(self) -> smtplib.SMTP:
        smtp_class = smtplib.SMTP_SSL if self.mail.use_ssl else smtplib.SMTP
        host = smtp_class(self.mail.server, self.mail.port, timeout=self.timeout)
        host.set_debuglevel(int(self.mail.debug))
        if self.mail.use_tls:
            host.starttls()
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host


class SmtpSession:
    """One SMTP connection for a batch: ``send`` raises ``SendError`` and keeps the connection usable
    after a refused recipient; after a ``CONNECTION`` error the batch stops."""

    def __init__(self):
        self.connection = None

    def __enter__(self) -> "SmtpSession":
        try:
            state = current_app.extensions["mail"]
            self.connection = TimedConnection(state, current_app.config["MAIL_TIMEOUT"]).__enter__()
        except Exception as exc:  # refused, unreachable, TLS or login failure
            raise classify(exc) from exc
        return self

    def send(self, outgoing: Outgoing) -> None:
        host = self.connection.host
        try:
            if host is None:  # sending suppressed (testing): record it as Flask-Mail does
                email_dispatched.send(current_app._get_current_object(), message=outgoing.as_message())
                return
            # The Flask-Mail connection's SMTP session, given bytes already built (see Letter).
            host.ehlo_or_helo_if_needed()
            if host.has_extn("pipelining") and (outgoing.sender + outgoing.to).isascii():
                _pipelined(host, outgoing.sender, outgoing.to, outgoing.data)
            else:
                host.sendmail(outgoing.sender, [outgoing.to], outgoing.data)
        except Exception as exc:
            raise classify(exc) from exc

    def __exit__(self, *exc_info) -> None:
        try:
            self.connection.__exit__(*exc_info)
        except Exception:  # QUIT on a dead connection; the messages are already accounted for
            pass
