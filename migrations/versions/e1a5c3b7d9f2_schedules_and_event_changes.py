"""schedules and event changes: a job's send_at, an event's reminders, and what an event keeps of
its changes (calendar sequence, cancellation, the original a follow-up notice is about)

Revision ID: e1a5c3b7d9f2
Revises: c4e8b1d5a3f7
Create Date: 2026-12-04 04:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'e1a5c3b7d9f2'
down_revision = 'c4e8b1d5a3f7'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sequence', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('canceled_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('original_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('changes', sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f('ix_events_original_id'), ['original_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_events_original_id_events'), 'events', ['original_id'], ['id'],
                                    ondelete='CASCADE')
    with op.batch_alter_table('notification_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('send_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_notification_jobs_send_at'), ['send_at'], unique=False)
    op.create_table(
        'event_reminders',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.Integer(), nullable=False),
        sa.Column('before_seconds', sa.Integer(), nullable=False),
        sa.Column('to', sa.String(length=20), nullable=False),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_event_reminders_event_id_events'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['job_id'], ['notification_jobs.id'],
                                name=op.f('fk_event_reminders_job_id_notification_jobs'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_event_reminders')),
        sa.UniqueConstraint('event_id', 'before_seconds', 'to', name=op.f('uq_event_reminders_event_id')),
    )
    op.create_index(op.f('ix_event_reminders_event_id'), 'event_reminders', ['event_id'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_event_reminders_event_id'), table_name='event_reminders')
    op.drop_table('event_reminders')
    with op.batch_alter_table('notification_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notification_jobs_send_at'))
        batch_op.drop_column('send_at')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_events_original_id_events'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_events_original_id'))
        batch_op.drop_column('changes')
        batch_op.drop_column('original_id')
        batch_op.drop_column('canceled_at')
        batch_op.drop_column('updated_at')
        batch_op.drop_column('sequence')
