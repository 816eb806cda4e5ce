"""task_logger partitioned by month on PostgreSQL, so that old days go by dropping a partition
(#25 "A log that grows for years").

The loader adds every active task every day: at 10 million tasks about 3 billion rows a year.
In one table, removing old days is a DELETE of billions of rows (and the bloat after it); with a
partition per month (`task_logger_yYYYYmMM`, RANGE on log_date, [1st, next 1st)) a month goes
with a DROP TABLE, and every read of the log, which names its day, reads one partition.

What a partitioned table requires, and what it keeps:
- Every unique constraint must hold the partition key: the primary key becomes (id, log_date);
  id still comes from task_logger_id_seq (the same sequence, carried over), so ids stay unique.
  uq_task_logger_task_id_log_date (the loader's conflict target) holds it already.
- The indexes are made on the parent, which makes them on every partition, present and future.
- There is no default partition: a row for a month without a partition fails. The loader makes
  its day's month and the next one before it logs (app/repositories/log_partitions.py), and this
  migration makes the months of the existing rows, the current month and the next one.

The upgrade moves the existing rows: the old table is renamed, the new one created, the rows
copied in one INSERT ... SELECT, the old table dropped, and then the constraints and indexes
built (faster than filling them row by row). task_logger is locked meanwhile: minutes at
hundreds of millions of rows. The downgrade moves them back into one plain table.

SQLite keeps one table: nothing to do there.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10 09:00:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

OLD = 'task_logger_unpartitioned'
# The indexes and index-backed constraints, whose names are unique in the schema: the old
# table's are renamed out of the way before the new table takes them.
INDEXES = {
    'ix_task_logger_log_date_task_created_at_task_id': '(log_date, task_created_at, task_id)',
    'ix_task_logger_log_date_assigned_user_id': (
        '(log_date, assigned_user_id, task_created_at, task_id)'
    ),
}
CONSTRAINTS = ('pk_task_logger', 'uq_task_logger_task_id_log_date')
FOREIGN_KEY = (
    'fk_task_logger_task_id_task_manager',
    'FOREIGN KEY (task_id) REFERENCES task_manager (id) ON DELETE CASCADE',
)

# The months from the oldest row's (or this one) to the one after the newest row's (or after
# this one), as [first day, first day of the next month).
MONTHS = """
SELECT month::date, (month + interval '1 month')::date
FROM generate_series(
    date_trunc('month', LEAST(current_date, (SELECT min(log_date) FROM task_logger_unpartitioned))),
    date_trunc('month', GREATEST(current_date, (SELECT max(log_date) FROM task_logger_unpartitioned)))
        + interval '1 month',
    interval '1 month'
) AS month
"""


def _postgresql():
    return op.get_bind().dialect.name == 'postgresql'


def _rename_out_of_the_way(table, suffix):
    for name in CONSTRAINTS:
        op.execute(f'ALTER TABLE {table} RENAME CONSTRAINT {name} TO {name}{suffix}')
    for name in INDEXES:
        op.execute(f'ALTER INDEX {name} RENAME TO {name}{suffix}')


def _constraints_and_indexes(primary_key):
    op.execute(f'ALTER TABLE task_logger ADD CONSTRAINT pk_task_logger PRIMARY KEY {primary_key}')
    op.execute(
        'ALTER TABLE task_logger ADD CONSTRAINT uq_task_logger_task_id_log_date '
        'UNIQUE (task_id, log_date)'
    )
    op.execute(f'ALTER TABLE task_logger ADD CONSTRAINT {FOREIGN_KEY[0]} {FOREIGN_KEY[1]}')
    for name, columns in INDEXES.items():
        op.execute(f'CREATE INDEX {name} ON task_logger {columns}')


def upgrade():
    if not _postgresql():
        return
    op.execute(f'ALTER TABLE task_logger RENAME TO {OLD}')
    _rename_out_of_the_way(OLD, '_unpartitioned')
    # Columns, NOT NULLs, CHECKs and the id's default (nextval of task_logger_id_seq).
    op.execute(
        f'CREATE TABLE task_logger (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) '
        'PARTITION BY RANGE (log_date)'
    )
    # The sequence belongs to the new id column, so that dropping the old table keeps it.
    op.execute('ALTER SEQUENCE task_logger_id_seq OWNED BY task_logger.id')
    for first, following in op.get_bind().exec_driver_sql(MONTHS).all():
        op.execute(
            f'CREATE TABLE task_logger_y{first.year:04d}m{first.month:02d} '
            f"PARTITION OF task_logger FOR VALUES FROM ('{first}') TO ('{following}')"
        )
    op.execute(f'INSERT INTO task_logger SELECT * FROM {OLD}')
    op.execute(f'DROP TABLE {OLD}')
    _constraints_and_indexes('(id, log_date)')
    op.execute('ANALYZE task_logger')


def downgrade():
    if not _postgresql():
        return
    op.execute(f'ALTER TABLE task_logger RENAME TO {OLD}')
    _rename_out_of_the_way(OLD, '_partitioned')
    op.execute(f'CREATE TABLE task_logger (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
    op.execute('ALTER SEQUENCE task_logger_id_seq OWNED BY task_logger.id')
    op.execute(f'INSERT INTO task_logger SELECT * FROM {OLD}')
    op.execute(f'DROP TABLE {OLD}')  # and its partitions
    _constraints_and_indexes('(id)')
    op.execute('ANALYZE task_logger')
