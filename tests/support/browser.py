"""The app served over real HTTP, and a real Chromium (Debian's, driven by Playwright) that logs
in through the form and catches what a page must not do."""
from __future__ import annotations

import threading
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

from .accounts import ADMIN, Login
from .host import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class LiveServer:
    """The app served by werkzeug on 127.0.0.1:<free>, in a thread of the test process."""

    def __init__(self, app):
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name="live-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LiveServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.server.server_close()


@pytest.fixture
def live_server():
    """``live_server(app)`` serves the app over HTTP until the test ends."""
    servers: list[LiveServer] = []

    def factory(app) -> LiveServer:
        server = LiveServer(app).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def chromium():
    """A real Chromium driven by Playwright; a fresh browser context (no cookies) per test."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context()
        try:
            yield context
        finally:
            with suppress(Exception):
                context.close()
            browser.close()


def log_in(page, base_url: str, user: Login = ADMIN) -> None:
    """Log ``user`` in through the login form, as a person would."""
    page.goto(base_url + "/login")
    page.fill("#email", user.email)
    page.fill("#password", user.password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/login" not in page.url, f"{user.email} could not log in"


@dataclass
class Watch:
    """Dialogs opened (alert, confirm …) and Content-Security-Policy violations reported by the page."""

    dialogs: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)

    def attach(self, page) -> "Watch":
        def on_dialog(dialog):
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        def on_console(message):
            if "Content Security Policy" in message.text:
                self.csp_violations.append(message.text)

        page.on("dialog", on_dialog)
        page.on("console", on_console)
        return self
