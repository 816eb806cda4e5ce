"""The Alembic migrations build the whole schema from nothing, tear it down again, and match the
models exactly (autogenerate would find nothing to do)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from apiflask import APIFlask
from flask_migrate import downgrade, upgrade
from sqlalchemy import Inspector, inspect, text

from app import MIGRATIONS_DIR
from app.extensions import db
from app.repositories import log_partitions
from tests.conftest import ThrowawayPostgresDatabase, require_postgres, side_app
from tests.conftest import test_settings as settings_for

APP_TABLES = {
    "users",
    "task_manager",
    "task_audit",
    "token_families",
    "refresh_tokens",
    "idempotency_keys",
}
# Every column the task list filters or sorts on must lead an index.
TASK_FILTER_COLUMNS = (
    "status",
    "priority",
    "assigned_user_id",
    "created_by_id",
    "created_at",
    "due_date",
)
# Foreign keys and other lookup columns that need an index of their own.
OTHER_INDEXED_COLUMNS = {
    "users": ("role",),
    "task_audit": ("task_id", "actor_id", "created_at"),
    "token_families": ("user_id",),
    "refresh_tokens": ("family_id", "user_id"),
    "idempotency_keys": ("expires_at",),  # user_id leads its unique (user_id, key)
}
# (table, columns) -> (referred table, ON DELETE)
EXPECTED_FOREIGN_KEYS = {
    ("task_manager", ("assigned_user_id",)): ("users", "SET NULL"),
    ("task_manager", ("created_by_id",)): ("users", "RESTRICT"),
    ("task_audit", ("task_id",)): ("task_manager", "CASCADE"),
    ("task_audit", ("actor_id",)): ("users", "SET NULL"),
    ("token_families", ("user_id",)): ("users", "CASCADE"),
    ("refresh_tokens", ("family_id",)): ("token_families", "CASCADE"),
    ("refresh_tokens", ("user_id",)): ("users", "CASCADE"),
    ("idempotency_keys", ("user_id",)): ("users", "CASCADE"),
}
UNIQUE_COLUMNS: dict[str, tuple[set[str | None], ...]] = {
    "users": ({"username"},),
    "refresh_tokens": ({"token_hash"},),
    "idempotency_keys": ({"user_id", "key"},),
}
# Contact information, not identities: unique, they told who has an account (0008).
NOT_UNIQUE_COLUMNS: dict[str, tuple[set[str | None], ...]] = {"users": ({"email"},)}


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[APIFlask]:
    """An app bound to an empty database of its own: no tables at all."""
    throwaway: ThrowawayPostgresDatabase | None = None
    if request.param == "postgresql":
        require_postgres()
        throwaway = ThrowawayPostgresDatabase(prefix="mediaamp_migrations")
        url = throwaway.create()
    else:
        url = f"sqlite:///{tmp_path / 'migrations.db'}"
    try:
        with side_app(settings_for(url)) as application:
            yield application
    finally:
        if throwaway is not None:
            throwaway.drop()


def _inspector() -> Inspector:
    return inspect(db.engine)


def _current_revision() -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _leading_index_columns(inspector: Inspector, table: str) -> set[str]:
    return {str(ix["column_names"][0]) for ix in inspector.get_indexes(table) if ix["column_names"]}


def _unique_column_sets(inspector: Inspector, table: str) -> list[set[str | None]]:
    found: list[set[str | None]] = [
        set(uq["column_names"]) for uq in inspector.get_unique_constraints(table)
    ]
    found += [set(ix["column_names"]) for ix in inspector.get_indexes(table) if ix["unique"]]
    return found


def _assert_full_schema(inspector: Inspector) -> None:
    # At least these (later migrations may add more tables).
    assert set(inspector.get_table_names()) >= APP_TABLES | {"alembic_version"}

    task_indexed = _leading_index_columns(inspector, "task_manager")
    missing = [c for c in TASK_FILTER_COLUMNS if c not in task_indexed]
    assert not missing, f"task_manager columns without an index: {missing}"
    composite = {tuple(ix["column_names"]) for ix in inspector.get_indexes("task_manager")}
    # A user's tasks in the list's default order (migration 0010).
    assert ("assigned_user_id", "created_at", "id") in composite
    assert ("created_by_id", "created_at", "id") in composite

    for table, columns in OTHER_INDEXED_COLUMNS.items():
        indexed = _leading_index_columns(inspector, table)
        assert set(columns) <= indexed, (table, set(columns) - indexed)

    for table, unique_sets in UNIQUE_COLUMNS.items():
        for unique_columns in unique_sets:
            assert unique_columns in _unique_column_sets(inspector, table), (table, unique_columns)
    for table, column_sets in NOT_UNIQUE_COLUMNS.items():
        for columns in column_sets:
            assert columns not in _unique_column_sets(inspector, table), (table, columns)

    foreign_keys = {
        (table, tuple(fk["constrained_columns"])): (
            fk["referred_table"],
            (fk.get("options") or {}).get("ondelete", "").upper(),
        )
        for table in APP_TABLES
        for fk in inspector.get_foreign_keys(table)
    }
    missing_fks = EXPECTED_FOREIGN_KEYS.items() - foreign_keys.items()
    assert not missing_fks, missing_fks


def test_migration_history_has_a_single_head() -> None:
    script = ScriptDirectory(str(MIGRATIONS_DIR))

    heads = script.get_heads()
    assert len(heads) == 1
    assert [rev.revision for rev in script.walk_revisions()][-1] == "0001"


def test_upgrade_from_empty_builds_the_schema_and_downgrade_removes_it(fresh_app: APIFlask) -> None:
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    with fresh_app.app_context():
        assert _inspector().get_table_names() == []

        upgrade()
        _assert_full_schema(_inspector())
        assert _current_revision() == head

        downgrade(revision="base")
        assert _inspector().get_table_names() == ["alembic_version"]
        assert _current_revision() is None

        upgrade()  # and back up again, from the torn-down state
        _assert_full_schema(_inspector())
        assert _current_revision() == head


def test_upgraded_schema_enforces_enum_check_constraints(fresh_app: APIFlask) -> None:
    with fresh_app.app_context():
        upgrade()
        checks = {
            table: {ck["name"] for ck in _inspector().get_check_constraints(table)}
            for table in ("users", "task_manager", "task_audit")
        }

    assert "ck_users_user_role" in checks["users"]
    assert {"ck_task_manager_task_status", "ck_task_manager_task_priority"} <= (
        checks["task_manager"]
    )
    assert "ck_task_audit_audit_action" in checks["task_audit"]


def _made_on(dialect: str) -> Callable[..., bool]:
    """Alembic's `include_object`: leave out what the models make on another backend only
    (`ddl_if(dialect=...)`, e.g. PostgreSQL's trigram indexes), which autogenerate does not
    know about by itself."""

    def include(obj: Any, _name: Any, _type: str, reflected: bool, compare_to: Any) -> bool:
        declared = compare_to if reflected else obj
        condition = getattr(declared, "_ddl_if", None)
        return condition is None or condition.dialect in (None, dialect)

    return include


def test_models_and_migrations_agree(fresh_app: APIFlask) -> None:
    """What `flask db migrate` would generate after the migrations ran: nothing; and no computed
    column whose expression differs (which autogenerate only warns about)."""
    with fresh_app.app_context():
        upgrade()
        dialect = db.engine.dialect.name
        with db.engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_object": _made_on(dialect),
                    "include_name": log_partitions.compared_by_autogenerate,
                },
            )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                differences = compare_metadata(context, db.metadata)
        indexes = {ix["name"] for ix in _inspector().get_indexes("task_manager")}

    assert differences == []
    assert [str(w.message) for w in caught if "alembic" in w.filename] == []
    only_postgresql = {
        "ix_task_manager_task_name_trgm",
        "ix_task_manager_description_trgm",
        "ix_task_manager_due_date_desc_id",
    }
    if dialect == "postgresql":
        assert only_postgresql <= indexes
    else:
        assert not only_postgresql & indexes


def _priority_rank_storage() -> str:
    """How the database keeps task_manager.priority_rank: 'stored' or 'virtual'."""
    if db.engine.dialect.name == "postgresql":
        [[generated]] = _execute(
            "SELECT attgenerated FROM pg_attribute "
            "WHERE attrelid = 'task_manager'::regclass AND attname = 'priority_rank'"
        )
        return {"s": "stored"}.get(str(generated[0]), repr(generated[0]))  # "": not generated
    # cid, name, type, notnull, default, pk, hidden (2: virtual, 3: stored)
    [hidden] = [
        row[6]
        for row in _execute("PRAGMA table_xinfo(task_manager)")[0]
        if row[1] == "priority_rank"
    ]
    return {2: "virtual", 3: "stored"}.get(int(str(hidden)), repr(hidden))


# Two accounts, a task of one assigned to the other with its audit entry, and a session: every
# kind of reference to `users` (RESTRICT, SET NULL, CASCADE).
ACCOUNTS_WITH_REFERENCES = (
    "INSERT INTO users (id, username, email, role, is_active, created_at, updated_at) VALUES "
    "(1, 'ann', 'ann@example.com', 'user', true, '2026-01-01', '2026-01-01'), "
    "(2, 'ben', 'ben@example.com', 'admin', true, '2026-01-01', '2026-01-01')",
    "INSERT INTO task_manager (id, task_name, status, priority, assigned_user_id, "
    "created_by_id, created_at, updated_at) VALUES "
    "(1, 't', 'active', 'LOW', 1, 2, '2026-01-01', '2026-01-01')",
    "INSERT INTO task_audit (id, task_id, actor_id, action, changes, created_at) VALUES "
    "(1, 1, 1, 'created', '{}', '2026-01-01')",
    "INSERT INTO token_families (id, user_id, created_at) VALUES ('fam', 1, '2026-01-01')",
)
REFERENCES = (
    "SELECT assigned_user_id, created_by_id FROM task_manager",
    "SELECT actor_id FROM task_audit",
    "SELECT user_id FROM token_families",
)


def _execute(*statements: str) -> list[list[tuple[object, ...]]]:
    with db.engine.begin() as connection:
        results = [connection.execute(text(statement)) for statement in statements]
        return [[tuple(row) for row in result] if result.returns_rows else [] for result in results]


def test_email_uniqueness_goes_without_losing_a_row_or_a_reference(fresh_app: APIFlask) -> None:
    """On SQLite 0008 rebuilds `users`: with foreign keys on, dropping the old table would have
    failed on the task's creator (RESTRICT), or nulled its assignee and deleted the session."""
    with fresh_app.app_context():
        upgrade(revision="0007")
        _execute(*ACCOUNTS_WITH_REFERENCES)
        before = _execute(*REFERENCES)

        upgrade(revision="0008")

        assert _execute(*REFERENCES) == before == [[(1, 2)], [(1,)], [(1,)]]
        _execute("UPDATE users SET email = 'ann@example.com' WHERE id = 2")
        if db.engine.dialect.name == "sqlite":  # and the pragma is back on
            assert _execute("PRAGMA foreign_keys") == [[(1,)]]


def test_the_downgrade_refuses_accounts_that_share_an_address(fresh_app: APIFlask) -> None:
    with fresh_app.app_context():
        upgrade(revision="0008")
        _execute(*ACCOUNTS_WITH_REFERENCES)
        _execute("UPDATE users SET email = 'ann@example.com' WHERE id = 2")

        with pytest.raises(SystemExit):  # Flask-Migrate logs the error and exits
            downgrade(revision="0007")
        assert _current_revision() == "0008"

        _execute("UPDATE users SET email = 'ben@example.com' WHERE id = 2")
        downgrade(revision="0007")
        assert {"email"} in _unique_column_sets(_inspector(), "users")
        assert _execute(*REFERENCES) == [[(1, 2)], [(1,)], [(1,)]]


TASKS_OF_EVERY_PRIORITY = (
    "INSERT INTO task_manager (id, task_name, status, priority, assigned_user_id, "
    "created_by_id, created_at, updated_at) VALUES "
    "(2, 'low', 'active', 'LOW', NULL, 1, '2026-01-02', '2026-01-02'), "
    "(3, 'medium', 'active', 'MEDIUM', 2, 1, '2026-01-03', '2026-01-03'), "
    "(4, 'critical', 'inactive', 'CRITICAL', 2, 2, '2026-01-04', '2026-01-04')",
)
TASK_ROWS = (
    "SELECT id, task_name, priority, assigned_user_id, created_by_id FROM task_manager ORDER BY id"
)


def test_the_priority_rank_is_computed_for_every_task_and_nothing_is_lost(
    fresh_app: APIFlask,
) -> None:
    """0009 adds a stored column (on SQLite by rebuilding task_manager, which its audit and log
    rows reference with ON DELETE CASCADE): every row and reference stays, and the downgrade
    takes the column away again."""
    with fresh_app.app_context():
        upgrade(revision="0008")
        _execute(*ACCOUNTS_WITH_REFERENCES, *TASKS_OF_EVERY_PRIORITY)
        before = _execute(*REFERENCES, TASK_ROWS)

        upgrade(revision="0009")

        assert _execute(*REFERENCES, TASK_ROWS) == before
        assert _priority_rank_storage() == "stored"
        ranks = "SELECT priority, priority_rank FROM task_manager ORDER BY priority_rank, id"
        assert _execute(ranks) == [[("LOW", 0), ("LOW", 0), ("MEDIUM", 1), ("CRITICAL", 3)]]
        _execute("UPDATE task_manager SET priority = 'HIGH' WHERE id = 4")
        assert _execute("SELECT priority_rank FROM task_manager WHERE id = 4") == [[(2,)]]
        _execute("UPDATE task_manager SET priority = 'CRITICAL' WHERE id = 4")
        if db.engine.dialect.name == "sqlite":  # and the pragma is back on
            assert _execute("PRAGMA foreign_keys") == [[(1,)]]

        downgrade(revision="0008")

        assert "priority_rank" not in {c["name"] for c in _inspector().get_columns("task_manager")}
        assert _execute(*REFERENCES, TASK_ROWS) == before


LOG_ROWS_BEFORE_0012 = """
INSERT INTO task_logger (task_id, log_date, status, priority, assigned_user_id, created_at,
                         task_created_at)
SELECT t.id, d.day, 'active', 'HIGH', NULL, now(), t.created_at
FROM task_manager t, (VALUES (DATE '2025-11-30'), (DATE '2025-12-31'), (DATE '2026-01-01')) d(day)
"""


def _log_rows() -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in db.session.execute(
            text("SELECT id, task_id, log_date, status, priority FROM task_logger ORDER BY id")
        ).all()
    ]


