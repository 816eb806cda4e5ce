"""SQLite's stand-in for row locks."""

from __future__ import annotations

from typing import Any

from app.extensions import db


def lock_sqlite_for_writing() -> None:
    """SQLite has no row locks (it ignores FOR UPDATE): take the database's write lock instead,
    with BEGIN IMMEDIATE, which holds off every other writer until this transaction ends
    (readers go on: WAL). Without it, a write decided on a read could lose a race to another
    writer that committed in between. Nothing on PostgreSQL, whose FOR UPDATE locks the rows."""
    if db.engine.dialect.name != "sqlite":
        return
    connection = db.session.connection()
    dbapi_connection: Any = connection.connection.dbapi_connection
    if not dbapi_connection.in_transaction:  # a transaction that has written holds it already
        connection.exec_driver_sql("BEGIN IMMEDIATE")
