"""Engine settings that the two databases need to share work between the web app and consumers."""
from flask import Flask
from sqlalchemy import event

from .extensions import db

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_connect(dbapi_connection, _record):
    # Let SQLAlchemy, not the driver, decide where transactions begin (see _sqlite_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection):
    """Take SQLite's write lock when a transaction starts.

    A deferred transaction that reads and later writes fails at once with "database is locked" when
    another process wrote in between, whatever the busy timeout; an immediate one waits its turn.
    Streaming readers ask for ``sqlite_readonly`` so they never hold the lock.
    """
    if connection.get_execution_options().get("sqlite_readonly"):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _postgres_relaxed_commit(dbapi_connection, _record):
    """Consumers commit once per message sent. Everything they write can be rebuilt from the
    rows (a lost "sent" mark means one resend, with the same Message-ID), so they need not wait
    for each commit to reach disk; the web app's writes (new events) still do."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
    dbapi_connection.commit()


def init_app(app: Flask) -> None:
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    elif engine.dialect.name == "postgresql" and app.config.get("CONSUMER"):
        event.listen(engine, "connect", _postgres_relaxed_commit)

