"""Engine settings that the two databases need to share work between the web app and consumers.

PostgreSQL keeps its default ``synchronous_commit=on`` for consumers too: a recipient's "sent" mark
is on disk before the next message goes, so a database crash can make a message go twice only for
the one recipient each worker thread was sending to. With ``off`` a crash took back the last
0.2-0.6 s of marks, and every message in them was sent again (see docs/reliability.md); the
synchronous commit costs about a quarter of the unthrottled send rate.
"""
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


def init_app(app: Flask) -> None:
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)

