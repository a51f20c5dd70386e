"""Fixtures shared by every test module.

Each test gets its own app: a fresh ``DATA_DIR``, a database built by the migrations (SQLite by
default, PostgreSQL through ``pg_url`` when ``TEST_DATABASE_URL`` is set), its own Huey queue name
and CSRF protection left on, so tests post forms the way a browser does. How apps, schools and the
real services they talk to are built lives in ``tests/support``.
"""
import pytest

pytest.register_assert_rewrite("tests.support")

from tests.support.accounts import ADMIN, STAFF, AuthActions, Login, add_user  # noqa: E402

# Real-service fixtures (redis_server, smtp_server, consumer, make_school, chromium …).
pytest_plugins = [
    "tests.support.redis",
    "tests.support.smtp",
    "tests.support.consumers",
    "tests.support.school",
    "tests.support.browser",
]


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

@pytest.fixture
def admin_user(app) -> Login:
    return add_user(app, ADMIN)


@pytest.fixture
def staff_user(app) -> Login:
    return add_user(app, STAFF)


@pytest.fixture
def auth(client, admin_user, staff_user) -> AuthActions:
    return AuthActions(client)


@pytest.fixture
def session_as(app, admin_user, staff_user):
    """``session_as(user)``: another browser, logged in as that user."""
    return lambda user: AuthActions.logged_in(app, user)


@pytest.fixture
def row_count(app):
    """``row_count(Model)``: how many rows the table holds right now."""
    from sqlalchemy import func, select

    from school.extensions import db

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
