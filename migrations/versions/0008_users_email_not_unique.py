"""Email addresses are contact information, not identities: drop the uniqueness of users.email.

Logins are by username. A unique address made `POST /register` and `PATCH /me` answer 409 for an
address some account already has, so anyone could learn whether it has an account here; and
whoever registered an address first could block the accounts that need it later (`flask
create-admin` with ADMIN_EMAIL, the CSV import's placeholder `<username>@import.invalid`). No
query looks an account up by email, so no index takes the constraint's place.

On SQLite the constraint goes by rebuilding the table (batch mode), with foreign keys off: with
them on, dropping the old `users` table would run its referencing tables' ON DELETE actions
(sessions deleted, task assignees set to NULL) or fail on RESTRICT. The downgrade puts the
constraint back, and refuses to run while two accounts share an address.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 10:00:00.000000

"""
from contextlib import contextmanager

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def _set_sqlite_foreign_keys(on):
    # The pragma is a no-op inside a transaction: commit, set it, begin again.
    with op.get_context().autocommit_block():
        op.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


@contextmanager
def _users_table_rebuilt_safely():
    """Foreign keys off on SQLite while `users` is rebuilt, then checked and back on. (If the
    rebuild fails, its transaction is rolled back and the command ends with its connection.)"""
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
    with _users_table_rebuilt_safely():
        with op.batch_alter_table('users', schema=None) as batch_op:
            batch_op.drop_constraint(batch_op.f('uq_users_email'), type_='unique')


def _refuse_shared_addresses():
    # Checked first: a failed rebuild would leave SQLite's half-built temporary table behind.
    shared = op.get_bind().execute(
        sa.text('SELECT email FROM users GROUP BY email HAVING COUNT(*) > 1 LIMIT 5')
    ).scalars().all()
    if shared:
        raise RuntimeError(
            f'cannot make users.email unique: accounts share the addresses {shared} (and maybe '
            'more); give them addresses of their own first'
        )


def downgrade():
    _refuse_shared_addresses()
    with _users_table_rebuilt_safely():
        with op.batch_alter_table('users', schema=None) as batch_op:
            batch_op.create_unique_constraint(batch_op.f('uq_users_email'), ['email'])
