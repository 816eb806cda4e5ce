"""A user's own tasks read in the list's order from an index, and the indexes that no query
needs any more dropped (#24 "Flat at 10 million tasks").

A user sees the tasks assigned to them or created by them. Their first page (newest first) was
a BitmapOr of the two single-column indexes, every one of the user's tasks read from the table
and sorted: O(the user's tasks), which grows with the table. It is now two ranges, one per
index below, each read in the list's order and stopped after a page (app.repositories.tasks):

- ix_task_manager_assigned_user_id_created_at_id (assigned_user_id, created_at, id) INCLUDE
  (deleted_at) replaces ix_task_manager_assigned_user_id: the tasks assigned to a user (and the
  admins' assigned_user filter), newest first, live ones told apart on the index;
- ix_task_manager_created_by_id_created_at_id (created_by_id, created_at, id) INCLUDE
  (deleted_at, assigned_user_id) replaces ix_task_manager_created_by_id: the tasks a user
  created, those also assigned to them (already in the first range) skipped on the index.

Both still lead with the user's id, so the foreign keys' ON DELETE look-ups keep an index.

Dropped, since no query reads them:
- ix_task_manager_deleted_at and ix_task_manager_deleted_at_created_at (0001): live tasks are
  read from 0006's partial indexes (WHERE deleted_at IS NULL), deleted ones from
  ix_task_manager_deleted_id;
- ix_task_logger_log_date_id (0002): every read of one day's log leads with log_date on
  ix_task_logger_log_date_task_created_at_task_id. One index fewer for the loader to fill, one
  entry per logged row.

On PostgreSQL the indexes are built with plain CREATE INDEX: writes to task_manager wait until
the migration commits (a minute or two at 10 million tasks).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-09 09:00:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

# (new index, its columns, its INCLUDE columns, the single-column index it replaces, that column)
OWNER_INDEXES = (
    (
        'ix_task_manager_assigned_user_id_created_at_id',
        ['assigned_user_id', 'created_at', 'id'],
        ['deleted_at'],
        'ix_task_manager_assigned_user_id',
        'assigned_user_id',
    ),
    (
        'ix_task_manager_created_by_id_created_at_id',
        ['created_by_id', 'created_at', 'id'],
        ['deleted_at', 'assigned_user_id'],
        'ix_task_manager_created_by_id',
        'created_by_id',
    ),
)


def upgrade():
    for name, columns, included, replaced, _ in OWNER_INDEXES:
        op.create_index(name, 'task_manager', columns, unique=False, postgresql_include=included)
        op.drop_index(replaced, table_name='task_manager')
    op.drop_index('ix_task_manager_deleted_at_created_at', table_name='task_manager')
    op.drop_index('ix_task_manager_deleted_at', table_name='task_manager')
    op.drop_index('ix_task_logger_log_date_id', table_name='task_logger')


def downgrade():
    op.create_index('ix_task_logger_log_date_id', 'task_logger', ['log_date', 'id'], unique=False)
    op.create_index('ix_task_manager_deleted_at', 'task_manager', ['deleted_at'], unique=False)
    op.create_index(
        'ix_task_manager_deleted_at_created_at',
        'task_manager',
        ['deleted_at', 'created_at'],
        unique=False,
    )
    for name, _, _, replaced, column in reversed(OWNER_INDEXES):
        op.create_index(replaced, 'task_manager', [column], unique=False)
        op.drop_index(name, table_name='task_manager')
