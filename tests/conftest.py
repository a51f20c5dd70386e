"""Fixtures shared by every test module.

Each test gets its own app: a fresh ``DATA_DIR``, a database built by the migrations (SQLite by
default, PostgreSQL through ``pg_url`` when ``TEST_DATABASE_URL`` is set), its own Huey queue name
and CSRF protection left on, so tests post forms the way a browser does.
"""
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import flask_migrate
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from school import config, create_app
from school.extensions import db

from .pages import csrf_token

# Real-service fixtures (redis_server, smtp_server, consumer, …) live in tests/services.py.
pytest_plugins = ["tests.services"]


# --- building apps ----------------------------------------------------------------------------

def settings(data_dir: Path, database_url: str, **env) -> dict:
    """The settings a process started with only these variables would get.

    Built through ``config.load`` from a clean environment, so whatever the shell running the tests
    exports (DATABASE_URL, REDIS_URL …) cannot leak in.
    """
    loaded = config.load({
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "HUEY_NAME": f"test-{secrets.token_hex(6)}",
        "SECRET_KEY": secrets.token_hex(16),
        **env,
    })
    return loaded | {"TESTING": True}


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
        app = create_app(settings(tmp_path_factory.mktemp("data"), database_url, **env))
        built.append(app)
        with app.app_context():
            flask_migrate.upgrade()
        return app

    yield build
    for app in built:
        close(app)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'school.db'}"


@pytest.fixture
def pg_url():
    """A fresh, uniquely named PostgreSQL database for one test, dropped afterwards."""
    base = os.environ.get("TEST_DATABASE_URL")
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


@pytest.fixture
def app(app_on, sqlite_url):
    # No app context is held here: a request made while the test holds one would share its `g`
    # and database session, hiding bugs. Tests that touch the database open their own.
    return app_on(sqlite_url)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


# --- people who log in ------------------------------------------------------------------------

@dataclass(frozen=True)
class Login:
    email: str
    password: str
    role: str


def add_user(app, email: str, password: str, role: str) -> Login:
    from school.auth.services import save_user

    with app.app_context():
        save_user(email, password, role)
    return Login(email, password, role)


@pytest.fixture
def admin_user(app) -> Login:
    return add_user(app, "head@school.example.org", "admin-password-1", "admin")


@pytest.fixture
def staff_user(app) -> Login:
    return add_user(app, "office@school.example.org", "staff-password-1", "staff")


class AuthActions:
    """Log in and out through the real form, CSRF token included."""

    def __init__(self, client):
        self.client = client

    def csrf(self, path: str = "/") -> str:
        """The token a browser would have from this page (anonymous users land on the login form)."""
        response = self.client.get(path, follow_redirects=True)
        assert response.status_code == 200, f"GET {path} gave {response.status_code}"
        return csrf_token(response.data)

    def post(self, path: str, data: dict | None = None, **kwargs):
        """Submit a form as the page would, with the session's CSRF token."""
        return self.client.post(path, data={**(data or {}), "csrf_token": self.csrf()}, **kwargs)

    def login(self, email: str, password: str, **params):
        return self.post("/login", {"email": email, "password": password}, query_string=params)

    def login_as(self, user: Login):
        response = self.login(user.email, user.password)
        assert response.status_code == 302, f"{user.email} could not log in"
        return response

    def logout(self):
        return self.post("/logout")


@pytest.fixture
def auth(client, admin_user, staff_user) -> AuthActions:
    return AuthActions(client)


@pytest.fixture
def session_as(app, admin_user, staff_user):
    """``session_as(user)``: another browser, logged in as that user."""

    def open_session(user: Login) -> AuthActions:
        actions = AuthActions(app.test_client())
        actions.login_as(user)
        return actions

    return open_session


@pytest.fixture
def row_count(app):
    """``row_count(Model)``: how many rows the table holds right now."""
    from sqlalchemy import func, select

    def count(model) -> int:
        with app.app_context():
            return db.session.scalar(select(func.count()).select_from(model))

    return count


# --- a school ---------------------------------------------------------------------------------

@pytest.fixture
def seeded(app):
    """A small deterministic demo school (120 students over 12 grades)."""
    from school.roster.seed import seed_demo

    with app.app_context():
        return seed_demo(120)
