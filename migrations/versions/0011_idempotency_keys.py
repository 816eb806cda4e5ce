"""Idempotency keys: a retried write (`Idempotency-Key` header) is answered once (#25).

A client that loses the answer to `POST /task`, `POST /upload-csv` or `POST
/admin/jobs/daily-log` (a timeout, a dropped connection) cannot tell whether the work was done,
and retrying it blindly would create a second task or start a second job. With the header, the
first request claims (user_id, key) in this table before doing the work and stores its answer
after it; a retry with the same key and body gets that answer back instead of doing the work
again (app.services.idempotency).

- UNIQUE (user_id, key): the claim is an INSERT that only one of two concurrent requests wins;
  keys are per user. It leads with user_id, so ON DELETE CASCADE from users has an index.
- fingerprint: SHA-256 of the method, endpoint and content, so the same key with another
  request is refused rather than answered with the wrong answer.
- response_status NULL: the work is still in progress (or its request died; a retry may take
  the row over after a minute).
- expires_at, indexed: keys last 24 hours; the purge deletes by it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'idempotency_keys',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('response_status', sa.Integer(), nullable=True),
        sa.Column('response_body', sa.Text(), nullable=True),
        sa.Column('response_location', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['user_id'],
            ['users.id'],
            name=op.f('fk_idempotency_keys_user_id_users'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_idempotency_keys')),
        sa.UniqueConstraint('user_id', 'key', name=op.f('uq_idempotency_keys_user_id_key')),
    )
    op.create_index(
        op.f('ix_idempotency_keys_expires_at'), 'idempotency_keys', ['expires_at'], unique=False
    )


def downgrade():
    op.drop_index(op.f('ix_idempotency_keys_expires_at'), table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
