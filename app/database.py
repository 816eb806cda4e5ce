"""Engine set-up that the extensions do not do themselves: SQLite pragmas, pinging idle
PostgreSQL connections, read-only requests without a transaction, start-up retry."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

from flask import Flask, g, has_app_context
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.orm import Session

from app.extensions import db

log = logging.getLogger(__name__)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLite ignores foreign keys (and so ON DELETE CASCADE) unless asked, per connection.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()


READ_ONLY = "read_only"  # flask.g flag: the app context's session only reads (`read_only_session`)
_LAST_USED = "last_used"  # connection record info: time.monotonic() of its last check-in


def install_connection_rules(app: Flask, ping_idle_seconds: float) -> None:
    """PostgreSQL connections: ping one idle longer than `ping_idle_seconds`
    before handing it out (SQLAlchemy's pool_pre_ping pings every checkout: a round trip per
    request), and run read-only sessions in autocommit (`read_in_autocommit`)."""
    with app.app_context():
        engine = db.engine
    if engine.dialect.name == "postgresql":
        _install_rules(engine, ping_idle_seconds)


def _install_rules(engine: Engine, ping_idle_seconds: float) -> None:
    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle = time.monotonic() - record.info.get(_LAST_USED, 0.0)
        if idle <= ping_idle_seconds:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            dbapi_connection.rollback()
        except Exception as exc:
            # The pool discards this connection and hands out another (up to three times).
            raise DisconnectionError(f"idle connection is dead: {exc}") from exc

    @event.listens_for(engine, "checkin")
    def _mark_used(dbapi_connection: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()
        if getattr(dbapi_connection, "autocommit", False):
            dbapi_connection.autocommit = False


def read_only_session() -> None:
    """Flag the app context's session as read-only (see `read_in_autocommit`). The flag lives on
    the app context, not the session, so that flagging creates no session: a request that
    turns out to need none (a cache hit) never builds one."""
    setattr(g, READ_ONLY, True)


def end_read_only_session() -> None:
    """Unflag the app context's session and give its connection back now (it leaves autocommit
    on check-in), so that work done later in the same app context (tests, CLI) gets a
    transaction again."""
    if g.pop(READ_ONLY, False) and db.session.registry.has():
        db.session.close()


@event.listens_for(Session, "after_begin")
def read_in_autocommit(session: Session, _transaction: Any, connection: Connection) -> None:
    """The session of an app context flagged read-only (GET requests) runs its statements in
    autocommit: no BEGIN and no ROLLBACK round trips around its queries. Each statement still
    sees a consistent snapshot of its own. Set before the first statement, while the connection
    is idle; the check-in above turns it off again."""
    if connection.dialect.name != "postgresql" or not (has_app_context() and g.get(READ_ONLY)):
        return
    dbapi_connection = connection.connection.dbapi_connection
    if dbapi_connection is not None and not dbapi_connection.autocommit:
        dbapi_connection.autocommit = True


class DatabaseUnavailable(RuntimeError):
    pass


def wait_for_database(app: Flask, retries: int, backoff_seconds: float) -> None:
    """Try the database up to `retries` times with exponential backoff, so a service started
    together with its database (compose, a reboot) waits for it instead of crashing."""
    delay = backoff_seconds
    for attempt in range(1, retries + 1):
        try:
            with app.app_context(), db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return
        except OperationalError as exc:
            if attempt == retries:
                raise DatabaseUnavailable(
                    f"database not reachable after {retries} attempts: {exc.orig}"
                ) from exc
            log.warning(
                "database not reachable (attempt %d/%d), retrying in %.1fs", attempt, retries, delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 30)
