"""the family side: opt-outs and languages per address, acknowledgements and RSVPs per recipient,
their counters per job, whether an event asks for an RSVP, and reminders as follow-up jobs

Revision ID: a7f3c2e91b05
Revises: f29079db1434
Create Date: 2026-12-03 18:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'a7f3c2e91b05'
down_revision = 'f29079db1434'
branch_labels = None
depends_on = None

JOB_COUNTERS = ('opted_out', 'acknowledged', 'rsvp_yes', 'rsvp_no', 'rsvp_maybe')


def upgrade():
    op.create_table(
        'address_preferences',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('opted_out_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('language', sa.String(length=10), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_address_preferences')),
        sa.UniqueConstraint('email', name=op.f('uq_address_preferences_email')),
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rsvp', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('notification_jobs', schema=None) as batch_op:
        for name in JOB_COUNTERS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('follow_up_of_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('follow_up_who', sa.String(length=20), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_notification_jobs_follow_up_of_id_notification_jobs'),
                                    'notification_jobs', ['follow_up_of_id'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('rsvp', sa.String(length=5), nullable=True))
        # A family's page lists the same address's other notices.
        batch_op.create_index('ix_notifications_email', ['email'], unique=False)


def downgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_email')
        batch_op.drop_column('rsvp')
        batch_op.drop_column('acknowledged_at')
    with op.batch_alter_table('notification_jobs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_notification_jobs_follow_up_of_id_notification_jobs'),
                                 type_='foreignkey')
        batch_op.drop_column('follow_up_who')
        batch_op.drop_column('follow_up_of_id')
        for name in reversed(JOB_COUNTERS):
            batch_op.drop_column(name)
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('rsvp')
    op.drop_table('address_preferences')
