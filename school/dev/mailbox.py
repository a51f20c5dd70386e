"""The development mailbox: one ``.eml`` file per message the local SMTP server received.

Files are named ``<receive time in ns>-<random>.eml`` so that sorting by name is sorting by arrival,
and a name taken from a URL can be checked against that shape before it touches the filesystem.
"""
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path

from ..pagination import Page

NAME = re.compile(r"^\d{20}-[0-9a-f]{8}\.eml$")


def mailbox_dir(config) -> Path:
    return Path(config["DATA_DIR"]) / "mailbox"


def store(directory: Path, content: bytes, mail_from: str, rcpt_tos: list[str]) -> str:
    """Write one received message; readers never see a half-written file."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.eml"
    # What a local delivery agent adds, so Bcc recipients show too.
    envelope = f"Return-Path: <{mail_from}>\r\nX-Original-To: {', '.join(rcpt_tos)}\r\n".encode()
    partial = directory / f".{name}.part"
    with open(partial, "wb") as handle:
        handle.write(envelope + content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, directory / name)
    return name


@dataclass(frozen=True)
class Summary:
    name: str
    to: str
    subject: str
    received: datetime


def received_at(name: str) -> datetime:
    return datetime.fromtimestamp(int(name.split("-", 1)[0]) / 1e9, tz=timezone.utc)


def names(directory: Path) -> list[str]:
    """Stored messages, newest first."""
    try:
        entries = [entry.name for entry in os.scandir(directory) if NAME.match(entry.name)]
    except FileNotFoundError:
        return []
    return sorted(entries, reverse=True)


def listing(directory: Path, page: int = 1, per_page: int = 50) -> Page:
    """One page of the mailbox; only the messages on it are opened."""
    all_names = names(directory)
    page = max(1, min(page, max(1, -(-len(all_names) // per_page))))
    summaries = []
    for name in all_names[(page - 1) * per_page:page * per_page]:
        try:
            with open(directory / name, "rb") as handle:
                headers = BytesHeaderParser(policy=policy.default).parse(handle)
        except FileNotFoundError:  # removed while we listed
            continue
        summaries.append(Summary(name=name, to=str(headers.get("To", "")),
                                 subject=str(headers.get("Subject", "")), received=received_at(name)))
    return Page(items=summaries, total=len(all_names), page=page, per_page=per_page)


def raw(directory: Path, name: str) -> bytes | None:
    if not NAME.match(name):
        return None
    try:
        return (directory / name).read_bytes()
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Opened:
    name: str
    received: datetime
    headers: list[tuple[str, str]]
    subject: str
    text: str | None
    html: str | None


def _content(part) -> str | None:
    if part is None:
        return None
    try:
        return part.get_content()
    except (LookupError, UnicodeError):  # an unknown or lying charset
        return (part.get_payload(decode=True) or b"").decode("utf-8", "replace")


def open_message(directory: Path, name: str) -> Opened | None:
    """The message as a mail client would show it, or None when there is no such message."""
    content = raw(directory, name)
    if content is None:
        return None
    message: EmailMessage = BytesParser(policy=policy.default).parsebytes(content)
    return Opened(
        name=name,
        received=received_at(name),
        headers=[(key, str(value)) for key, value in message.items()],
        subject=str(message.get("Subject", "")),
        text=_content(message.get_body(preferencelist=("plain",))),
        html=_content(message.get_body(preferencelist=("html",))),
    )
