"""bounces and complaints: the reports received, suppressed addresses, and the jobs' suppressed
and bounced counters

Revision ID: c4e8b1d5a3f7
Revises: c4e8b1d2a9f6
Create Date: 2026-12-03 20:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'c4e8b1d5a3f7'
down_revision = 'c4e8b1d2a9f6'
branch_labels = None
depends_on = None

JOB_COUNTERS = ('suppressed', 'bounced')


def upgrade():
    op.create_table(
        'bounce_reports',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=True),
        sa.Column('diagnostic', sa.Text(), nullable=True),
        sa.Column('source', sa.String(length=20), nullable=False),
        sa.Column('notification_id', sa.Integer(), nullable=True),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_bounce_reports')),
    )
    op.create_index('ix_bounce_reports_email_received', 'bounce_reports', ['email', 'received_at'], unique=False)
    op.create_table(
        'suppressions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('since', sa.DateTime(timezone=True), nullable=False),
        sa.Column('lifted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('lifted_why', sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_suppressions')),
        sa.UniqueConstraint('email', name=op.f('uq_suppressions_email')),
    )
    with op.batch_alter_table('notification_jobs', schema=None) as batch_op:
        for name in JOB_COUNTERS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default='0'))


def downgrade():
    with op.batch_alter_table('notification_jobs', schema=None) as batch_op:
        for name in reversed(JOB_COUNTERS):
            batch_op.drop_column(name)
    op.drop_table('suppressions')
    op.drop_index('ix_bounce_reports_email_received', table_name='bounce_reports')
    op.drop_table('bounce_reports')
