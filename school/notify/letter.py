"""The notification email: one event's message, composed for one recipient after another."""
import binascii
import functools
import secrets
from datetime import datetime
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr

from flask import current_app
from flask_babel import force_locale, gettext
from flask_mail import Message
from markupsafe import escape

from ..bounces.verp import addresser
from ..events.calendar import ics, method
from ..events.translations import EventText
from ..family.tokens import signer
from ..i18n import bcp47, direction, moment, period, resolve
from .transport import Outgoing, ascii_domain, one_line


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
    """A header's address: the name as encoded words, the domain as A-labels. A non-ASCII local
    part stays UTF-8 (RFC 6532): only a server that offers SMTPUTF8 is ever sent such a message."""
    try:
        address = ascii_domain(address)
    except UnicodeError:
        pass  # the envelope refuses it for this recipient, with the reason
    name, address = one_line(name), one_line(address)
    if address.isascii() or not name:
        return formataddr((name, address), charset="utf-8") if address.isascii() else address
    # formataddr takes only ASCII addresses: quote or encode the name with it, then add the address.
    return formataddr((name, "_@_"), charset="utf-8").removesuffix("<_@_>") + f"<{address}>"


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


# Stand-ins for the recipient's name, children and personal link while a template is rendered once
# per batch. Event text cannot contain control characters (it is refused), so these never occur in it.
NAME_MARK, CHILDREN_MARK, LINK_MARK = "\x00name\x00", "\x00children\x00", "\x00link\x00"


def _children(recipient) -> list[str]:
    return [c for c in (recipient.children or "").split(", ") if c]


def _fill(shape: tuple[str, str], name: str, children: list[str], link: str) -> tuple[str, str]:
    text, html = shape
    text = text.replace(NAME_MARK, name).replace(CHILDREN_MARK, ", ".join(children)).replace(LINK_MARK, link)
    html = html.replace(NAME_MARK, str(escape(name))).replace(
        CHILDREN_MARK, ", ".join(str(escape(child)) for child in children)).replace(LINK_MARK, str(escape(link)))
    return text, html


def _when(value: str, locale: str) -> str:
    return moment(datetime.fromisoformat(value), locale)


def changes_read(changes: dict | None, locale: str) -> list[tuple[str, str, str]]:
    """What an update notice says changed, as (what, before, now) in the reader's language (call
    it under ``force_locale``): times as the reader writes them, an empty field as "(none)"."""
    labels = {"title": gettext("Title"), "starts_at": gettext("Starts"), "ends_at": gettext("Ends"),
              "location": gettext("Where"), "description": gettext("Details")}
    lines = []
    for name in ("title", "starts_at", "ends_at", "location", "description"):
        if name not in (changes or {}):
            continue
        before, after = changes[name]
        if name in ("starts_at", "ends_at"):
            before, after = _when(before, locale), _when(after, locale)
        elif name == "description":  # too long for a line: the new text is the email's own
            before, after = gettext("the earlier text"), gettext("the text below")
        lines.append((labels[name], before or gettext("(none)"), after or gettext("(none)")))
    return lines


class Version:
    """What every recipient who reads one language shares: the event in that language (staff's
    translation, or the original with a line saying so), its dates, subject, headers and calendar
    part, and the bodies' shapes. Worked out once per batch and language."""

    def __init__(self, letter: "Letter", locale: str):
        self.locale = locale
        self.lang, self.dir = bcp47(locale), direction(locale)
        self.shapes: dict[bool, tuple[str, str] | None] = {}
        with force_locale(locale):
            self.event = EventText(letter.event, locale)
            self.notice_line = self.event.notice_line()
            self.when = period(self.event.starts_at, self.event.ends_at, locale)
            urgent = letter.event.priority == "urgent"
            title = one_line(self.event.title)
            self.subject = gettext("Urgent: %(title)s", title=title) if urgent else title
            self.changes = changes_read(getattr(letter.event, "changes", None), locale)
            # A follow-up's calendar part is the event it is about as it stands now (same UID, its
            # SEQUENCE, CANCEL once canceled), so a calendar moves or removes the one entry it has.
            original = getattr(letter.event, "original", None) if getattr(letter.event, "original_id", None) else None
            about = EventText(original, locale) if original is not None else self.event
            about_note = about.notice_line()
        self.method = method(about)
        self.calendar = ics(about, letter.domain, note=about_note)
        self.headers = (
            letter.from_header
            + f"Subject: {_header_text(self.subject)}\r\n"
            + f"Content-Language: {self.lang}\r\n"
            + letter.shared_headers
        )


