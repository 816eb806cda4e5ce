"""Every order and filter of the task list and of the date view, and the search, served by an
index on PostgreSQL (#24 "Flat at 10 million tasks").

A first page in any order of SORTABLE_COLUMNS walks an index and stops after OFFSET + LIMIT
entries instead of sorting every task; a search (`q`) reads the tasks that contain its trigrams
instead of scanning every row the other filters leave.

task_manager.priority_rank (new): SMALLINT GENERATED ALWAYS AS (CASE priority WHEN 'LOW' THEN 0
... WHEN 'CRITICAL' THEN 3 ELSE NULL END) STORED, NOT NULL (the CHECK on priority leaves no
other value): the list's `priority` order (LOW < MEDIUM < HIGH < CRITICAL, not the names'
alphabetical one) as a column an index can hold. A CASE in the ORDER BY, with its values bound
as parameters, never matches an expression index.

The sort indexes cover every task, not only live ones, so that the admins' deleted=include is
served too; they INCLUDE deleted_at (PostgreSQL), so a list of live tasks skips the few deleted
ones on the index alone. Ties are broken by id, newest first unless the sort says otherwise:

- ix_task_manager_task_name_id (task_name, id): sort=-task_name read backward; sort=task_name
  (task_name ASC, id DESC) read forward, each run of one name re-sorted by id (an Incremental
  Sort of a few rows).
- ix_task_manager_updated_at_id (updated_at, id): sort=updated_at and -updated_at, likewise.
- ix_task_manager_status_id (status, id): sort=-status (backward) and status,id; and the live
  status filter in id order, for which it replaces 0007's partial ix_task_manager_live_status_id.
- ix_task_manager_status_id_desc (status, id DESC): sort=status (status ASC, id DESC) and
  -status,id. A status is a run of millions: an Incremental Sort would sort a whole run.
- ix_task_manager_priority_rank_id (priority_rank, id): sort=-priority (backward), priority,id.
- ix_task_manager_priority_rank_id_desc (priority_rank, id DESC): sort=priority, -priority,id.
- ix_task_manager_due_date_id (due_date ASC NULLS LAST, id DESC): sort=due_date, tasks without a
  due date last; and the due_from / due_to ranges, for which it replaces ix_task_manager_due_date.
- ix_task_manager_due_date_desc_id (due_date DESC NULLS LAST, id DESC), PostgreSQL only (SQLite's
  CREATE INDEX has no NULLS LAST): sort=-due_date, tasks without a due date last too (the index
  above read backward would put them first).
- ix_task_manager_task_name_trgm, ix_task_manager_description_trgm, PostgreSQL only: GIN
  (gin_trgm_ops) over every task (admins search deleted tasks too): `q`, i.e. `task_name ILIKE
  '%q%' OR description ILIKE '%q%'`, a BitmapOr of the two. A term without 3 letters or digits in
  a row (any term of 1 or 2 characters) has no trigram to look up: it is a filter on the rows
  the other filters' and the order's indexes give, and a rare one reads them all.
- ix_task_logger_log_date_assigned_user_id (log_date, assigned_user_id, task_created_at,
  task_id): the date view's assigned_user=X (or none), which filters the day's snapshot, in its
  default order; without it the page of an assignee with few tasks walks the whole day.

Dropped: ix_task_manager_live_status_id and ix_task_manager_due_date (see above).

Served by earlier indexes: sort=id and created_at (0006; deleted=include: the primary key,
ix_task_manager_created_at); the status / priority filters (0007); a user's scope
(assigned_user_id = :u OR created_by_id = :u: a BitmapOr of their indexes); assigned_user,
created_from / created_to (created_at); deleted=only (ix_task_manager_deleted_id); the date
view's day (task_logger's indexes that lead with log_date). The date view in a task's order (the
join path) walks task_manager's index for that order and finds each task's entry of the day on
uq_task_logger_task_id_log_date.

Every index costs every write, and updated_at's, which every update changes, means that no
update of a task is a HOT update any more: each one adds an entry to each of the table's indexes.
The log's new index costs the loader one more entry per row it logs.

On PostgreSQL, adding the stored column rewrites task_manager and the indexes are built with
plain CREATE INDEX: the table is locked for writes (during the rewrite for reads too) until the
migration commits; minutes at 10 million tasks. pg_trgm is a trusted extension (PostgreSQL 13+):
the database's owner creates it without superuser rights. The downgrade leaves it installed (it
may predate this migration or serve something else).

On SQLite the column is added by rebuilding task_manager (ALTER TABLE cannot add a STORED
column), with foreign keys off: with them on, dropping the old table would delete the tasks'
audit and log rows (ON DELETE CASCADE).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 09:00:00.000000

"""
from contextlib import contextmanager

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

