"""ledger filter: the index on a job's rows by status also orders them by address, so a page of a
status filter on a large job (the ledger lists by address) reads that page's rows and no others

It replaces ix_notifications_job_status, whose (job_id, status) prefix it keeps for every query
that used it.

Revision ID: f3b9d2e6a1c4
Revises: e1a5c3b7d9f2
Create Date: 2026-12-04 04:40:00

"""
from alembic import op


revision = 'f3b9d2e6a1c4'
down_revision = 'e1a5c3b7d9f2'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_job_status_email', ['job_id', 'status', 'email'], unique=False)
        batch_op.drop_index('ix_notifications_job_status')


def downgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_job_status', ['job_id', 'status'], unique=False)
        batch_op.drop_index('ix_notifications_job_status_email')
