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
import atexit
import logging
import os
import re
import select
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable

import idna
from flask import current_app
from flask_mail import Message, email_dispatched

from . import ratelimit

REFUSED, DEFERRED, HELD, THROTTLED, OUTAGE = "refused", "deferred", "held", "throttled", "outage"

ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
QUOTA = re.compile(r"quota|sending limit|daily (?:user )?(?:sending )?limit", re.IGNORECASE)
NON_ASCII_REFUSED = "not sent: this mail server cannot take non-ASCII addresses"
log = logging.getLogger(__name__)

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
    if isinstance(exc, ssl.SSLCertVerificationError):  # ours to fix (MAIL_TLS_CA_FILE), not an outage
        return SendError(HELD, f"the mail server's certificate was not accepted: {exc.verify_message or exc}")
    if isinstance(exc, (OSError, socket.timeout, smtplib.SMTPException)):
        return SendError(OUTAGE, f"{type(exc).__name__}: {exc}")
    raise exc


def _by_code(code: int, text, stage: str) -> SendError:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return SendError(verdict(code, text, stage), f"{code} {text}".strip())


LEADING_DOT = re.compile(rb"(?m)^\.")


def _content(data: bytes) -> bytes:
    """The message as DATA carries it: leading dots doubled, ended by a lone dot."""
    return LEADING_DOT.sub(b"..", data) + (b"" if data.endswith(b"\r\n") else b"\r\n") + b".\r\n"


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
        host.send(_content(data))
        reply = host.getreply()
        if reply[0] != 250:
            raise smtplib.SMTPDataError(*reply)
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused):
        try:  # as sendmail does: the connection stays usable for the next recipient
            host.rset()
        except smtplib.SMTPServerDisconnected:
            pass
        raise


class Connection:
    """One open SMTP connection of the pool and the slot of the shared cap it holds."""

    def __init__(self, host: smtplib.SMTP, slot: str):
        self.host = host
        self.slot = slot
        self.last_used = time.monotonic()
        self.unsettled = False  # an exchange began and did not end cleanly: RSET before reuse


