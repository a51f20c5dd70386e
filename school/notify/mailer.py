"""Rendering and sending one notification email over a connection the batch holds open."""
import binascii
import re
import secrets
import smtplib
import socket
from dataclasses import dataclass
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr

from flask import current_app
from flask_mail import Connection, Message, email_dispatched
from markupsafe import escape


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


def message_id(job_id: int, notification_id: int, domain: str | None = None) -> str:
    """The same for every (re)send of this recipient of this job, so receivers can drop duplicates."""
    return f"<job{job_id}.n{notification_id}@{domain or sender_domain()}>"


MAX_LINE = 998  # octets per line that SMTP carries unencoded (RFC 5321)


def _header_text(value: str) -> str:
    """A header value as SMTP carries it: ASCII as is, anything else as RFC 2047 encoded words."""
    try:
        value.encode("ascii")
        return value
    except UnicodeEncodeError:
        return Header(value, "utf-8").encode(linesep="\r\n")


def _address(name: str, address: str) -> str:
    domain_part = address.rpartition("@")
    if domain_part[1] and not domain_part[2].isascii():
        address = domain_part[0] + "@" + domain_part[2].encode("idna").decode("ascii")
    return formataddr((one_line(name), one_line(address)), charset="utf-8")


def _part(content_type: str, text: str) -> bytes:
    """One text part: 7bit or 8bit when every line fits a line of SMTP, quoted-printable otherwise."""
    data = "\r\n".join(text.replace("\r\n", "\n").replace("\r", "\n").split("\n")).encode("utf-8")
    if any(len(line) > MAX_LINE for line in data.split(b"\r\n")):
        encoding = "quoted-printable"
        data = binascii.b2a_qp(data.replace(b"\r\n", b"\n"), istext=True).replace(b"\n", b"\r\n")
    else:
        encoding = "7bit" if data.isascii() else "8bit"
    return (f'Content-Type: {content_type}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n").encode("ascii") + data


# Stand-ins for the recipient's name and children while a template is rendered once per batch.
# Event text cannot contain control characters (it is refused), so these never occur in it.
NAME_MARK, CHILDREN_MARK = "\x00name\x00", "\x00children\x00"


def _children(recipient) -> list[str]:
    return [c for c in (recipient.children or "").split(", ") if c]


def _fill(shape: tuple[str, str], name: str, children: list[str]) -> tuple[str, str]:
    text, html = shape
    text = text.replace(NAME_MARK, name).replace(CHILDREN_MARK, ", ".join(children))
    html = html.replace(NAME_MARK, str(escape(name))).replace(
        CHILDREN_MARK, ", ".join(str(escape(child)) for child in children))
    return text, html


@dataclass
class Outgoing:
    """One rendered message and its envelope."""

    sender: str
    to: str
    data: bytes
    letter: "Letter"
    recipient: object


class Letter:
    """One event's notification, rendered for one recipient after another.

    What every recipient shares (subject, sender, dates, link, the templates) is worked out once
    per batch; each message is then two small template renders joined as bytes, a small fraction
    of what building it with the ``email`` package costs.
    """

    def __init__(self, event, job_id: int):
        config = current_app.config
        self.event = event
        self.job_id = job_id
        self.sender = config["MAIL_DEFAULT_SENDER"]
        self.envelope_from = parseaddr(self.sender)[1]
        self.domain = sender_domain()
        self.link = f"{config['PUBLIC_URL']}/events/{event.id}"
        self.subject = ("Urgent: " if event.priority == "urgent" else "") + one_line(event.title)
        env = current_app.jinja_env
        self.text_template = env.get_template("email/event.txt")
        self.html_template = env.get_template("email/event.html")
        self._shapes: dict[bool, tuple[str, str] | None] = {}
        sender_name, sender_address = parseaddr(self.sender)
        self.shared_headers = (
            f"From: {_address(sender_name, sender_address)}\r\n"
            f"Subject: {_header_text(self.subject)}\r\n"
            "Auto-Submitted: auto-generated\r\n"
            "MIME-Version: 1.0\r\n"
        )

    def context(self, recipient) -> dict:
        """``recipient`` has id, email, name and children (comma-separated names)."""
        return self._context(recipient.name, _children(recipient))

    def _context(self, name: str, children: list[str]) -> dict:
        return {"event": self.event, "name": name, "children": children, "link": self.link}

    def bodies(self, recipient) -> tuple[str, str]:
        """The text and HTML bodies for one recipient.

        Only the name and the children's names differ between recipients, so each template is
        rendered once per batch with markers in their place (once for recipients with children,
        once for those without), and each recipient's bodies are the markers replaced, escaped
        for HTML as the template would. A probe checks that replacing gives what rendering
        gives; if a template ever uses these values otherwise, every body is rendered in full.
        """
        children = _children(recipient)
        shape = self._shapes.get(bool(children))
        if shape is None and bool(children) not in self._shapes:
            shape = self._shapes[bool(children)] = self._shape(bool(children))
        if shape is None:
            context = self._context(recipient.name, children)
            return self.text_template.render(context), self.html_template.render(context)
        return _fill(shape, recipient.name, children)

    def _shape(self, with_children: bool) -> tuple[str, str] | None:
        context = self._context(NAME_MARK, [CHILDREN_MARK] if with_children else [])
        shape = self.text_template.render(context), self.html_template.render(context)
        probe_name, probe_children = "Zoë <O'Brien> & \"Co\"", ["Ben & <Bo>", "Al"] if with_children else []
        probe = self._context(probe_name, probe_children)
        rendered = self.text_template.render(probe), self.html_template.render(probe)
        return shape if _fill(shape, probe_name, probe_children) == rendered else None

    def message_id(self, recipient) -> str:
        return message_id(self.job_id, recipient.id, self.domain)

    def render(self, recipient) -> Outgoing:
        text, html = self.bodies(recipient)
        text, html = _part("text/plain", text), _part("text/html", html)
        boundary = "=_" + secrets.token_hex(16)
        while boundary.encode() in text or boundary.encode() in html:
            boundary = "=_" + secrets.token_hex(16)
        head = (
            self.shared_headers
            + f"To: {_address(recipient.name, recipient.email)}\r\n"
            + f"Date: {formatdate(usegmt=True)}\r\n"
            + f"Message-ID: {self.message_id(recipient)}\r\n"
            + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
        ).encode("ascii")
        delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
        data = (head + delimiter[2:] + text + delimiter + html + f"\r\n--{boundary}--\r\n".encode("ascii"))
        return Outgoing(self.envelope_from, recipient.email, data, self, recipient)

    def message(self, recipient) -> Message:
        """The same message as a Flask-Mail ``Message`` (what ``mail.record_messages`` shows)."""
        context = self.context(recipient)
        message = Message(
            subject=self.subject,
            sender=self.sender,
            recipients=[(one_line(recipient.name), recipient.email)],
            body=self.text_template.render(context),
            html=self.html_template.render(context),
            extra_headers={"Auto-Submitted": "auto-generated"},
        )
        message.msgId = self.message_id(recipient)
        return message


def build_message(event, job_id: int, recipient) -> Message:
    return Letter(event, job_id).message(recipient)


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


class Outbox:
    """One SMTP connection for a batch: ``send`` raises ``SendError`` and keeps the connection usable
    after a refused recipient; after a ``CONNECTION`` error the batch stops."""

    def __init__(self):
        self.connection = None

    def __enter__(self) -> "Outbox":
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
                email_dispatched.send(current_app._get_current_object(),
                                      message=outgoing.letter.message(outgoing.recipient))
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
        except Exception:  # nosec B110  # QUIT on a dead connection; the messages are already accounted for
            pass
