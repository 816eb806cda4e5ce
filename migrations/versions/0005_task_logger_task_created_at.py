"""task_logger.task_created_at: the date view's order read from the log's own index.

A copy of task_manager.created_at (which never changes once a task exists), backfilled here and
filled by the loader from now on, indexed with (log_date, ..., task_id) so that a page of a big
day walks the index and stops after OFFSET + LIMIT entries instead of joining and sorting the day.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 10:02:41.118230

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    # Nullable first: existing rows get their value from their task below.
    with op.batch_alter_table('task_logger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('task_created_at', sa.DateTime(timezone=True), nullable=True))

    if op.get_bind().dialect.name == 'postgresql':
        op.execute(
            'UPDATE task_logger SET task_created_at = task_manager.created_at '
            'FROM task_manager WHERE task_manager.id = task_logger.task_id'
        )
    else:
        op.execute(
            'UPDATE task_logger SET task_created_at = '
            '(SELECT created_at FROM task_manager WHERE task_manager.id = task_logger.task_id)'
        )

    with op.batch_alter_table('task_logger', schema=None) as batch_op:
        batch_op.alter_column('task_created_at', existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.create_index('ix_task_logger_log_date_task_created_at_task_id', ['log_date', 'task_created_at', 'task_id'], unique=False)


def downgrade():
    with op.batch_alter_table('task_logger', schema=None) as batch_op:
        batch_op.drop_index('ix_task_logger_log_date_task_created_at_task_id')
        batch_op.drop_column('task_created_at')