@pytest.mark.parametrize("fresh_app", ["postgresql"], indirect=True)
def test_partitioning_the_log_moves_its_rows_and_back(fresh_app: APIFlask) -> None:
    """Migration 0012 on a log with rows across a year's end: every row lands in its month's
    partition with its id and values; new rows take ids after them; the downgrade puts them
    back in one plain table."""
    with fresh_app.app_context():
        upgrade(revision="0011")
        db.session.execute(
            text(
                "INSERT INTO users (username, email, password_hash, role, is_active, created_at, "
                "updated_at) VALUES ('owner', 'o@example.com', 'x', 'user', true, now(), now())"
            )
        )
        db.session.execute(
            text(
                "INSERT INTO task_manager (task_name, status, priority, created_by_id, created_at,"
                " updated_at, version) SELECT 'task ' || g, 'active', 'HIGH', 1, now(), now(), 1"
                " FROM generate_series(1, 5) g"
            )
        )
        db.session.execute(text(LOG_ROWS_BEFORE_0012))
        db.session.commit()
        before = _log_rows()
        assert len(before) == 15
        db.session.commit()  # the migration waits for no reader's lock

        upgrade(revision="0012")
        assert _log_rows() == before
        placed = db.session.execute(
            text("SELECT log_date, tableoid::regclass::text FROM task_logger GROUP BY 1, 2")
        ).all()
        assert {(str(day), partition) for day, partition in placed} == {
            ("2025-11-30", "task_logger_y2025m11"),
            ("2025-12-31", "task_logger_y2025m12"),
            ("2026-01-01", "task_logger_y2026m01"),
        }
        # Up to the month after this one, so the loader's next days have theirs.
        this_month = date.today().replace(day=1)
        names = {p.name for p in log_partitions.partitions()}
        assert log_partitions.partition_name(log_partitions.next_month(this_month)) in names
        new_id = db.session.execute(
            text(
                "INSERT INTO task_logger (task_id, log_date, status, priority, created_at, "
                "task_created_at) VALUES (1, DATE '2026-01-02', 'active', 'LOW', now(), now()) "
                "RETURNING id"
            )
        ).scalar_one()
        assert new_id > max(row[0] for row in before)
        db.session.commit()
        after = _log_rows()
        db.session.commit()

        downgrade(revision="0011")
        assert _log_rows() == after
        kind = db.session.execute(
            text("SELECT relkind FROM pg_class WHERE relname = 'task_logger'")
        ).scalar_one()
        assert kind == "r"  # a plain table again
        assert not any(name.startswith("task_logger_y") for name in _inspector().get_table_names())
        db.session.commit()