class Letter:
    """One event's notification, rendered for one recipient after another.

    What every recipient of a language shares (subject, dates, the calendar part, the templates) is
    worked out once per batch (see ``Version``); each message is then two small template renders
    joined as bytes, a small fraction of what building it with the ``email`` package costs.
    """

    def __init__(self, event, job_id: int):
        config = current_app.config
        self.event = event
        self.job_id = job_id
        self.sender = config["MAIL_DEFAULT_SENDER"]
        self.envelope_from = addresser()  # each recipient's own bounce address (VERP)
        self.domain = sender_domain()
        self.public_url = config["PUBLIC_URL"]
        self.school_language = config["SCHOOL_LANGUAGE"]
        self.sign = signer()
        env = current_app.jinja_env
        self.text_template = env.get_template("email/event.txt")
        self.html_template = env.get_template("email/event.html")
        self._versions: dict[str | None, Version] = {}
        sender_name, sender_address = parseaddr(self.sender)
        self.from_header = f"From: {_address(sender_name, sender_address)}\r\n"
        self.shared_headers = "Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
        # Bulk mail as providers want it (RFC 2919, RFC 8058); urgent notices carry no way out.
        self.list_headers = {} if event.priority == "urgent" else {
            "List-Id": f"{_header_text(one_line(sender_name or 'School') + ' notices')} <notices.{self.domain}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        self.shared_headers += "".join(f"{name}: {value}\r\n" for name, value in self.list_headers.items())

    def version(self, recipient) -> Version:
        """The recipient's language's ``Version`` (the school's language for a row without one)."""
        language = getattr(recipient, "language", None)
        found = self._versions.get(language)
        if found is None:
            locale = resolve(language, self.school_language)
            found = next((v for v in self._versions.values() if v.locale == locale), None) or Version(self, locale)
            self._versions[language] = found
        return found

    @property
    def subject(self) -> str:
        """The subject in the school's language."""
        return self.version(None).subject

    def token(self, recipient) -> str:
        return self.sign(self.job_id, recipient.id)

    def link(self, recipient) -> str:
        """The recipient's own page: PUBLIC_URL/n/<token>."""
        return f"{self.public_url}/n/{self.token(recipient)}"

    def unsubscribe_url(self, recipient) -> str:
        return f"{self.public_url}/u/{self.token(recipient)}"

    def context(self, recipient) -> dict:
        """``recipient`` has id, email, name, children (comma-separated names) and maybe language."""
        return self._context(self.version(recipient), recipient.name, _children(recipient), self.link(recipient))

    def _context(self, version: Version, name: str, children: list[str], link: str) -> dict:
        return {"event": version.event, "notice_line": version.notice_line, "when": version.when,
                "changes": version.changes, "canceled": bool(getattr(self.event, "canceled_at", None)),
                "lang": version.lang, "dir": version.dir, "name": name, "children": children, "link": link}

    def _render(self, version: Version, context: dict) -> tuple[str, str]:
        with force_locale(version.locale):
            return self.text_template.render(context), self.html_template.render(context)

    def bodies(self, recipient) -> tuple[str, str]:
        """The text and HTML bodies for one recipient.

        Only the name, the children's names and the link differ between recipients, so each template is
        rendered once per batch with markers in their place (once for recipients with children,
        once for those without), and each recipient's bodies are the markers replaced, escaped
        for HTML as the template would. A probe checks that replacing gives what rendering
        gives; if a template ever uses these values otherwise, every body is rendered in full.
        """
        children = _children(recipient)
        link = self.link(recipient)
        version = self.version(recipient)
        shape = version.shapes.get(bool(children))
        if shape is None and bool(children) not in version.shapes:
            shape = version.shapes[bool(children)] = self._shape(version, bool(children))
        if shape is None:
            return self._render(version, self._context(version, recipient.name, children, link))
        return _fill(shape, recipient.name, children, link)

    def _shape(self, version: Version, with_children: bool) -> tuple[str, str] | None:
        shape = self._render(version, self._context(version, NAME_MARK, [CHILDREN_MARK] if with_children else [],
                                                    LINK_MARK))
        probe_name, probe_children = "Zoë <O'Brien> & \"Co\"", ["Ben & <Bo>", "Al"] if with_children else []
        probe_link = f"{self.public_url}/n/probe_&-token.x"
        rendered = self._render(version, self._context(version, probe_name, probe_children, probe_link))
        return shape if _fill(shape, probe_name, probe_children, probe_link) == rendered else None

    def message_id(self, recipient) -> str:
        return message_id(self.job_id, recipient.id, self.domain)

    def render(self, recipient) -> Outgoing:
        text, html = self.bodies(recipient)
        version = self.version(recipient)
        parts = [_part("text/plain", text), _part("text/html", html),
                 _part(f"text/calendar; method={version.method}", version.calendar.decode("utf-8"))]
        boundary = "=_" + secrets.token_hex(16)
        while any(boundary.encode() in part for part in parts):
            boundary = "=_" + secrets.token_hex(16)
        unsubscribe = "" if not self.list_headers else f"List-Unsubscribe: <{self.unsubscribe_url(recipient)}>\r\n"
        head = (
            version.headers
            + unsubscribe
            + f"To: {_address(recipient.name, recipient.email)}\r\n"
            + f"Date: {formatdate(usegmt=True)}\r\n"
            + f"Message-ID: {self.message_id(recipient)}\r\n"
            + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
        ).encode("utf-8")
        delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
        data = head + delimiter[2:] + delimiter.join(parts) + f"\r\n--{boundary}--\r\n".encode("ascii")
        return Outgoing(self.envelope_from(recipient.id), recipient.email, data, functools.partial(self.message, recipient))

    def message(self, recipient) -> Message:
        """The same message as a Flask-Mail ``Message`` (what ``mail.record_messages`` shows)."""
        version = self.version(recipient)
        text, html = self._render(version, self.context(recipient))
        message = Message(
            subject=version.subject,
            sender=self.sender,
            recipients=[(one_line(recipient.name), recipient.email)],
            body=text,
            html=html,
            extra_headers={"Auto-Submitted": "auto-generated", "Content-Language": version.lang,
                           **self._list_headers(recipient)},
        )
        message.attach("event.ics", f"text/calendar; method={version.method}", version.calendar)
        message.msgId = self.message_id(recipient)
        return message

    def _list_headers(self, recipient) -> dict[str, str]:
        if not self.list_headers:
            return {}
        return {**self.list_headers, "List-Unsubscribe": f"<{self.unsubscribe_url(recipient)}>"}
