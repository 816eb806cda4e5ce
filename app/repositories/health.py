"""Connectivity checks."""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db

log = logging.getLogger(__name__)


def database_is_reachable() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError as exc:
        log.warning("database check failed: %s", exc.__class__.__name__)
        # The connection may be gone: the session is closed at teardown anyway.
        with contextlib.suppress(SQLAlchemyError):
            db.session.rollback()
        return False
