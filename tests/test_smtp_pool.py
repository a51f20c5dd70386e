"""SMTP connections kept open across batches, capped by MAIL_MAX_CONNECTIONS across consumers, and
over TLS (STARTTLS or implicit) with a login, the server's certificate checked."""
import ssl
import subprocess
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from school.notify import transport
from school.notify.letter import Letter
from tests.support.faults import tally
from tests.support.host import wait_for
from tests.support.school import WHOLE_SCHOOL, audience
from tests.support.smtp import SmtpServer

slow = pytest.mark.slow

EVENT = SimpleNamespace(id=7, title="Sports day", priority="normal", location="Field", description="Bring water.",
                        starts_at=datetime(2031, 6, 1, 9, tzinfo=timezone.utc),
                        ends_at=datetime(2031, 6, 1, 15, tzinfo=timezone.utc))
USER, PASSWORD = "school", "s3cret"


def send_batches(app, batches: list[list[str]]) -> dict[str, object]:
    """Each list sent over its own ``SmtpSession``, as one batch is; what became of each address."""
    outcomes = {}
    with app.app_context():
        letter = Letter(EVENT, 3)
        number = 0
        for batch in batches:
            with transport.SmtpSession() as outbox:
                for address in batch:
                    number += 1
                    try:
                        outbox.send(letter.render(SimpleNamespace(id=number, email=address, name="Ada", children="")))
                        outcomes[address] = "sent"
                    except transport.SendError as exc:
                        outcomes[address] = (exc.kind, exc.reply)
    return outcomes


def live_app(app_on, sqlite_url, smtp: SmtpServer, **env):
    app = app_on(sqlite_url, MAIL_PORT=str(smtp.port), **env)
    app.extensions["mail"].suppress = False  # TESTING would otherwise keep Flask-Mail from sending
    return app


def test_batches_share_one_connection_which_closes_when_idle(app_on, sqlite_url, smtp_server):
    app = live_app(app_on, sqlite_url, smtp_server, MAIL_IDLE_TIMEOUT="1")
    before = smtp_server.handler.sessions
    smtp_server.reply_for["nobody@example.org"] = "550 5.1.1 No such user"
    outcomes = send_batches(app, [["a@example.org", "nobody@example.org"], ["b@example.org"], ["c@example.org"]])

    assert outcomes == {"a@example.org": "sent", "nobody@example.org": (transport.REFUSED, "550 5.1.1 No such user"),
                        "b@example.org": "sent", "c@example.org": "sent"}
    assert [m.rcpt for m in smtp_server.received] == ["a@example.org", "b@example.org", "c@example.org"]
    assert smtp_server.handler.sessions - before == 1, "each batch opened a connection of its own"
    wait_for(lambda: smtp_server.handler.open_now == 0, 10, 0.1,
             lambda: "the idle connection was not closed after MAIL_IDLE_TIMEOUT")
    assert send_batches(app, [["d@example.org"]]) == {"d@example.org": "sent"}  # a new one, after the idle one went
    assert smtp_server.handler.sessions - before == 2


def test_a_connection_the_server_closed_while_idle_is_replaced(app_on, sqlite_url, smtp_server):
    app = live_app(app_on, sqlite_url, smtp_server)
    assert send_batches(app, [["a@example.org"]]) == {"a@example.org": "sent"}
    smtp_server.stop()  # drops the pooled connection
    smtp_server.start()
    assert send_batches(app, [["b@example.org"]]) == {"b@example.org": "sent"}
    assert [m.rcpt for m in smtp_server.received] == ["a@example.org", "b@example.org"]


@slow
@pytest.mark.parametrize("shared_through", ["redis", "file"])
def test_the_connection_cap_holds_across_consumers(shared_through, make_school, smtp_server, consumer, request):
    """Three consumers of four threads each may hold no more than MAIL_MAX_CONNECTIONS=3 connections
    at the server at once, and every guardian still gets the notice once."""
    queue = {"redis": request.getfixturevalue("redis_server")} if shared_through == "redis" else {}
    school = make_school(students=300, smtp=smtp_server, NOTIFY_BATCH_SIZE=10, MAIL_MAX_CONNECTIONS=3,
                         NOTIFY_SWEEP_INTERVAL=1, **queue)
    smtp_server.handler.rcpt_delay = 0.005  # exchanges overlap
    expected = audience(school)
    trio = [consumer(school, workers=4) for _ in range(3)]
    for handle in trio:
        handle.wait_started()
    job_id = school.create_event(WHOLE_SCHOOL)["job_id"]
    job = school.wait_job_done(job_id, 120)

    result = tally(f"connection cap 3, three consumers ({shared_through})", school, smtp_server, job_id, expected,
                   most_open=smtp_server.handler.most_open, connections=smtp_server.handler.sessions)
    assert job["status"] == "done"
    assert result.duplicates == 0 and result.lost == 0 and set(result.per_recipient) == expected
    assert 1 <= smtp_server.handler.most_open <= 3, f"{smtp_server.handler.most_open} connections open at once"


# --- TLS and AUTH ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA of the test's own and a certificate it signed for 127.0.0.1."""
    where = tmp_path_factory.mktemp("tls")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (where / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return where


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok)


@pytest.fixture(params=["starttls", "implicit"])
def tls_server(request, certificates):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    if request.param == "starttls":
        server = SmtpServer(tls_context=context, require_starttls=True, authenticator=authenticate,
                            auth_require_tls=True)
        settings = {"MAIL_USE_TLS": "true"}
    else:
        server = SmtpServer(ssl_context=context, authenticator=authenticate, auth_require_tls=False)
        settings = {"MAIL_USE_SSL": "true"}
    server.start()
    yield server, settings
    server.stop()


def test_tls_and_login_with_the_certificate_checked(app_on, sqlite_url, tls_server, certificates):
    server, settings = tls_server
    app = live_app(app_on, sqlite_url, server, MAIL_USERNAME=USER, MAIL_PASSWORD=PASSWORD,
                   MAIL_TLS_CA_FILE=str(certificates / "ca.pem"), **settings)
    before = server.handler.sessions
    assert send_batches(app, [["a@example.org"], ["b@example.org"]]) == {"a@example.org": "sent",
                                                                       "b@example.org": "sent"}
    assert [m.rcpt for m in server.received] == ["a@example.org", "b@example.org"]
    assert server.handler.sessions - before == 1, "TLS and login were paid again for the second batch"


def test_an_unknown_certificate_holds_sending_unless_checking_is_turned_off(app_on, sqlite_url, tls_server):
    server, settings = tls_server
    checked = live_app(app_on, sqlite_url, server, MAIL_USERNAME=USER, MAIL_PASSWORD=PASSWORD, **settings)
    kind, reply = send_batches_or_error(checked, "a@example.org")
    assert kind == transport.HELD and "certificate" in reply
    assert server.received == []

    unchecked = live_app(app_on, sqlite_url, server, MAIL_USERNAME=USER, MAIL_PASSWORD=PASSWORD,
                         MAIL_TLS_VERIFY="false", **settings)
    assert send_batches(unchecked, [["b@example.org"]]) == {"b@example.org": "sent"}
    assert [m.rcpt for m in server.received] == ["b@example.org"]


def send_batches_or_error(app, address: str) -> tuple[str, str]:
    """The error opening the session raised (it is opened before the first message)."""
    with app.app_context():
        with pytest.raises(transport.SendError) as raised:
            with transport.SmtpSession():
                pass
    return raised.value.kind, raised.value.reply
