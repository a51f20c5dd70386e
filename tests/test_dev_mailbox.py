"""The development mailbox: what the local SMTP server receives, an admin reads at /dev/mailbox."""
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage

import pytest

from school.dev.mailbox import mailbox_dir

from tests.support.host import ROOT, free_port
from tests.support.pages import parse


@pytest.fixture
def dev_smtp(app):
    """``python -m school.dev.smtp`` as ``make run`` starts it, writing where the app reads."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "school.dev.smtp", "--dir", str(mailbox_dir(app.config)), "--port", str(port)],
        cwd=ROOT, env={"DATA_DIR": app.config["DATA_DIR"]},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("the development SMTP server did not start:\n" + process.stdout.read().decode())
            time.sleep(0.1)
    yield port
    process.terminate()
    assert process.wait(timeout=10) == 0
    process.stdout.close()


def send(port: int, to: str, subject: str, text: str, html: str) -> None:
    message = EmailMessage()
    message["From"] = "School <notices@school.example.org>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message)


@pytest.mark.slow
def test_admin_reads_what_the_dev_smtp_server_received(client, auth, admin_user, dev_smtp):
    send(dev_smtp, "Rosa Silva <rosa.silva@example.org>", "Sports day moves to Friday",
         "Bring trainers.\n", "<p>Bring <b>trainers</b>.</p>")
    send(dev_smtp, "Kenji Kim <kenji.kim@example.org>", "Urgent: school closed today",
         "Stay home.\n", "<p>Stay home.</p><script>alert('x')</script>")
    auth.login_as(admin_user)

    listing = client.get("/dev/mailbox")
    assert listing.status_code == 200
    rows = parse(listing.data).find("table", id="mailbox").find("tbody").find_all("tr")
    assert [row.find_all("td")[1].text for row in rows] == [  # newest first
        "Urgent: school closed today", "Sports day moves to Friday"]
    assert "Kenji Kim <kenji.kim@example.org>" in rows[0].find_all("td")[0].text

    page = client.get(rows[0].find("a").attrs["href"])
    assert page.status_code == 200
    shown = parse(page.data)
    headers = {row.find("th").text: row.find("td").text for row in shown.find("table", id="headers").find_all("tr")}
    assert headers["Subject"] == "Urgent: school closed today"
    assert headers["From"] == "School <notices@school.example.org>"
    assert shown.by_id("text-part").text == "Stay home."
    frame = shown.by_id("html-part")
    assert frame.tag == "iframe" and frame.attrs["sandbox"] == ""
    assert "<script>alert('x')</script>" in frame.attrs["srcdoc"]
    # The message's markup only ever reaches the browser escaped inside srcdoc, never as live HTML.
    assert b"<script>alert" not in page.data

    source = client.get(rows[0].find("a").attrs["href"] + "/source")
    assert source.mimetype == "text/plain"
    assert b"X-Original-To: kenji.kim@example.org" in source.data


def test_mailbox_is_for_admins(client, auth, staff_user):
    assert client.get("/dev/mailbox").status_code == 302
    auth.login_as(staff_user)
    assert client.get("/dev/mailbox").status_code == 403


def test_mailbox_does_not_exist_in_production(app, client, auth, admin_user):
    auth.login_as(admin_user)
    assert client.get("/dev/mailbox").status_code == 200
    app.config["APP_ENV"] = "production"
    assert client.get("/dev/mailbox").status_code == 404


@pytest.mark.parametrize("name", ["school.db", "..%2Fschool.db", "00000000000000000001-00000000.eml"])
def test_only_stored_messages_can_be_opened(client, auth, admin_user, name):
    auth.login_as(admin_user)
    assert client.get(f"/dev/mailbox/{name}").status_code == 404
    assert client.get(f"/dev/mailbox/{name}/source").status_code == 404
