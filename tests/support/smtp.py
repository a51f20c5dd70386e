"""An SMTP server that records what it receives (aiosmtpd on a free loopback port), with replies
and delays scripted per address, and a mail server that hangs."""
from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from .host import free_port, wait_for


@dataclass(frozen=True)
class Received:
    """One message as one recipient got it."""

    rcpt: str
    mail_from: str
    message_id: str
    subject: str
    raw: bytes
    at: float  # time.time() when the server accepted the DATA

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)


class RecordingHandler:
    """An aiosmtpd handler that accepts everything, except what ``reply_for`` scripts.

    ``reply_for[address]`` is either a string (that reply to every attempt, e.g. a permanent
    ``"550 5.1.1 No such user"``) or a list consumed one reply per attempt, after which the
    address is accepted (e.g. ``["451 4.3.0 Try again later"]``). ``delay_for[address]`` is a
    list of seconds to wait before answering, also one per attempt (a slow server).
    ``reply_with(address)``, when set, answers every other RCPT as a provider's rules would (a
    quota, throttling): a reply, or None to accept. ``rcpt_delay`` seconds pass before every RCPT
    is answered (a server far away).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.rcpt_attempts: Counter[str] = Counter()
        self.reply_for: dict[str, str | list[str]] = {}
        self.delay_for: dict[str, list[float]] = {}
        self.reply_with = None
        self.rcpt_delay = 0.0
        self.sessions = 0  # connections opened so far
        self.open_now = 0  # connections open now
        self.most_open = 0  # the most connections ever open at once
        self.transports = set()

    def opened(self, transport=None) -> None:
        with self.lock:
            self.transports.add(transport)
            self.sessions += 1
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)

    def closed(self, transport=None) -> None:
        with self.lock:
            self.transports.discard(transport)
            self.open_now -= 1

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.rcpt_attempts[address] += 1
            scripted = self.reply_for.get(address)
            reply = scripted if isinstance(scripted, str) else (scripted.pop(0) if scripted else None)
            delays = self.delay_for.get(address)
            delay = (delays.pop(0) if delays else 0) + self.rcpt_delay
            if reply is None and self.reply_with is not None:
                reply = self.reply_with(address)
        if delay:
            await asyncio.sleep(delay)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        at = time.time()
        raw = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(Received(rcpt, envelope.mail_from, str(parsed["Message-ID"] or ""),
                                              str(parsed["Subject"] or ""), raw, at))
        return "250 Message accepted for delivery"


class CountingSMTP(SMTP):
    """aiosmtpd's server, telling its handler when a connection opens and closes."""

    _counted = None

    def connection_made(self, transport):
        if self._counted is None:  # STARTTLS makes the same connection again, over TLS
            self._counted = transport
            self.event_handler.opened(transport)
        super().connection_made(transport)

    def connection_lost(self, error):
        super().connection_lost(error)
        self.event_handler.closed(self._counted)


class CountingController(Controller):
    def factory(self):
        return CountingSMTP(self.handler, **self.SMTP_kwargs)


class SmtpServer:
    """An aiosmtpd ``Controller`` on 127.0.0.1 that records every accepted message.

    ``stop()`` makes it unreachable (connections in progress are dropped); ``start()`` brings it
    back on the same port with everything received so far kept. ``options`` go to aiosmtpd's
    SMTP server (``enable_SMTPUTF8=True``; ``timeout=5`` closes connections idle for 5 s).
    """

    def __init__(self, **options):
        self.port = free_port()
        self.handler = RecordingHandler()
        self.options = options
        self.controller = None

    def start(self) -> "SmtpServer":
        assert self.controller is None, "the SMTP server is already running"
        self.controller = CountingController(self.handler, hostname="127.0.0.1", port=self.port,
                                             ready_timeout=10, **self.options)
        self.controller.start()
        return self

    def stop(self) -> None:
        """Drops every open connection (a client's pooled one too), then stops listening."""
        if self.controller is not None:
            with self.handler.lock:
                transports = [t for t in self.handler.transports if t is not None]
            for transport in transports:
                self.controller.loop.call_soon_threadsafe(transport.abort)
            with suppress(AssertionError):
                wait_for(lambda: self.handler.open_now <= 0, 5, 0.02, lambda: "connections stay open")
            self.controller.stop()
            self.controller = None

    @property
    def reply_for(self) -> dict[str, str | list[str]]:
        return self.handler.reply_for

    @property
    def delay_for(self) -> dict[str, list[float]]:
        return self.handler.delay_for

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    @property
    def rcpt_attempts(self) -> Counter[str]:
        with self.handler.lock:
            return Counter(self.handler.rcpt_attempts)

    def count(self) -> int:
        with self.handler.lock:
            return len(self.handler.received)

    def wait_for_count(self, n: int, timeout: float) -> list[Received]:
        wait_for(lambda: self.count() >= n, timeout, 0.1, lambda: f"the SMTP server got {self.count()} of {n} messages")
        return self.received


class SilentListener:
    """A mail server that hangs: it accepts connections on ``port`` and never says a word."""

    def __init__(self, port: int):
        self.port = port
        self.listener = socket.create_server(("127.0.0.1", port))
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, name="silent-listener", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)

    def stop_listening(self) -> None:
        """Refuse new connections; those already accepted stay open, and silent."""
        with suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)

    def close(self) -> None:
        self.stop_listening()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def smtp_server():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def silent_listener():
    """``silent_listener(port)``: a hung mail server on that port until the test ends."""
    made: list[SilentListener] = []

    def factory(port: int) -> SilentListener:
        made.append(SilentListener(port))
        return made[-1]

    yield factory
    for listener in made:
        listener.close()
