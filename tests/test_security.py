"""Hardening: headers and cookies, CSRF on every form, tokens, login throttling, request limits,
strict JSON, and Redis with a password and with TLS (passwords never shown or logged)."""
import hashlib
import logging
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from school.auth.models import ApiToken
from school.events.models import Event
from school.extensions import db
from school.notify.models import NotificationJob
from school.auth.throttle import THROTTLED
from tests.support.accounts import ADMIN, ADMIN_EMAIL, ADMIN_PASSWORD, add_user, issue_token
from tests.support.browser import Watch, log_in
from tests.support.host import wait_for
from tests.support.pages import csrf_token, parse
from tests.support.redis import RedisServer
from tests.support.school import EVENT, build_app


def written(app) -> tuple[int, int]:
    with app.app_context():
        return (db.session.scalar(select(func.count()).select_from(Event)),
                db.session.scalar(select(func.count()).select_from(NotificationJob)))


# --- headers and cookies ------------------------------------------------------------------------

def test_every_response_carries_the_security_headers(auth, client, admin_user):
    auth.login_as(admin_user)
    for path in ("/", "/events/new", "/admin/queue", "/health", "/static/app.css", "/no-such-page"):
        with client.get(path) as response:
            headers = response.headers
            csp = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
            assert csp["script-src"] == "'self'", path  # no inline script, no eval, no other host
            assert csp["frame-ancestors"] == "'none'"
            assert csp["object-src"] == "'none'" and csp["base-uri"] == "'none'"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "same-origin"
            assert headers["X-Frame-Options"] == "DENY"
            assert "Strict-Transport-Security" not in headers  # development is served over plain HTTP


def test_pages_hold_no_script_the_policy_would_block(auth, client, admin_user, app):
    """Every script is a file from /static and no element carries an inline handler, so the
    policy takes nothing away from the app's own pages."""
    auth.login_as(admin_user)
    with app.app_context():
        from school.events.services import create_event, parse_event
        from school.notify.tasks import enqueue_fanout
        from school.auth.services import authenticate
        from school.family.tokens import notice_token

        admin = authenticate(admin_user.email, admin_user.password)
        event = create_event(parse_event(EVENT), admin, enqueue_fanout)
        ids = {"event_id": event.id, "job_id": event.job.id}
    pages = ["/", "/events/new", f"/events/{ids['event_id']}", "/jobs", f"/jobs/{ids['job_id']}",
             f"/jobs/{ids['job_id']}/progress", "/admin/queue", "/admin/queue/panel", "/admin/users", "/dev/mailbox"]
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        document = parse(response.data)
        for script in document.find_all("script"):
            assert (script.attrs.get("src") or "").startswith("/static/"), (path, script.attrs)
        for element in document.iter():
            handlers = [name for name in element.attrs if name.startswith("on") or name.startswith("hx-on")]
            assert handlers == [], (path, element.tag, handlers)
            for name in ("href", "src", "action", "hx-get", "hx-post"):
                assert not (element.attrs.get(name) or "").lower().startswith("javascript:"), (path, element.attrs)


def test_production_adds_hsts_and_secure_cookies(app_on, sqlite_url, redis_server):
    app = app_on(sqlite_url, APP_ENV="production", REDIS_URL=redis_server.url)
    user = add_user(app, ADMIN)
    client = app.test_client()
    token = csrf_token(client.get("/login").data)
    response = client.post("/login", data={"email": user.email, "password": user.password, "csrf_token": token,
                                           "remember": "1"})
    assert response.status_code == 302
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    cookies = {c.split("=", 1)[0]: c for c in response.headers.getlist("Set-Cookie")}
    for name in ("session", "remember_token"):
        flags = [flag.strip().lower() for flag in cookies[name].split(";")]
        assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags, cookies[name]


def test_development_cookies_are_httponly_and_samesite_lax(client, staff_user):
    token = csrf_token(client.get("/login").data)
    response = client.post("/login", data={"email": staff_user.email, "password": staff_user.password,
                                           "csrf_token": token, "remember": "1"})
    cookies = {c.split("=", 1)[0]: c for c in response.headers.getlist("Set-Cookie")}
    for name in ("session", "remember_token"):
        flags = [flag.strip().lower() for flag in cookies[name].split(";")]
        assert "httponly" in flags and "samesite=lax" in flags, cookies[name]
        assert "secure" not in flags  # plain HTTP in development would then lose the session


# --- CSRF -------------------------------------------------------------------------------------

