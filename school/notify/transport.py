"""The SMTP side of sending: a connection a batch holds open (Flask-Mail's, opened with a timeout),
one message at a time over it, and what the server's reply means.

A reply is read by its enhanced status code (RFC 3463) where it has one, not only by its first
digit, and sorted into whose problem it is:

- the recipient's (``REFUSED``: 5.1.x unknown address, 5.2.x mailbox, 5.3.x, 5.6.x content, or any
  other 5xx about the recipient; ``DEFERRED``: 4.2.2 mailbox full and other 4xx about the recipient);
- ours with this server (``HELD``: 5.4.5 and 5.7.x quota, authorisation and policy, any "quota"
  reply, a refused sender): nobody is failed, the job waits and tries again later;
- the server asking us to slow down (``THROTTLED``: 421, 454, 4.7.x);
- no answer at all (``OUTAGE``: the connection refused, dropped or timed out).
"""
import re
import smtplib
import socket
import time
from dataclasses import dataclass
from typing import Callable

import idna
from flask import current_app
from flask_mail import Connection, Message, email_dispatched

REFUSED, DEFERRED, HELD, THROTTLED, OUTAGE = "refused", "deferred", "held", "throttled", "outage"

ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
QUOTA = re.compile(r"quota|sending limit|daily (?:user )?(?:sending )?limit", re.IGNORECASE)
NON_ASCII_REFUSED = "not sent: this mail server cannot take non-ASCII addresses"
IDLE_CHECK = 2.0  # seconds a connection may sit unused before it is checked with NOOP


@dataclass
class SendError(Exception):
    """Why a message did not go: ``kind`` says whose problem it is, ``reply`` is what the server said."""

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


def ascii_domain(address: str) -> str:
    """The address with its domain as IDNA A-labels (``müller.example`` -> ``xn--mller-kva.example``).

    ``idna.IDNAError`` (a ``UnicodeError``) when the domain cannot be written so.
    """
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    return f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"


def envelope_address(address: str, smtputf8: bool) -> str:
    """The address as the envelope carries it; ``SendError(REFUSED)`` when this server cannot take it."""
    try:
        address = ascii_domain(one_line(address))
    except UnicodeError as exc:
        raise SendError(REFUSED, f"not sent: the address's domain is not valid ({exc})") from exc
    if not address.isascii() and not smtputf8:
        raise SendError(REFUSED, NON_ASCII_REFUSED)
    return address


def verdict(code: int, text: str, stage: str) -> str:
    """Whose problem a reply is (see the module's docstring). ``stage``: mail, rcpt, data or connect."""
    enhanced = ENHANCED.match(text or "")
    klass, subject = (int(enhanced[1]), int(enhanced[2])) if enhanced else (code // 100, None)
    if QUOTA.search(text or ""):
        return HELD
    if code in (421, 454) or (klass == 4 and subject == 7):
        return THROTTLED
    if klass == 5 and (subject == 7 or (enhanced and (subject, int(enhanced[3])) == (4, 5))):
        return HELD
    if stage in ("mail", "connect"):
        return HELD if code >= 500 else THROTTLED
    return REFUSED if code >= 500 else DEFERRED


def classify(exc: Exception) -> SendError:
    if isinstance(exc, SendError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return _by_code(code, text, "rcpt")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SendError(OUTAGE, f"connection lost: {exc}")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return _by_code(exc.smtp_code, exc.smtp_error, "mail")
    if isinstance(exc, smtplib.SMTPDataError):
        return _by_code(exc.smtp_code, exc.smtp_error, "data")
    if isinstance(exc, smtplib.SMTPResponseException):  # greeting, STARTTLS, AUTH
        return _by_code(exc.smtp_code, exc.smtp_error, "connect")
    if isinstance(exc, (OSError, socket.timeout, smtplib.SMTPException)):
        return SendError(OUTAGE, f"{type(exc).__name__}: {exc}")
    raise exc


def _by_code(code: int, text, stage: str) -> SendError:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return SendError(verdict(code, text, stage), f"{code} {text}".strip())


LEADING_DOT = re.compile(rb"(?m)^\.")


def _pipelined(host: smtplib.SMTP, sender: str, to: str, data: bytes, smtputf8: bool = False) -> None:
    """Send one message in two round trips instead of four: MAIL, RCPT and DATA written at once,
    then the content (RFC 2920 PIPELINING). Raises what ``SMTP.sendmail`` raises for the same
    replies, so ``classify`` reads them alike."""
    option = " SMTPUTF8" if smtputf8 else ""
    host.send(f"MAIL FROM:<{one_line(sender)}>{option}\r\nRCPT TO:<{to}>\r\nDATA\r\n".encode("utf-8"))
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
    after a refused recipient. A connection the server closed (after a 421, or while it sat idle
    at a slow rate) is opened again for the next message."""

    def __init__(self):
        self.connection = None
        self.last_used = 0.0

    def __enter__(self) -> "SmtpSession":
        self._open()
        return self

    def _open(self) -> None:
        try:
            state = current_app.extensions["mail"]
            self.connection = TimedConnection(state, current_app.config["MAIL_TIMEOUT"]).__enter__()
        except Exception as exc:  # refused, unreachable, TLS or login failure
            self.connection = None
            raise classify(exc) from exc
        self.last_used = time.monotonic()

    def _close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and connection.host is not None:
            try:
                connection.host.close()
            except Exception:  # nosec B110  # already gone: closing it is all that was wanted
                pass

    def _ready(self):
        """The SMTP session to send on: reopened when closed, checked with NOOP after idling."""
        if self.connection is not None and self.connection.host is not None:
            idle = time.monotonic() - self.last_used > IDLE_CHECK
            try:
                if idle:
                    self.connection.host.noop()
            except (smtplib.SMTPException, OSError):
                self._close()
            else:
                if self.connection.host.sock is not None:
                    return self.connection.host
                self._close()
        if self.connection is None:
            self._open()
        return self.connection.host

    def send(self, outgoing: Outgoing) -> None:
        if self.connection is not None and self.connection.host is None:
            # sending suppressed (testing): record it as Flask-Mail does
            email_dispatched.send(current_app._get_current_object(), message=outgoing.as_message())
            return
        host = self._ready()
        try:
            # The Flask-Mail connection's SMTP session, given bytes already built (see Letter).
            host.ehlo_or_helo_if_needed()
            smtputf8 = host.has_extn("smtputf8")
            to = envelope_address(outgoing.to, smtputf8)
            utf8 = not (outgoing.sender + to).isascii()
            if host.has_extn("pipelining"):
                _pipelined(host, outgoing.sender, to, outgoing.data, smtputf8=utf8)
            else:
                host.sendmail(outgoing.sender, [to], outgoing.data, mail_options=["SMTPUTF8"] if utf8 else [])
        except Exception as exc:
            error = classify(exc)
            if error.kind in (OUTAGE, THROTTLED) and error.reply.startswith("421"):
                self._close()  # the server is closing this connection; the next message opens another
            elif error.kind == OUTAGE:
                self._close()
            raise error from exc
        finally:
            self.last_used = time.monotonic()

    def __exit__(self, *exc_info) -> None:
        connection, self.connection = self.connection, None
        if connection is None:
            return
        try:
            connection.__exit__(*exc_info)
        except Exception:  # nosec B110  # QUIT on a dead connection; the messages are already accounted for
            pass
