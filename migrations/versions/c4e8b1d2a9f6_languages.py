"""languages: each recipient's language, chosen when the fan-out writes the row, and events'
translations of their title, description and location

Revision ID: c4e8b1d2a9f6
Revises: d5f1b2c8e9a3
Create Date: 2026-12-03 20:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = 'c4e8b1d2a9f6'
down_revision = 'd5f1b2c8e9a3'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('translations', sa.JSON(), nullable=True))
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        # NULL on rows written before: they read in the school's language.
        batch_op.add_column(sa.Column('language', sa.String(length=10), nullable=True))


def downgrade():
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_column('language')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('translations')
