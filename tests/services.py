"""Real services for the tests: a redis-server process, an SMTP server that records what it
receives, huey consumer processes running the real tasks, and a school (database, queue, app
and settings) that the test process and its consumers share.

Loaded as a plugin by ``tests/conftest.py``. Nothing here is a mock: every queue, limit and retry
is exercised through the same processes and protocols production uses, on 127.0.0.1 only.
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from school import config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent




SENDER = "Springfield School <notices@springfield-school.example.org>"
ADMIN_EMAIL = "admin@springfield-school.example.org"
ADMIN_PASSWORD = "correct horse battery staple"
ENDED = ("done", "failed", "canceled")


# --- small helpers ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.1, message=None):
    """Call ``predicate`` until it returns something truthy and return that; fail after ``timeout`` s.

    ``message`` (a string, or a callable for one worked out at the time of failure) says what
    did not happen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            if callable(message):
                message = message()
            raise AssertionError(message or f"still false after {timeout:.0f} s: {predicate!r}")
        time.sleep(interval)


def _clean_environ() -> dict[str, str]:
    """This process's environment without any of the app's settings: a test's processes get
    exactly the values the test chose, never whatever the shell that started pytest exported."""
    excluded = config.variable_names() | {"FLASK_APP"}
    return {k: v for k, v in os.environ.items() if k not in excluded}


# --- redis-server --------------------------------------------------------------------------

class RedisServer:
    """A throwaway ``redis-server`` with nothing persisted: ``stop()`` then ``start()`` gives a new,
    EMPTY Redis on the same port, as if the machine had been replaced."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        assert self.process is None, "redis-server is already running"
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, 10, 0.05, f"redis-server did not answer PING on port {self.port}")
        return self

    def ping(self) -> bool:
        import redis

        try:
            with redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5) as conn:
                return bool(conn.ping())
        except redis.RedisError:
            return False

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


# --- SMTP ----------------------------------------------------------------------------------

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
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.rcpt_attempts: Counter[str] = Counter()
        self.reply_for: dict[str, str | list[str]] = {}
        self.delay_for: dict[str, list[float]] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.rcpt_attempts[address] += 1
            scripted = self.reply_for.get(address)
            reply = scripted if isinstance(scripted, str) else (scripted.pop(0) if scripted else None)
            delays = self.delay_for.get(address)
            delay = delays.pop(0) if delays else 0
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


class SmtpServer:
    """An aiosmtpd ``Controller`` on 127.0.0.1 that records every accepted message.

    ``stop()`` makes it unreachable (connections in progress are dropped); ``start()`` brings it
    back on the same port with everything received so far kept.
    """

    def __init__(self):
        self.port = free_port()
        self.handler = RecordingHandler()
        self.controller = None

    def start(self) -> "SmtpServer":
        from aiosmtpd.controller import Controller

        assert self.controller is None, "the SMTP server is already running"
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
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
def silent_listener():
    """``silent_listener(port)``: a hung mail server on that port until the test ends."""
    made: list[SilentListener] = []

    def factory(port: int) -> SilentListener:
        made.append(SilentListener(port))
        return made[-1]

    yield factory
    for listener in made:
        listener.close()


# --- consumers -----------------------------------------------------------------------------

def huey_consumer_path() -> str:
    local = BIN / "huey_consumer"
    found = str(local) if local.exists() else shutil.which("huey_consumer")
    assert found, "huey_consumer is not installed in this environment"
    return found


class Consumer:
    """One ``huey_consumer tasks.huey -w N -k thread`` process, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int, extra_args: tuple[str, ...] = ()):
        self.env = env
        self.log_path = log_path
        self.workers = workers
        self.args = [huey_consumer_path(), "tasks.huey", "-w", str(workers), "-k", "thread", *extra_args]
        self.process: subprocess.Popen | None = None

    def start(self) -> "Consumer":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int | None:
        """Send ``sig`` and wait up to ``timeout`` s for the process to exit; its exit code, or None."""
        if not self.alive:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int:
        """``kill -9``: no chance to hand anything back."""
        if self.alive:
            self.process.kill()
        return self.process.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


