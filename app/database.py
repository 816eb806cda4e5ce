"""Engine set-up that the extensions do not do themselves: SQLite pragmas, start-up retry."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

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
