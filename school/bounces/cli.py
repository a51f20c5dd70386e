"""``flask --app app receive-bounce`` (one message on standard input, as an MTA's pipe hands it over)
and ``flask --app app bounce-server`` (an SMTP or LMTP listener for a relay that forwards bounces).

Exit codes follow sysexits.h, which MTAs read: 0 for a message handled or deliberately ignored,
75 (EX_TEMPFAIL) when it cannot be recorded now (the database is down), so the MTA keeps the
message and tries again later.
"""
import asyncio
import logging
import signal
import sys
import threading

import click
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from flask import current_app
from flask.cli import with_appcontext

from ..extensions import db
from ..notify.delivery import DATABASE_DOWN
from . import verp
from .intake import receive_mail

log = logging.getLogger(__name__)

EX_OK, EX_TEMPFAIL = 0, 75


def _receive(raw: bytes, recipients) -> int:
    """Hand one message to the intake; the exit code an MTA understands."""
    try:
        outcome = receive_mail(raw, recipients)
    except DATABASE_DOWN as exc:
        db.session.rollback()
        log.warning("receive-bounce: the database is unreachable (%s); the MTA should try again later", exc)
        return EX_TEMPFAIL
    except Exception:  # ours to fix: keep the message with the MTA rather than lose it
        db.session.rollback()
        log.exception("receive-bounce: the message could not be recorded")
        return EX_TEMPFAIL
    log.info("receive-bounce: %s", outcome)
    return EX_OK


@click.command("receive-bounce")
@click.option("--recipient", "recipients", multiple=True, metavar="ADDRESS",
              help="The envelope recipient (Postfix: ${original_recipient}); else read from the headers.")
@with_appcontext
def receive_bounce_command(recipients: tuple[str, ...]) -> None:
    """Read one bounce or complaint on standard input and record it."""
    limit = current_app.config["BOUNCE_MAX_BYTES"]
    raw = sys.stdin.buffer.read(limit + 1)  # one byte past the limit is enough to know it is too big
    code = _receive(raw, recipients)
    while code == EX_OK and sys.stdin.buffer.read(1 << 16):  # let the MTA finish writing; drop the rest
        pass
    sys.exit(code)


class BounceHandler:
    """aiosmtpd's handler: accepts mail for our bounce address only, and records each message in a
    worker thread inside the app's context."""

    def __init__(self, app):
        self.app = app

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.app.app_context():
            ours = verp.is_ours(address)
        if not ours:
            return "550 5.1.1 not a bounce address of this server"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content or b""
        code = await asyncio.get_running_loop().run_in_executor(None, self._record, raw, list(envelope.rcpt_tos))
        if code == EX_TEMPFAIL:
            return "451 4.3.0 cannot record this now; try again later"
        return "250 OK"

    def _record(self, raw: bytes, recipients: list[str]) -> int:
        with self.app.app_context():
            return _receive(raw, recipients)


class _LmtpController(Controller):
    def factory(self):
        return LMTP(self.handler, **self.SMTP_kwargs)


@click.command("bounce-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=2525, show_default=True)
@click.option("--lmtp", is_flag=True, help="Speak LMTP (RFC 2033) instead of SMTP.")
@with_appcontext
def bounce_server_command(host: str, port: int, lmtp: bool) -> None:
    """Listen for bounces and complaints forwarded by a relay, until SIGTERM or Ctrl-C."""
    app = current_app._get_current_object()
    options = {"data_size_limit": app.config["BOUNCE_MAX_BYTES"], "server_hostname": host}
    kind = _LmtpController if lmtp else Controller
    controller = kind(BounceHandler(app), hostname=host, port=port, ready_timeout=10, **options)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    controller.start()
    click.echo(f"bounce-server: {'LMTP' if lmtp else 'SMTP'} on {host}:{port}, "
               f"for {app.config['MAIL_BOUNCE_ADDRESS']} and its tagged addresses", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        controller.stop()
    click.echo("bounce-server: stopped", err=True)


COMMANDS = (receive_bounce_command, bounce_server_command)
