"""ledger search: recipient_addresses, every address a notification row holds with its name and
both in lower case as one search string, filled from the rows already there; a trigram index on
that string on PostgreSQL, so a search by part of a name or address finds a large job's rows
without reading them all

SQLite has no such index; its search reads the addresses, which is fast enough at a school's size.
Where the pg_trgm extension cannot be created (no privilege), the upgrade goes on without the
indexes: search still works, only slower.

Revision ID: d5f1b2c8e9a3
Revises: c4e8a1d7b3f2
Create Date: 2026-12-03 20:25:00

"""
import logging

from alembic import op
import sqlalchemy as sa
from sqlalchemy import exc, text


revision = 'd5f1b2c8e9a3'
down_revision = 'c4e8a1d7b3f2'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")
INDEX = "ix_recipient_addresses_search_trgm"


def upgrade():
    op.create_table(
        'recipient_addresses',
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('search', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('email', name=op.f('pk_recipient_addresses')),
    )
    # One pass over the rows; one of an address's names (the next notice to it writes its current one).
    op.execute("INSERT INTO recipient_addresses (email, name, search) "
               "SELECT email, max(name), lower(max(name) || ' ' || email) FROM notifications GROUP BY email")
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        with bind.begin_nested():
            bind.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except exc.DBAPIError as error:
        log.warning("pg_trgm is not available (%s): ledger search will read every address",
                    str(error.orig).strip())
        return
    bind.execute(text(f"CREATE INDEX {INDEX} ON recipient_addresses USING gin (search gin_trgm_ops)"))


def downgrade():
    op.drop_table('recipient_addresses')  # its indexes go with it