def test_every_state_changing_form_refuses_a_request_without_the_token(app, auth, client, admin_user, staff_user):
    """Walks the URL map: each POST outside the token-only API is refused without the CSRF token,
    for a logged-in admin, whether it comes from a form or from htmx."""
    auth.login_as(admin_user)
    with app.app_context():
        from school.events.services import create_event, parse_event
        from school.notify.tasks import enqueue_fanout
        from school.auth.services import authenticate
        from school.family.tokens import notice_token

        admin = authenticate(admin_user.email, admin_user.password)
        event = create_event(parse_event(EVENT), admin, enqueue_fanout)
        staff_id = authenticate(staff_user.email, staff_user.password).id
        values = {"job_id": event.job.id, "user_id": staff_id, "action": "cancel", "import_id": 1, "guardian_id": 1,
                  "event_id": event.id, "token": notice_token(event.job.id, 1)}
    before = written(app)
    checked = []
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods or rule.rule.startswith("/api/"):
            continue
        if rule.endpoint == "family.unsubscribe":
            continue  # RFC 8058 one-click: the mail provider's POST carries no cookie or token, by design
        if rule.endpoint.startswith("bounces."):
            continue  # a provider's webhook: no session to forge, a shared secret instead (test_bounces)
        url = rule.build({name: values[name] for name in rule.arguments})[1]
        for headers in ({}, {"HX-Request": "true"}):
            response = client.post(url, data={**EVENT, "email": "x@example.org", "password": "long-enough-1",
                                              "role": "admin", "active": "0"}, headers=headers)
            assert response.status_code == 400, (url, headers, response.status_code)
            checked.append(url)
    assert {"/events/new", "/logout", "/login", "/admin/users", f"/jobs/{event.job.id}/cancel"} <= set(checked)
    assert written(app) == before
    assert client.get(f"/jobs/{event.job.id}/progress").status_code == 200  # still logged in, job not canceled
    with app.app_context():
        assert db.session.get(NotificationJob, event.job.id).status == "queued"


def test_the_api_ignores_the_session_and_takes_tokens_only(auth, client, admin_user, app):
    auth.login_as(admin_user)
    response = client.post("/api/events", json=EVENT)
    assert response.status_code == 401
    assert written(app) == (0, 0)


# --- tokens -----------------------------------------------------------------------------------

def test_tokens_are_stored_hashed_and_revocable_from_the_command_line(app, runner, admin_user, client):
    first = runner.invoke(args=["create-token", admin_user.email]).output.strip()
    second = runner.invoke(args=["create-token", admin_user.email]).output.strip()
    with app.app_context():
        rows = db.session.execute(select(ApiToken.token_hash, ApiToken.prefix)).all()
    hashes = {row.token_hash for row in rows}
    assert hashes == {hashlib.sha256(t.encode()).hexdigest() for t in (first, second)}
    assert not any(first in value or second in value for row in rows for value in row)  # only hashes kept

    def works(token):
        return client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    assert works(first) and works(second)
    result = runner.invoke(args=["revoke-token", first])
    assert result.exit_code == 0 and "Revoked 1" in result.output
    assert not works(first) and works(second)
    assert runner.invoke(args=["revoke-token", first]).exit_code != 0  # nothing left to revoke
    assert runner.invoke(args=["revoke-token", admin_user.email]).exit_code == 0
    assert not works(second)


# --- login throttling -------------------------------------------------------------------------

def attempt(client, email: str, password: str, address: str = "192.0.2.10"):
    environ = {"REMOTE_ADDR": address}
    token = csrf_token(client.get("/login", environ_base=environ).data)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token},
                       environ_base=environ)


def log_out(client, address: str = "192.0.2.10") -> None:
    """Log out, keeping what the browser holds besides its session (its known-device cookie)."""
    environ = {"REMOTE_ADDR": address}
    token = csrf_token(client.get("/", environ_base=environ).data)
    assert client.post("/logout", data={"csrf_token": token}, environ_base=environ).status_code == 302
    assert client.get("/", environ_base=environ).status_code == 302


def alert(response) -> str:
    return parse(response.data).find("p", role="alert").text


def test_failed_logins_are_throttled_per_address_and_account_with_the_same_words_for_anyone(app, staff_user):
    client = app.test_client()
    for email in (staff_user.email, "nobody@school.example.org"):
        for _ in range(5):
            assert attempt(client, email, "wrong-password").status_code == 401
    answers = {}
    for email in (staff_user.email, "nobody@school.example.org"):
        refused = attempt(client, email, "wrong-password")
        answers[email] = (refused.status_code, alert(refused))
    assert set(answers.values()) == {(429, THROTTLED)}, answers
    # The right password waits too: a guesser cannot tell it from a wrong one.
    assert attempt(client, staff_user.email, staff_user.password).status_code == 429