_consumers_key = pytest.StashKey[list]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test shows the end of each of its consumers' logs."""
    report = yield
    if report.failed:
        for handle in item.stash.get(_consumers_key, []):
            report.sections.append((f"consumer pid {handle.pid} ({handle.log_path})", handle.tail()))
    return report


# --- a school: database, queue, app and settings shared by the test and its consumers ------

def postgres_admin_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL") or None


def server_database() -> str:
    """The database a Redis deployment would use: PostgreSQL when TEST_DATABASE_URL names one."""
    return "postgres" if postgres_admin_url() else "sqlite"


@dataclass
class School:
    """One test's school: the settings its processes share, and the app the test drives."""

    env: dict[str, str]
    app: object
    token: str
    data_dir: Path
    redis: RedisServer | None = None
    smtp: SmtpServer | None = None
    _client: object = field(default=None, repr=False)

    @property
    def config(self):
        return self.app.config

    @property
    def client(self):
        if self._client is None:
            self._client = self.app.test_client()
        return self._client

    def api(self, method: str, path: str, json=None):
        """Call the JSON API with the admin's bearer token; returns the test client's response."""
        return self.client.open(path, method=method, json=json, headers={"Authorization": f"Bearer {self.token}"})

    def logged_in_client(self):
        """A new test client with the admin logged in through the login form (session and CSRF)."""
        from tests.pages import csrf_token

        client = self.app.test_client()
        token = csrf_token(client.get("/login").data)
        response = client.post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token})
        assert response.status_code == 302, "the admin could not log in"
        return client

    def create_event(self, audience: dict, priority: str = "normal", title: str = "Parents' evening",
                     **fields) -> dict:
        body = {"title": title, "description": fields.pop("description", "Meet the teachers in the main hall."),
                "location": fields.pop("location", "Main hall"),
                "starts_at": fields.pop("starts_at", "2031-03-12T18:00:00Z"),
                "ends_at": fields.pop("ends_at", "2031-03-12T20:00:00Z"),
                "audience": audience, "priority": priority, **fields}
        response = self.api("POST", "/api/events", json=body)
        assert response.status_code == 202, response.get_data(as_text=True)
        return response.get_json()

    def job(self, job_id: int) -> dict:
        response = self.api("GET", f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def wait_job_done(self, job_id: int, timeout: float) -> dict:
        """Poll the API until the job has ended; its final JSON."""
        last = {}

        def ended():
            last.update(self.job(job_id))
            return last["status"] in ENDED

        wait_for(ended, timeout, 0.25, lambda: f"job {job_id} did not end within {timeout:.0f} s; last seen: {last}")
        return dict(last)

    def sql(self, statement: str, **params) -> list[tuple]:
        """Rows of a plain SQL query, in a connection of its own."""
        from sqlalchemy import text

        from school.extensions import db

        with self.app.app_context(), db.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(statement), params)]

    def scalar(self, statement: str, **params):
        rows = self.sql(statement, **params)
        return rows[0][0] if rows else None

    def consumer_env(self, **overrides) -> dict[str, str]:
        env = dict(self.env)
        env.update({k: str(v) for k, v in overrides.items()})
        return {**_clean_environ(), **env}


def make_settings(data_dir: Path, database_url: str | None, redis: RedisServer | None, smtp: SmtpServer | None,
                  **overrides) -> dict[str, str]:
    settings = {
        "APP_ENV": "development",
        "SECRET_KEY": "test-secret-" + uuid.uuid4().hex,
        "DATA_DIR": str(data_dir),
        "HUEY_NAME": f"test-{uuid.uuid4().hex[:10]}",
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(smtp.port if smtp else free_port()),
        "MAIL_DEFAULT_SENDER": SENDER,
        "MAIL_TIMEOUT": "10",
        "MAIL_RATE_LIMIT": "0",
        "PUBLIC_URL": "http://school.test",
    }
    if database_url:
        settings["DATABASE_URL"] = database_url
    if redis:
        settings["REDIS_URL"] = redis.url
    settings.update({k: str(v) for k, v in overrides.items()})
    return settings


