"""left-out recipients on the ledger: a notification row may stand outside any batch (an address
that opted out of normal notices is written with status opted_out and no batch)

Revision ID: c4e8a1d7b3f2
Revises: a7f3c2e91b05
Create Date: 2026-12-03 20:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'c4e8a1d7b3f2'
down_revision = 'a7f3c2e91b05'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.alter_column('batch_id', existing_type=sa.Integer(), nullable=True)


def downgrade():
    # Rows outside a batch cannot exist below this revision; the job keeps their count.
    op.execute("DELETE FROM notifications WHERE batch_id IS NULL")
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.alter_column('batch_id', existing_type=sa.Integer(), nullable=False)
