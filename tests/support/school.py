"""A test's school: the settings its processes share, the app built from them, its database
(SQLite, or a fresh PostgreSQL database when ``TEST_DATABASE_URL`` names a server) and the
admin who runs it.

Every app a test uses is built by ``build_app`` from settings made by ``app_env``: the
in-process app of ``app_on`` and ``make_school``, a second web process on the same settings,
and (through ``School.consumer_env``) the consumer processes.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import flask_migrate
import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

from school import config, create_app
from school.extensions import db

from .accounts import ADMIN, AuthActions, add_user, issue_token
from .consumers import stop_consumers_of
from .host import clean_environ, free_port, wait_for
from .redis import RedisServer
from .smtp import SmtpServer

SENDER = "Springfield School <notices@springfield-school.example.org>"
ENDED = ("done", "failed", "canceled")
# What a school's processes are told beyond what every test app gets: its mail goes to the test's
# SMTP server (or to a port nobody listens on), unpaced, and its links name a recognisable host.
SCHOOL_SETTINGS = {
    "APP_ENV": "development",
    "MAIL_SERVER": "127.0.0.1",
    "MAIL_DEFAULT_SENDER": SENDER,
    "MAIL_TIMEOUT": "10",
    "MAIL_RATE_LIMIT": "0",
    "PUBLIC_URL": "http://school.test",
}

# An event as the JSON API takes it.
EVENT = {"title": "Sports day", "starts_at": "2031-06-12T09:00:00Z", "ends_at": "2031-06-12T15:00:00Z",
         "audience": {"roles": ["guardians"], "grades": [], "classes": []}}
WHOLE_SCHOOL = {"roles": ["guardians", "students", "teachers"], "grades": [], "classes": []}
TEACHERS = {"roles": ["teachers"], "grades": [], "classes": []}
# Everyone the whole school's event must reach, worked out from the roster alone, independently
# of the app's audience code.
ADDRESSES = """
    SELECT email FROM students WHERE email IS NOT NULL
    UNION
    SELECT g.email FROM guardians g
    WHERE g.email IS NOT NULL AND EXISTS (SELECT 1 FROM student_guardians sg WHERE sg.guardian_id = g.id)
    UNION
    SELECT email FROM teachers WHERE email IS NOT NULL
"""


# --- settings and apps ------------------------------------------------------------------------

def app_env(data_dir: Path, database_url: str | None = None, redis: RedisServer | None = None,
            smtp: SmtpServer | None = None, **overrides) -> dict[str, str]:
    """The environment a process of this test starts with: its own ``DATA_DIR``, Huey queue name
    and secret key, the database (the embedded SQLite under ``DATA_DIR`` unless ``database_url``),
    Redis and SMTP server given, then ``overrides``."""
    env = {"DATA_DIR": str(data_dir), "HUEY_NAME": f"test-{secrets.token_hex(6)}",
           "SECRET_KEY": secrets.token_hex(16)}
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis:
        env["REDIS_URL"] = redis.url
    if smtp:
        env["MAIL_PORT"] = str(smtp.port)
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def build_app(env: dict[str, str], testing: bool = True):
    """The app a process started with only these variables would run.

    Built through ``config.load`` from ``env`` alone, so whatever the shell running the tests
    exports (DATABASE_URL, REDIS_URL …) cannot leak in. ``testing`` lets an exception reach the
    test and keeps Flask-Mail from sending; a school's own app runs without it, as a served one.
    """
    return create_app(config.load(env) | {"TESTING": testing})


def migrate(app) -> None:
    """Build the app's schema the way a deployment does: by running the migrations."""
    with app.app_context():
        flask_migrate.upgrade()