@pytest.fixture
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp_server():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def make_school(request, tmp_path_factory):
    """``make_school(students=0, database="sqlite"|"postgres", redis=None, smtp=None, **settings)``.

    Builds the database (migrated, seeded with ``seed_demo(students)``), an admin with an API
    token, and the in-process app bound to the same database and queue as the consumers started
    with ``consumer(school)``. ``database="postgres"`` needs TEST_DATABASE_URL.
    """
    from flask_migrate import upgrade

    from school import config as config_module
    from school import create_app
    from school.auth.models import ApiToken
    from school.auth.services import save_user
    from school.extensions import db
    from school.roster.seed import seed_demo

    made: list[School] = []

    def factory(students: int = 0, database: str = "sqlite", redis: RedisServer | None = None,
                smtp: SmtpServer | None = None, **settings) -> School:
        data_dir = tmp_path_factory.mktemp("school")
        if database == "postgres":
            database_url = request.getfixturevalue("pg_url")  # tests/conftest.py: skips without TEST_DATABASE_URL
            # pg_url drops the database when the test ends, before later fixtures tear down: have
            # the consumers stop first, rather than fail over a database that is gone.
            request.node.addfinalizer(lambda: stop_all(request.node.stash.get(_consumers_key, [])))
        else:
            assert database == "sqlite", database
            database_url = None  # the embedded default under DATA_DIR
        env = make_settings(data_dir, database_url, redis, smtp, **settings)
        app = create_app(config_module.load(env))
        with app.app_context():
            upgrade()
            if students:
                seed_demo(students)
            user, _ = save_user(ADMIN_EMAIL, ADMIN_PASSWORD, "admin")
            token, secret = ApiToken.issue(user)
            db.session.add(token)
            db.session.commit()
        school = School(env=env, app=app, token=secret, data_dir=data_dir, redis=redis, smtp=smtp)
        made.append(school)
        return school

    yield factory

    for school in made:
        with school.app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture
def consumer(request, tmp_path_factory):
    """``consumer(school, workers=4, extra_args=(), **settings)`` starts a consumer process.

    ``settings`` override the school's (e.g. ``MAIL_RATE_LIMIT="50/second"``). Every consumer
    still running at the end is stopped (SIGTERM, then SIGKILL).
    """
    started: list[Consumer] = []
    request.node.stash[_consumers_key] = started
    logs = tmp_path_factory.mktemp("consumers")
    numbers = itertools.count(1)

    def factory(school: School, workers: int = 4, extra_args: tuple[str, ...] = (), **settings) -> Consumer:
        handle = Consumer(school.consumer_env(**settings), logs / f"consumer{next(numbers)}.log", workers,
                          tuple(extra_args))
        started.append(handle)
        return handle.start()

    yield factory
    stop_all(started)


def stop_all(consumers: list[Consumer]) -> None:
    for handle in consumers:
        if handle.alive:
            handle.stop(signal.SIGTERM, timeout=10)
        if handle.alive:
            handle.kill()


# --- the app over real HTTP, for the browser -----------------------------------------------

class LiveServer:
    """The app served by werkzeug on 127.0.0.1:<free>, in a thread of the test process."""

    def __init__(self, app):
        from werkzeug.serving import make_server

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


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def chromium():
    """A real Chromium driven by Playwright; a fresh browser context (no cookies) per test."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context()
        try:
            yield context
        finally:
            with suppress(Exception):
                context.close()
            browser.close()