LIVE = sa.text('deleted_at IS NULL')
INCLUDED = ['deleted_at']
PRIORITY_RANK = (
    "CASE priority WHEN 'LOW' THEN 0 WHEN 'MEDIUM' THEN 1 WHEN 'HIGH' THEN 2 "
    "WHEN 'CRITICAL' THEN 3 ELSE NULL END"
)
# (name, columns) made on both backends.
PORTABLE_INDEXES = (
    ('ix_task_manager_task_name_id', ['task_name', 'id']),
    ('ix_task_manager_updated_at_id', ['updated_at', 'id']),
    ('ix_task_manager_status_id', ['status', 'id']),
    ('ix_task_manager_priority_rank_id', ['priority_rank', 'id']),
    ('ix_task_manager_status_id_desc', ['status', sa.text('id DESC')]),
    ('ix_task_manager_priority_rank_id_desc', ['priority_rank', sa.text('id DESC')]),
    ('ix_task_manager_due_date_id', ['due_date', sa.text('id DESC')]),
)
POSTGRESQL_INDEXES = (
    (
        'ix_task_manager_due_date_desc_id',
        [sa.text('due_date DESC NULLS LAST'), sa.text('id DESC')],
    ),
)
TRIGRAM_COLUMNS = ('task_name', 'description')
LOG_ASSIGNEE_INDEX = 'ix_task_logger_log_date_assigned_user_id'


def _postgresql():
    return op.get_bind().dialect.name == 'postgresql'


def _set_sqlite_foreign_keys(on):
    # The pragma is a no-op inside a transaction: commit, set it, begin again.
    with op.get_context().autocommit_block():
        op.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


@contextmanager
def _task_manager_rebuilt_safely():
    """Foreign keys off on SQLite while task_manager is rebuilt, then checked and back on."""
    sqlite = op.get_bind().dialect.name == 'sqlite'
    if sqlite:
        _set_sqlite_foreign_keys(False)
    yield
    if sqlite:
        dangling = op.get_bind().execute(sa.text('PRAGMA foreign_key_check')).fetchall()
        if dangling:
            raise RuntimeError(f'foreign keys left dangling: {dangling[:10]}')
        _set_sqlite_foreign_keys(True)


def upgrade():
    postgresql = _postgresql()
    if postgresql:
        op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')

    with _task_manager_rebuilt_safely():
        with op.batch_alter_table('task_manager', schema=None) as batch_op:
            batch_op.add_column(
                sa.Column(
                    'priority_rank',
                    sa.SmallInteger(),
                    sa.Computed(PRIORITY_RANK, persisted=True),
                    nullable=False,
                )
            )

    with op.batch_alter_table('task_manager', schema=None) as batch_op:
        for name, columns in PORTABLE_INDEXES:
            batch_op.create_index(name, columns, unique=False, postgresql_include=INCLUDED)
        # Their work is done by ix_task_manager_status_id and ix_task_manager_due_date_id.
        batch_op.drop_index('ix_task_manager_live_status_id')
        batch_op.drop_index('ix_task_manager_due_date')

    with op.batch_alter_table('task_logger', schema=None) as batch_op:
        batch_op.create_index(
            LOG_ASSIGNEE_INDEX,
            ['log_date', 'assigned_user_id', 'task_created_at', 'task_id'],
            unique=False,
        )

    if postgresql:
        for name, columns in POSTGRESQL_INDEXES:
            op.create_index(
                name, 'task_manager', columns, unique=False, postgresql_include=INCLUDED
            )
        for column in TRIGRAM_COLUMNS:
            op.create_index(
                f'ix_task_manager_{column}_trgm',
                'task_manager',
                [column],
                unique=False,
                postgresql_using='gin',
                postgresql_ops={column: 'gin_trgm_ops'},
            )


def downgrade():
    with op.batch_alter_table('task_logger', schema=None) as batch_op:
        batch_op.drop_index(LOG_ASSIGNEE_INDEX)

    if _postgresql():
        for column in reversed(TRIGRAM_COLUMNS):
            op.drop_index(f'ix_task_manager_{column}_trgm', table_name='task_manager')
        for name, _ in reversed(POSTGRESQL_INDEXES):
            op.drop_index(name, table_name='task_manager')

    with op.batch_alter_table('task_manager', schema=None) as batch_op:
        batch_op.create_index('ix_task_manager_due_date', ['due_date'], unique=False)
        batch_op.create_index(
            'ix_task_manager_live_status_id',
            ['status', 'id'],
            unique=False,
            postgresql_where=LIVE,
            sqlite_where=LIVE,
        )
        for name, _ in reversed(PORTABLE_INDEXES):
            batch_op.drop_index(name)

    with _task_manager_rebuilt_safely():
        with op.batch_alter_table('task_manager', schema=None) as batch_op:
            batch_op.drop_column('priority_rank')
