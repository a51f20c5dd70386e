"""jobs can be held and wait out outages; recipients count their own deferrals

Revision ID: 5c1e0a7d9b21
Revises: 40d531fb305b
Create Date: 2026-12-03 17:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = '5c1e0a7d9b21'
down_revision = '40d531fb305b'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('notification_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('held_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('held_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('holds', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('waiting_for', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('waiting_since', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('notification_batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('outage_since', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deferrals', sa.Integer(), nullable=False, server_default='0'))


def downgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_column('deferrals')
    with op.batch_alter_table('notification_batches', schema=None) as batch_op:
        batch_op.drop_column('outage_since')
    with op.batch_alter_table('notification_jobs', schema=None) as batch_op:
        batch_op.drop_column('waiting_since')
        batch_op.drop_column('waiting_for')
        batch_op.drop_column('holds')
        batch_op.drop_column('held_until')
        batch_op.drop_column('held_reason')
