"""Covering indexes for the task list: live tasks in created_at or id order, with the status and
priority the list filters on, so that a page (and its OFFSET) is read from the index alone; and
the ids of soft-deleted tasks, which the date view probes for every log entry it walks.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 04:20:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

LIVE = sa.text('deleted_at IS NULL')
DELETED = sa.text('deleted_at IS NOT NULL')
INCLUDED = ['status', 'priority']


def upgrade():
    with op.batch_alter_table('task_manager', schema=None) as batch_op:
        batch_op.create_index(
            'ix_task_manager_live_created_at_id',
            ['created_at', 'id'],
            unique=False,
            postgresql_include=INCLUDED,
            postgresql_where=LIVE,
            sqlite_where=LIVE,
        )
        batch_op.create_index(
            'ix_task_manager_live_id',
            ['id'],
            unique=False,
            postgresql_include=INCLUDED,
            postgresql_where=LIVE,
            sqlite_where=LIVE,
        )
        batch_op.create_index(
            'ix_task_manager_deleted_id',
            ['id'],
            unique=False,
            postgresql_where=DELETED,
            sqlite_where=DELETED,
        )


def downgrade():
    with op.batch_alter_table('task_manager', schema=None) as batch_op:
        batch_op.drop_index('ix_task_manager_deleted_id')
        batch_op.drop_index('ix_task_manager_live_id')
        batch_op.drop_index('ix_task_manager_live_created_at_id')
