"""ledger search: trigram indexes on lower(email) and lower(name) of notifications (PostgreSQL), so
a search by part of a name or address finds its rows without reading every row of a large job

SQLite has no such index; its search reads the job's rows, which is fast enough at a school's size.
Where the pg_trgm extension cannot be created (no privilege), the upgrade goes on without the
indexes: search still works, only slower.

Revision ID: d5f1b2c8e9a3
Revises: c4e8a1d7b3f2
Create Date: 2026-12-03 20:10:00

"""
import logging

from alembic import op
from sqlalchemy import exc, text


revision = 'd5f1b2c8e9a3'
down_revision = 'c4e8a1d7b3f2'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")
INDEXES = {"ix_notifications_email_trgm": "email", "ix_notifications_name_trgm": "name"}


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        with bind.begin_nested():
            bind.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except exc.DBAPIError as error:
        log.warning("pg_trgm is not available (%s): ledger search will read every row of a job",
                    str(error.orig).strip())
        return
    for name, column in INDEXES.items():
        bind.execute(text(f"CREATE INDEX IF NOT EXISTS {name} ON notifications "
                          f"USING gin (lower({column}) gin_trgm_ops)"))


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