def tls_context(config) -> ssl.SSLContext:
    """Certificates are checked against the system's CAs (or ``MAIL_TLS_CA_FILE``) unless
    ``MAIL_TLS_VERIFY`` is false."""
    context = ssl.create_default_context(cafile=config["MAIL_TLS_CA_FILE"])
    if not config["MAIL_TLS_VERIFY"]:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _stale(host: smtplib.SMTP) -> bool:
    """The server said something (a 421 before closing) or closed the connection while it sat idle."""
    sock = host.sock
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class SmtpPool:
    """The SMTP connections of one consumer process, kept open across batches: a connection
    set up once (greeting, EHLO, STARTTLS, AUTH) serves batch after batch. Each open connection
    holds a slot of ``MAIL_MAX_CONNECTIONS`` (shared by every consumer, see ``ratelimit``);
    one unused for ``MAIL_IDLE_TIMEOUT`` is closed and its slot given back."""

    WAIT = 0.1  # seconds between looks for a free slot

    def __init__(self, mail, config, slots: ratelimit.ConnectionSlots):
        self.mail = mail
        self.timeout = config["MAIL_TIMEOUT"]
        self.idle_timeout = config["MAIL_IDLE_TIMEOUT"]
        self.context = tls_context(config) if mail.use_ssl or mail.use_tls else None
        self.slots = slots
        self.lock = threading.Condition()
        self.idle: list[Connection] = []
        self.open: set[Connection] = set()
        self.keeper: threading.Thread | None = None

    def checkout(self, should_stop=lambda: False) -> Connection | None:
        """A connection ready to send on: an idle one (checked), else a new one once a slot of the
        cap is free; None if ``should_stop`` says to give up waiting. Raises what opening raises."""
        while True:
            with self.lock:
                connection = self.idle.pop() if self.idle else None
            if connection is not None:
                if self.usable(connection):
                    return connection
                self.discard(connection)
                continue
            slot = self.slots.try_take()
            if slot is not None:
                return self._open(slot)
            if should_stop():
                return None
            with self.lock:
                self.lock.wait(self.WAIT)

    def usable(self, connection: Connection) -> bool:
        idle = time.monotonic() - connection.last_used
        if idle > self.idle_timeout or _stale(connection.host):
            return False
        if idle > IDLE_CHECK:
            try:
                connection.host.noop()
            except (smtplib.SMTPException, OSError):
                return False
            connection.last_used = time.monotonic()
        return True

    def _open(self, slot: str) -> Connection:
        try:
            host = self._connect()
        except BaseException:
            self.slots.give_back(slot)
            raise
        connection = Connection(host, slot)
        with self.lock:
            self.open.add(connection)
            if self.keeper is None:
                self.keeper = threading.Thread(target=self._keep, daemon=True, name="smtp-pool")
                self.keeper.start()
        return connection

    def _connect(self) -> smtplib.SMTP:
        mail = self.mail
        if mail.use_ssl:
            host = smtplib.SMTP_SSL(mail.server, mail.port, timeout=self.timeout, context=self.context)
        else:
            host = smtplib.SMTP(mail.server, mail.port, timeout=self.timeout)
        try:
            host.set_debuglevel(int(mail.debug))
            if mail.use_tls:
                host.starttls(context=self.context)
            if mail.username and mail.password:
                host.login(mail.username, mail.password)
            host.ehlo_or_helo_if_needed()
        except BaseException:
            host.close()
            raise
        return host

    def checkin(self, connection: Connection) -> None:
        """Back into the pool once a batch is done with it (after RSET if an exchange was cut short)."""
        if connection.unsettled:
            try:
                connection.host.rset()
                connection.unsettled = False
            except (smtplib.SMTPException, OSError):
                pass
        if connection.unsettled or connection.host.sock is None:
            self.discard(connection)
            return
        connection.last_used = time.monotonic()
        with self.lock:
            self.idle.append(connection)
            self.lock.notify()

    def discard(self, connection: Connection, quit: bool = False) -> None:
        with self.lock:
            self.open.discard(connection)
            if connection in self.idle:
                self.idle.remove(connection)
            self.lock.notify()
        try:
            if quit:
                connection.host.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            connection.host.close()
            self.slots.give_back(connection.slot)

    def _keep(self) -> None:
        """Close connections idle for MAIL_IDLE_TIMEOUT; renew the slots of the open ones."""
        renewed = time.monotonic()
        while True:
            time.sleep(min(1.0, max(self.idle_timeout / 2, 0.05)))
            now = time.monotonic()
            with self.lock:
                expired = [c for c in self.idle if now - c.last_used > self.idle_timeout]
                held = list(self.open)
            for connection in expired:
                self.discard(connection, quit=True)
            if now - renewed >= ratelimit.SLOT_RENEW:
                renewed = now
                for connection in held:
                    try:
                        kept = self.slots.renew(connection.slot)
                    except Exception as exc:  # the lease may run out; the connection goes on
                        log.warning("connection cap: could not renew a slot (%s)", exc)
                        continue
                    if not kept:
                        log.warning("connection cap: a slot ran out while its connection was open")

    def close_idle(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for connection in idle:
            self.discard(connection, quit=True)


_pools: dict[tuple, SmtpPool] = {}
_pools_lock = threading.Lock()


def pool_for(mail, config) -> SmtpPool:
    """This process's pool for the configured server (a new one after a fork)."""
    key = (os.getpid(), mail.server, mail.port, mail.use_ssl, mail.use_tls, mail.username, mail.password,
           config["MAIL_TIMEOUT"], config["MAIL_IDLE_TIMEOUT"], config["MAIL_TLS_VERIFY"],
           config["MAIL_TLS_CA_FILE"], config["MAIL_MAX_CONNECTIONS"], config.get("REDIS_URL"),
           config["HUEY_NAME"], config["DATA_DIR"])
    with _pools_lock:
        if key not in _pools:
            _pools[key] = SmtpPool(mail, config, ratelimit.slots_for(config))
        return _pools[key]


@atexit.register
def close_pools() -> None:
    """QUIT every idle connection and give its slot back (a stopping consumer)."""
    with _pools_lock:
        pools = [pool for key, pool in _pools.items() if key[0] == os.getpid()]
    for pool in pools:
        pool.close_idle()


class Stopped(Exception):
    """The worker was asked to stop while it waited for a free connection."""


class _Suppressed:
    host = None  # sending suppressed (testing), as Flask-Mail's connection shows it


class SmtpSession:
    """A connection from this process's pool for one batch: ``send`` raises ``SendError`` and keeps
    the connection usable after a refused recipient. A connection the server closed (after a 421,
    or while it sat idle at a slow rate) is replaced for the next message. Leaving the ``with``
    block hands the connection back to the pool, open."""

    def __init__(self, should_stop=lambda: False):
        self.connection = None
        self.pool: SmtpPool | None = None
        self.should_stop = should_stop

    def __enter__(self) -> "SmtpSession":
        mail = current_app.extensions["mail"]
        if mail.suppress:
            self.connection = _Suppressed()
            return self
        self.pool = pool_for(mail, current_app.config)
        self._open()
        return self

    def _open(self) -> None:
        try:
            self.connection = self.pool.checkout(self.should_stop)
        except Exception as exc:  # refused, unreachable, TLS or login failure
            self.connection = None
            raise classify(exc) from exc
        if self.connection is None:
            raise Stopped()

    def _close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            self.pool.discard(connection)

    def _ready(self) -> smtplib.SMTP:
        """The SMTP session to send on: replaced when closed, checked with NOOP after idling."""
        if self.connection is not None and not self.pool.usable(self.connection):
            self._close()
        if self.connection is None:
            self._open()
        return self.connection.host

    def send(self, outgoing: Outgoing) -> None:
        if self.pool is None:
            email_dispatched.send(current_app._get_current_object(), message=outgoing.as_message())
            return
        host = self._ready()
        connection = self.connection
        connection.unsettled = True
        try:
            smtputf8 = host.has_extn("smtputf8")
            to = envelope_address(outgoing.to, smtputf8)
            utf8 = not (outgoing.sender + to).isascii()
            if host.has_extn("pipelining"):
                _pipelined(host, outgoing.sender, to, outgoing.data, smtputf8=utf8)
            else:
                host.sendmail(outgoing.sender, [to], outgoing.data, mail_options=["SMTPUTF8"] if utf8 else [])
        except Exception as exc:
            error = classify(exc)
            if error.kind == OUTAGE or (error.kind == THROTTLED and error.reply.startswith("421")):
                self._close()  # the server is closing this connection (or has); the next message opens another
            elif not isinstance(exc, SendError):
                connection.unsettled = False  # smtplib sent RSET after the refusal
            raise error from exc
        else:
            connection.unsettled = False
        finally:
            connection.last_used = time.monotonic()

    # -- pipelining across messages (RFC 2920): one round trip a message in steady state --

    pending = None  # (key, content) of the message whose DATA got 354 and whose content waits

    def submit(self, outgoing: Outgoing, key) -> list:
        """Send ``outgoing``: the waiting content of the message before it (if any) and this
        message's MAIL, RCPT and DATA go in one write. Its content waits for the next ``submit``
        (or ``flush``). Returns ``[(key, SendError or None), ...]`` for every message whose outcome
        is now known, in the order they were sent; each reply is matched to its message."""
        if self.pool is None:
            self.send(outgoing)
            return [(key, None)]
        if self.pending is None:
            host = self._ready()
        else:
            host = self.connection.host
        try:
            to = envelope_address(outgoing.to, host.has_extn("smtputf8"))
        except SendError as error:
            return [*self.flush(), (key, error)]
        if not host.has_extn("pipelining"):
            results = self.flush()
            try:
                self.send(outgoing)
                return [*results, (key, None)]
            except SendError as error:
                return [*results, (key, error)]
        option = " SMTPUTF8" if not (outgoing.sender + to).isascii() else ""
        envelope = f"MAIL FROM:<{one_line(outgoing.sender)}>{option}\r\nRCPT TO:<{to}>\r\nDATA\r\n".encode("utf-8")
        before, self.pending = self.pending, None
        results = []
        connection = self.connection
        connection.unsettled = True
        try:
            host.send((before[1] if before else b"") + envelope)
            if before is not None:
                reply = host.getreply()
                error = None if reply[0] == 250 else _by_code(reply[0], reply[1], "data")
                results.append((before[0], error))
                before = None
                if error is not None and reply[0] == 421:
                    self._close()  # the server is closing: this message was not sent either
                    return [*results, (key, error)]
            replies = host.getreply(), host.getreply(), host.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            error = classify(exc)
            self._close()
            return [*results, *([(before[0], error)] if before else []), (key, error)]
        finally:
            connection.last_used = time.monotonic()
        (mail_code, mail_text), (rcpt_code, rcpt_text), (data_code, data_text) = replies
        refused = mail_code != 250 or rcpt_code not in (250, 251)
        if refused and data_code == 354:
            self._close()  # content it should have refused: ending it could deliver an empty message
            return [*results, (key, SendError(OUTAGE, f"the server accepted DATA after refusing {replies[:2]}"))]
        if not refused and data_code == 354:
            self.pending = (key, _content(outgoing.data))
            return results
        if mail_code != 250:
            error = _by_code(mail_code, mail_text, "mail")
        elif refused:
            error = _by_code(rcpt_code, rcpt_text, "rcpt")
        else:
            error = _by_code(data_code, data_text, "data")
        self._reset(error)
        return [*results, (key, error)]

    def _reset(self, error: SendError) -> None:
        """After a refusal: RSET keeps the connection for the next message (closed after a 421)."""
        if error.kind == THROTTLED and error.reply.startswith("421"):
            self._close()
            return
        try:
            self.connection.host.rset()
            self.connection.unsettled = False
        except (smtplib.SMTPException, OSError):
            self._close()

    def flush(self) -> list:
        """Send the waiting content and read its reply: ``[(key, SendError or None)]`` or ``[]``."""
        if self.pending is None:
            return []
        (key, content), self.pending = self.pending, None
        connection = self.connection
        try:
            connection.host.send(content)
            code, text = connection.host.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            self._close()
            return [(key, classify(exc))]
        finally:
            connection.last_used = time.monotonic()
        connection.unsettled = False
        if code == 250:
            return [(key, None)]
        error = _by_code(code, text, "data")
        if error.kind == THROTTLED and code == 421:
            self._close()
        return [(key, error)]

    def __exit__(self, *exc_info) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and self.pool is not None:
            if self.pending is not None:  # content never sent: the message was not delivered
                self.pending = None
                self.pool.discard(connection)
            else:
                self.pool.checkin(connection)
