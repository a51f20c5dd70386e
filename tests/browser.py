"""Driving the real Chromium from tests: log in through the form, and catch what a page must not do."""
from dataclasses import dataclass, field


def log_in(page, base_url: str, email: str, password: str) -> None:
    page.goto(base_url + "/login")
    page.fill("#email", email)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/login" not in page.url, f"{email} could not log in"


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