def test_a_stranger_elsewhere_cannot_lock_a_staff_member_out(app, staff_user):
    stranger = app.test_client()
    for _ in range(5):
        assert attempt(stranger, staff_user.email, "guess", address="198.51.100.7").status_code == 401
    assert attempt(stranger, staff_user.email, "guess", address="198.51.100.7").status_code == 429
    assert attempt(app.test_client(), staff_user.email, staff_user.password).status_code == 302


def test_a_browser_that_logged_in_before_gets_in_past_a_stranger_at_the_same_address(app, staff_user, admin_user):
    """Staff and a stranger behind one school address: the stranger's guesses fill the address's
    and the account's limits, yet the staff member's own browser still gets in with the password."""
    own = app.test_client()
    assert attempt(own, staff_user.email, staff_user.password).status_code == 302
    log_out(own)

    stranger = app.test_client()
    answers = [attempt(stranger, email, "guess").status_code
               for email in [staff_user.email] * 6 + [f"guess{n}@school.example.org" for n in range(30)]]
    assert answers == [401] * 5 + [429] + [401] * 25 + [429] * 5  # the account's limit, then the address's

    assert attempt(app.test_client(), staff_user.email, staff_user.password).status_code == 429  # unknown browser
    assert attempt(own, admin_user.email, admin_user.password).status_code == 429  # known for another account
    assert attempt(own, staff_user.email, staff_user.password).status_code == 302

    forged = app.test_client()
    forged.set_cookie("known_device", own.get_cookie("known_device", path="/login").value[:-2] + "xx", path="/login")
    assert attempt(forged, staff_user.email, staff_user.password).status_code == 429


def test_a_known_browser_still_has_a_limit_of_its_own(app, staff_user):
    own = app.test_client()
    assert attempt(own, staff_user.email, staff_user.password).status_code == 302
    log_out(own)
    answers = [attempt(own, staff_user.email, "wrong").status_code for _ in range(6)]
    assert answers == [401] * 5 + [429]


def test_failed_logins_are_throttled_per_address(app, staff_user):
    client = app.test_client()
    for n in range(30):  # a different (unknown) account each time
        assert attempt(client, f"guess{n}@school.example.org", "wrong").status_code == 401
    refused = attempt(client, staff_user.email, staff_user.password)
    assert (refused.status_code, alert(refused)) == (429, THROTTLED)
    assert attempt(client, staff_user.email, staff_user.password, address="203.0.113.9").status_code == 302


def test_behind_a_trusted_proxy_the_clients_address_is_throttled_not_the_proxys(app_on, sqlite_url):
    app = app_on(sqlite_url, TRUSTED_PROXIES="1")
    client = app.test_client()

    def via_proxy(client_address: str, email: str):
        environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": client_address}
        token = csrf_token(client.get("/login", environ_base=environ).data)
        return client.post("/login", data={"email": email, "password": "wrong", "csrf_token": token},
                           environ_base=environ)

    for n in range(30):
        assert via_proxy("192.0.2.10", f"guess{n}@school.example.org").status_code == 401
    assert via_proxy("192.0.2.10", "guess-more@school.example.org").status_code == 429
    # Another family behind the same proxy is not locked out by the first one's guesses.
    assert via_proxy("198.51.100.20", "parent@school.example.org").status_code == 401


def test_successful_logins_are_not_held_up(app, staff_user):
    for _ in range(40):  # more than the address's limit: a right password is given back
        assert attempt(app.test_client(), staff_user.email, staff_user.password).status_code == 302


