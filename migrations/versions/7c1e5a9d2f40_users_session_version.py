"""users.session_version: changing a password or deactivating a user ends their sessions

Revision ID: 7c1e5a9d2f40
Revises: 5c1e0a7d9b21
Create Date: 2026-12-03 17:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7c1e5a9d2f40'
down_revision = '5c1e0a7d9b21'
branch_labels = None
depends_on = None


def upgrade():
    # Existing users start at 0; sessions issued before this change carry no version and end once.
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_version')
