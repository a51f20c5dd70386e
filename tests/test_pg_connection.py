"""A PostgreSQL link that hangs ends in an error the caller can handle, not a thread stuck for minutes:
a statement that runs past DATABASE_STATEMENT_TIMEOUT is canceled, and a server that never answers
the connection fails it after DATABASE_CONNECT_TIMEOUT."""
import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from school.extensions import db
from tests.support.host import free_port
from tests.support.school import app_env, build_app, close


def test_a_statement_past_the_timeout_is_canceled(app_on, pg_url):
    app = app_on(pg_url, DATABASE_STATEMENT_TIMEOUT="1")
    with app.app_context():
        assert db.session.scalar(text("SELECT 1")) == 1
        with pytest.raises(OperationalError, match="statement timeout"):
            db.session.execute(text("SELECT pg_sleep(30)"))
        db.session.rollback()
        # The connection is still good for the next statement.
        assert db.session.scalar(text("SELECT 2")) == 2


def test_connections_carry_tcp_keepalives(app_on, pg_url):
    app = app_on(pg_url)
    with app.app_context(), db.engine.connect() as conn:
        params = conn.connection.dbapi_connection.info.get_parameters()
    assert (params["keepalives"], params["keepalives_idle"], params["keepalives_count"]) == ("1", "10", "3")


def first_query(tmp_path, port: int) -> BaseException | None:
    """Run one query against 127.0.0.1:``port`` with a two-second connect timeout; what it raised
    (None if it is still waiting after 30 s)."""
    app = build_app(app_env(tmp_path, f"postgresql+psycopg://school@127.0.0.1:{port}/school",
                            DATABASE_CONNECT_TIMEOUT="2"))
    outcome: list[BaseException] = []

    def query():
        with app.app_context():
            try:
                db.session.execute(text("SELECT 1"))
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                outcome.append(exc)

    thread = threading.Thread(target=query, daemon=True)
    thread.start()
    thread.join(30)
    close(app)
    return outcome[0] if outcome else None


def test_a_server_that_never_answers_fails_the_connection(tmp_path, silent_listener):
    port = free_port()
    silent_listener(port)  # accepts the TCP connection, then says nothing
    assert isinstance(first_query(tmp_path, port), OperationalError)


def test_a_closed_port_fails_the_connection(tmp_path):
    assert isinstance(first_query(tmp_path, free_port()), OperationalError)
