"""Statements run on the driver's own cursor, below SQLAlchemy's execution layer.

For the hot requests whose every one costs a statement (`GET /task/<id>` and the list pages
answered by app.api.hot_paths on a miss, the write of `PUT /task/<id>`), SQLAlchemy's
per-statement work (execution context, result metadata built from the cursor's description,
result objects) costs about twice the driver's own work. The statement is still SQLAlchemy's (a
`Select`, or a DML statement with RETURNING), compiled once per dialect; its parameters and
results go through the column types' own bind and result processors, so the values are those a
Core query returns (tests compare the two on both backends). Each statement runs in autocommit
on PostgreSQL: it stands alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Enum, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import ReturningInsert
from sqlalchemy.types import TypeEngine

Processor = Callable[[Any], Any] | None
# What runs here: a query, or a write that says what it wrote (RETURNING).
Statement = Select[Any] | ReturningInsert[Any]


@dataclass(frozen=True)
class DriverStatement:
    sql: str
    bind_names: tuple[str, ...]  # in the driver's order (positional) or each once (named)
    positional: bool
    bind_processors: Mapping[str, Processor]
    bound_values: Mapping[str, Any]  # the statement's own values (e.g. a CASE's), by bind name
    keys: tuple[str, ...]  # the selected columns' keys, in order
    # (position, key, processor) of the columns whose type processes what the driver returns,
    # and whether it turns None into None (then a NULL is not handed to it)
    processed: tuple[tuple[int, str, Callable[[Any], Any], bool], ...]

    def parameters(self, values: Mapping[str, Any]) -> Any:
        values = {**self.bound_values, **values}
        processed = {
            name: (process(values[name]) if process else values[name])
            for name, process in self.bind_processors.items()
        }
        if self.positional:
            return tuple(processed[name] for name in self.bind_names)
        return processed

    def row(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        # Most columns need no processing (ints, strings, dates on psycopg): copied as they
        # come, then the few processed ones replaced (with the enum lookups below, measured:
        # 50 -> 43 us for a page of 20 task rows on PostgreSQL).
        values = dict(zip(self.keys, raw, strict=True))
        for at, key, process, none_stays_none in self.processed:
            value = raw[at]
            if value is not None or not none_stays_none:
                values[key] = process(value)
        return values


@functools.cache
def compile_for_driver(statement: Statement, dialect: Dialect) -> DriverStatement:
    """`statement` (built once and kept, e.g. by functools.cache: it is the cache key here) as
    the driver's SQL with the processors of its parameter and column types."""
    compiled = statement.compile(dialect=dialect)
    if compiled.post_compile_params or compiled.literal_execute_params:
        # Rendered at execution by SQLAlchemy (e.g. IN lists): not a fixed string to reuse.
        raise ValueError("a statement with parameters rendered at execution")
    binds = compiled.binds
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(binds)
    return DriverStatement(
        sql=compiled.string,
        bind_names=names,
        positional=bool(compiled.positional),
        bind_processors={
            name: binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in dict.fromkeys(names)
        },
        bound_values={name: bind.value for name, bind in binds.items() if not bind.required},
        keys=tuple(str(column.key) for column in statement.exported_columns),
        processed=tuple(
            processed
            for at, column in enumerate(statement.exported_columns)
            if (processed := _processed_column(at, str(column.key), column.type, dialect))
        ),
    )


def _processed_column(
    at: int, key: str, column_type: TypeEngine[Any], dialect: Dialect
) -> tuple[int, str, Callable[[Any], Any], bool] | None:
    """How the column at `at` is processed (see DriverStatement.processed), None if it is not.
    An enum's processor is replaced by a lookup of what it gives for each of the enum's stored
    values (one dict lookup instead of two Python calls; an unknown value raises KeyError, a
    LookupError as SQLAlchemy's own is)."""
    impl = column_type.dialect_impl(dialect)
    processor = impl.result_processor(dialect, None)
    if processor is None:
        return None
    process: Callable[[Any], Any] = processor
    none_stays_none = _none_stays_none(process)
    if none_stays_none and isinstance(impl, Enum) and impl.enums:
        process = {value: processor(value) for value in impl.enums}.__getitem__
    return at, key, process, none_stays_none


def _none_stays_none(process: Callable[[Any], Any]) -> bool:
    """Whether `process` turns NULL into None, as SQLAlchemy's own processors and the app's
    column types do; a processor that fails on None or makes something of it is always run."""
    try:
        return process(None) is None
    except Exception:
        return False


def fetch_all(
    engine: Engine, statement: Statement, values: Mapping[str, Any], limit: int | None = None
) -> list[dict[str, Any]]:
    """The rows of `statement` (the first `limit` of them) as {column key: value}, on a pooled
    connection: in autocommit on PostgreSQL (no BEGIN/ROLLBACK round trips: the fixed-plan
    pool's connections stay in autocommit, and the pool has nothing to reset when they come
    back). A connection the driver reports lost is discarded, not given back."""
    driver_statement = compile_for_driver(statement, engine.dialect)
    driver_error: type[Exception] = engine.dialect.loaded_dbapi.Error
    try:
        connection = engine.raw_connection()  # raises SQLAlchemy's errors already
        dbapi_connection: Any = connection.dbapi_connection
        try:
            if engine.dialect.name == "postgresql" and not dbapi_connection.autocommit:
                dbapi_connection.autocommit = True
            cursor = connection.cursor()
            try:
                cursor.execute(driver_statement.sql, driver_statement.parameters(values))
                raw = cursor.fetchall() if limit is None else cursor.fetchmany(limit)
            finally:
                cursor.close()
        except driver_error as exc:
            # psycopg's flags (sqlite3's connections have neither: their pool resets them)
            if getattr(dbapi_connection, "closed", False) or getattr(
                dbapi_connection, "broken", False
            ):
                connection.invalidate(exc)  # a lost connection does not go back to the pool
            raise
        finally:
            connection.close()
    except driver_error as exc:
        # As SQLAlchemy raises it (e.g. OperationalError: the API answers 503 to a lost database).
        raise DBAPIError.instance(
            driver_statement.sql, None, exc, driver_error, dialect=engine.dialect
        ) from exc
    return [driver_statement.row(row) for row in raw]


def fetch_one(
    engine: Engine, statement: Statement, values: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The first row of `statement` (see `fetch_all`), None if it has none."""
    rows = fetch_all(engine, statement, values, limit=1)
    return rows[0] if rows else None