def close(app) -> None:
    """Let go of the app's database connections (PostgreSQL drops the database afterwards)."""
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app_on(tmp_path_factory):
    """``app_on(url, **env)``: an app on that database, its schema built by the migrations."""
    built = []

    def build(database_url: str, **env):
        app = build_app(app_env(tmp_path_factory.mktemp("data"), database_url, **env))
        built.append(app)
        migrate(app)
        return app

    yield build
    for app in built:
        close(app)


# --- databases --------------------------------------------------------------------------------

def postgres_admin_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL") or None


def server_database() -> str:
    """The database a Redis deployment would use: PostgreSQL when TEST_DATABASE_URL names one."""
    return "postgres" if postgres_admin_url() else "sqlite"


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'school.db'}"


@pytest.fixture
def pg_url():
    """A fresh, uniquely named PostgreSQL database for one test, dropped afterwards."""
    base = postgres_admin_url()
    if not base:
        pytest.skip("TEST_DATABASE_URL is not set (point it at a PostgreSQL server to run this)")
    url = make_url(base)
    name = f"test_{secrets.token_hex(6)}"
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str:
    """Run the test once on SQLite and once on PostgreSQL (skipped without TEST_DATABASE_URL)."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


# --- a school: database, queue, app and settings shared by the test and its consumers --------

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

    def admin(self) -> AuthActions:
        """Another browser, with the school's admin logged in through the form (session and CSRF)."""
        return AuthActions.logged_in(self.app, ADMIN)

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
        with self.app.app_context(), db.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(statement), params)]

    def execute(self, statement: str, **params) -> int:
        """Run one writing SQL statement and commit it; how many rows it changed."""
        with self.app.app_context(), db.engine.begin() as conn:
            return conn.execute(text(statement), params).rowcount

    def scalar(self, statement: str, **params):
        rows = self.sql(statement, **params)
        return rows[0][0] if rows else None

    def consumer_env(self, **overrides) -> dict[str, str]:
        env = dict(self.env)
        env.update({k: str(v) for k, v in overrides.items()})
        return {**clean_environ(), **env}


def audience(school: School) -> set[str]:
    """Every address the whole school's event must reach, from the roster alone."""
    return {row[0] for row in school.sql(ADDRESSES)}


@pytest.fixture
def make_school(request, tmp_path_factory):
    """``make_school(students=0, database="sqlite"|"postgres", redis=None, smtp=None, language="en", **settings)``.

    Builds the database (migrated, seeded with ``seed_demo(students)``, every guardian speaking
    ``language``; None: the demo's mix of languages), the admin ``ADMIN`` with
    an API token, and the in-process app bound to the same database and queue as the consumers
    started with ``consumer(school)``. ``database="postgres"`` needs TEST_DATABASE_URL.
    """
    from school.roster.seed import seed_demo

    made: list[School] = []

    def factory(students: int = 0, database: str = "sqlite", redis: RedisServer | None = None,
                smtp: SmtpServer | None = None, language: str | None = "en", **settings) -> School:
        data_dir = tmp_path_factory.mktemp("school")
        if database == "postgres":
            database_url = request.getfixturevalue("pg_url")  # skips without TEST_DATABASE_URL
            # pg_url drops the database when the test ends, before later fixtures tear down: have
            # the consumers stop first, rather than fail over a database that is gone.
            request.node.addfinalizer(lambda: stop_consumers_of(request.node))
        else:
            assert database == "sqlite", database
            database_url = None  # the embedded default under DATA_DIR
        mail_port = {} if smtp else {"MAIL_PORT": free_port()}
        env = app_env(data_dir, database_url, redis, smtp, **{**SCHOOL_SETTINGS, **mail_port, **settings})
        app = build_app(env, testing=False)
        migrate(app)
        if students:
            with app.app_context():
                seed_demo(students, language=language)
        add_user(app, ADMIN)
        school = School(env=env, app=app, token=issue_token(app, ADMIN.email), data_dir=data_dir, redis=redis,
                        smtp=smtp)
        made.append(school)
        return school

    yield factory
    for school in made:
        close(school.app)