def test_throttling_is_shared_by_every_web_process_on_redis(make_school, redis_server):
    school = make_school(redis=redis_server)
    other_process = build_app(school.env)
    for _ in range(5):
        assert attempt(school.app.test_client(), ADMIN_EMAIL, "wrong").status_code == 401
    assert attempt(other_process.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429


def concurrent_logins(urls: list[str], email: str, password: str) -> list[int]:
    """One wrong login per URL, each from its own browser session, all sent at the same moment."""
    import http.cookiejar
    import threading
    import urllib.error
    import urllib.parse
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    browsers = []
    for url in urls:  # each browser fetches the form (cookie and CSRF token) beforehand
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with opener.open(url + "/login", timeout=30) as page:
            browsers.append((opener, url, csrf_token(page.read())))
    start = threading.Barrier(len(browsers))

    def post(browser) -> int:
        opener, url, token = browser
        data = urllib.parse.urlencode({"email": email, "password": password, "csrf_token": token}).encode()
        start.wait()
        try:
            with opener.open(url + "/login", data=data, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    with ThreadPoolExecutor(len(browsers)) as pool:
        return list(pool.map(post, browsers))


@pytest.mark.slow
@pytest.mark.parametrize("store", ["memory", "redis"])
def test_wrong_passwords_sent_at_once_get_no_more_answers_than_the_limit(store, make_school, live_server, request):
    """Twenty wrong passwords for one account, all at once (and, on Redis, through two web
    processes): five are checked and told so, the other fifteen are refused unchecked."""
    if store == "redis":
        school = make_school(redis=request.getfixturevalue("redis_server"))
        other_process = build_app(school.env)
        servers = [live_server(school.app), live_server(other_process)]
    else:
        school = make_school()
        servers = [live_server(school.app)]
    answers = concurrent_logins([servers[n % len(servers)].url for n in range(20)], ADMIN_EMAIL, "wrong")
    assert sorted(answers) == [401] * 5 + [429] * 15, answers


# --- request size and strict JSON ---------------------------------------------------------------

def test_oversized_requests_are_refused_with_413(app, auth, client, staff_user, admin_user):
    token = issue_token(app, admin_user.email)
    big = {**EVENT, "description": "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)}
    response = client.post("/api/events", json=big, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 413
    assert response.is_json and "error" in response.json

    auth.login_as(staff_user)
    form_token = csrf_token(client.get("/events/new").data)
    response = client.post("/events/new", data={**EVENT, "description": big["description"], "csrf_token": form_token})
    assert response.status_code == 413
    assert written(app) == (0, 0)


@pytest.mark.parametrize("body, field", [
    ({**EVENT, "title": 42}, "title"),
    ({**EVENT, "title": ["Sports day"]}, "title"),
    ({**EVENT, "description": {"text": "x"}}, "description"),
    ({**EVENT, "starts_at": 1780000000}, "starts_at"),
    ({**EVENT, "priority": True}, "priority"),
    ({**EVENT, "audience": ["guardians"]}, "audience"),
    ({**EVENT, "audience": {"roles": "guardians"}}, "roles"),
    ({**EVENT, "audience": {"roles": ["guardians"], "grades": ["7"]}}, "grades"),
    ({**EVENT, "audience": {"roles": ["guardians"], "grades": [True]}}, "grades"),
    ({**EVENT, "audience": {"roles": ["guardians"], "grades": [7.0]}}, "grades"),
    ({**EVENT, "audience": {"roles": ["guardians"], "everyone": True}}, "audience"),
])
def test_the_api_takes_exact_types_only(app, client, admin_user, body, field):
    token = issue_token(app, admin_user.email)
    response = client.post("/api/events", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422, response.json
    assert field in response.json["fields"]
    assert written(app) == (0, 0)


@pytest.mark.parametrize("data, content_type, status", [
    (b'{"title": "x"', "application/json", 400),
    (b"[1, 2]", "application/json", 422),
    (b'"just text"', "application/json", 422),
    (b"title=x", "application/x-www-form-urlencoded", 415),
    (b'{"title": "x\xff"}', "application/json", 400),
])
def test_bodies_that_are_not_a_json_object_are_refused(app, client, admin_user, data, content_type, status):
    token = issue_token(app, admin_user.email)
    response = client.post("/api/events", data=data, content_type=content_type,
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status
    assert "error" in response.json
    assert written(app) == (0, 0)


# --- Redis with a password, and with TLS ------------------------------------------------------

PASSWORD = "s3cret-Redis-pass-7f2b"


class ProtectedRedis(RedisServer):
    """redis-server requiring a password, optionally speaking only TLS with a self-signed certificate."""

    def __init__(self, directory: Path, tls: bool):
        super().__init__(directory)
        self.tls = tls
        self.cert, self.key = directory / "cert.pem", directory / "key.pem"
        if tls:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-keyout", str(self.key), "-out", str(self.cert), "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/0?ssl_ca_certs={self.cert}"
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> "ProtectedRedis":
        ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.cert),
                 "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.cert), "--tls-auth-clients", "no"
                 ] if self.tls else ["--port", str(self.port)]
        self.process = subprocess.Popen(
            ["redis-server", *ports, "--bind", "127.0.0.1", "--requirepass", PASSWORD, "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, 10, 0.05, f"redis-server did not answer on port {self.port}")
        return self


def queue_key(school) -> str:
    from school.queue import huey

    with school.app.app_context():
        return huey.storage.queue_key


@pytest.mark.slow
@pytest.mark.parametrize("tls", [False, True], ids=["password", "tls"])
def test_redis_with_a_password_and_tls_works_and_the_password_never_shows(
        tls, make_school, smtp_server, consumer, tmp_path, caplog):
    server = ProtectedRedis(tmp_path / "redis", tls).start()
    try:
        import redis

        with pytest.raises(redis.AuthenticationError):  # it really wants the password
            redis.Redis(host="127.0.0.1", port=server.port, ssl=tls, ssl_ca_certs=str(server.cert) if tls else None,
                        socket_timeout=2).ping()
        caplog.set_level(logging.DEBUG)
        school = make_school(students=12, redis=server, smtp=smtp_server)
        admin = school.admin().client

        ready = admin.get("/health/ready")
        assert ready.status_code == 200, ready.json
        assert ready.json["checks"]["redis"]["url"].startswith(f"{'rediss' if tls else 'redis'}://:***@127.0.0.1:")

        created = school.create_event({"roles": ["teachers"], "grades": [], "classes": []})
        assert server.client().zcard(queue_key(school)) == 1  # the fan-out, queued on this Redis
        worker = consumer(school, workers=2, HEARTBEAT_INTERVAL=1)
        job = school.wait_job_done(created["job_id"], 60)
        assert job["sent"] == len(smtp_server.received) > 0
        wait_for(lambda: admin.get("/health/queue").json["consumers"]["alive"] == 1, 10)
        assert admin.get("/health/cache").json["backend"] == "redis"

        for _ in range(5):  # the login limiter keeps its counts on this Redis too
            assert attempt(school.app.test_client(), ADMIN_EMAIL, "wrong").status_code == 401
        assert attempt(school.app.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 429

        pages = [admin.get(path).get_data(as_text=True)
                 for path in ("/health/ready", "/health/queue", "/admin/queue", "/admin/queue/panel", "/")]
        server.stop()  # errors are where a URL with its password would leak
        pages += [admin.get(path).get_data(as_text=True) for path in ("/health/ready", "/admin/queue/panel", "/")]
        pages.append(attempt(school.app.test_client(), "someone@example.org", "wrong").get_data(as_text=True))
        worker.stop()
        logs = [caplog.text, worker.log()]
        assert "Cannot read" in pages[-3]  # the outage did show
        assert not [text for text in pages + logs if PASSWORD in text]
    finally:
        server.stop()


# --- the policy in a real browser -------------------------------------------------------------

@pytest.mark.slow
def test_the_pages_work_in_chromium_under_the_policy(make_school, smtp_server, consumer, live_server, chromium):
    """The audience picker and the live progress bar (both htmx) work with the policy on, and the
    browser reports no violation; an inline script added to the page is refused and reported."""
    school = make_school(students=40, smtp=smtp_server)
    server = live_server(school.app)
    page = chromium.new_page()
    watch = Watch().attach(page)
    log_in(page, server.url)

    page.goto(server.url + "/events/new")
    everyone = page.text_content("#reach-count")
    page.check("input[name=grades][value='7']")
    page.wait_for_function("(before) => document.querySelector('#reach-count').textContent !== before", arg=everyone)
    assert "Reaches" in page.text_content("#reach-count")

    page.fill("#title", "Grade 7 trip")
    page.fill("#starts_at", "2031-06-12T09:00")
    page.fill("#ends_at", "2031-06-12T15:00")
    with page.expect_navigation():
        page.click("text=Create event and notify")
    consumer(school, workers=2)
    page.wait_for_selector("[data-status=done]", timeout=60_000)
    assert page.get_attribute("[role=progressbar]", "aria-valuenow") == page.get_attribute(
        "[role=progressbar]", "aria-valuemax")
    assert watch.csp_violations == [] and watch.dialogs == []

    page.evaluate("""() => { const s = document.createElement('script');
                             s.textContent = 'window.inlineRan = true'; document.body.append(s); }""")
    assert page.evaluate("window.inlineRan === undefined")
    wait_for(lambda: watch.csp_violations, 5, 0.1, "the browser did not report the refused script")
