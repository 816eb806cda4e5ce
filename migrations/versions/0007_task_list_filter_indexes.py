"""Indexes for the filtered task list: live tasks by status, by priority and by both, each in
created_at and in id order, so that a filtered page (and its OFFSET) walks only the entries it
matches; they replace the plain status and priority indexes, which no query needs any more.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 15:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

LIVE = sa.text('deleted_at IS NULL')
FILTERS = (('status',), ('priority',), ('status', 'priority'))
ORDERS = (('created_at', 'id'), ('id',))


def _names():
    for filters in FILTERS:
        for order in ORDERS:
            columns = [*filters, *order]
            yield f"ix_task_manager_live_{'_'.join(columns)}", columns


def upgrade():
    with op.batch_alter_table('task_manager', schema=None) as batch_op:
        for name, columns in _names():
            batch_op.create_index(
                name, columns, unique=False, postgresql_where=LIVE, sqlite_where=LIVE
            )
        batch_op.drop_index('ix_task_manager_status')
        batch_op.drop_index('ix_task_manager_priority')


def downgrade():
    with op.batch_alter_table('task_manager', schema=None) as batch_op:
        batch_op.create_index('ix_task_manager_status', ['status'], unique=False)
        batch_op.create_index('ix_task_manager_priority', ['priority'], unique=False)
        for name, _ in _names():
            batch_op.drop_index(name)
