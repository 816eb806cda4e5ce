"""Totals that stay cheap on large tables: counted exactly up to a bound, estimated above it.

A `count(*)` reads every matching row (or index entry): a first page of ten million tasks reads
twenty rows, its total ten million. Above COUNT_EXACT_UP_TO matching rows the total is the
query planner's estimate of the same statement (PostgreSQL's EXPLAIN, from its statistics:
no rows are read), flagged as an estimate. SQLite has no such estimate and counts exactly: it is
the embedded, small-data setup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ClauseElement, CompoundSelect, Executable, Select, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from app.extensions import db

# A SELECT of the rows to count, or a UNION ALL of disjoint ones.
Rows = Select[Any] | CompoundSelect[Any]


class ExplainJson(Executable, ClauseElement):
    """`EXPLAIN (FORMAT JSON) <statement>`, with the statement's parameters bound as usual."""

    inherit_cache = False

    def __init__(self, statement: Rows) -> None:
        self.statement = statement


@compiles(ExplainJson, "postgresql")
def _explain_json(element: ExplainJson, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.statement, **kw)


# Above this multiple of the bound, the planner's estimate alone decides: the planner's error
# on a list's size is well within it.
ESTIMATE_ONLY_ABOVE = 4


@dataclass(frozen=True)
class Total:
    value: int
    estimated: bool = False


def _planned_rows(rows: Rows) -> int:
    plan = db.session.execute(ExplainJson(rows)).scalar_one()
    return int(plan[0]["Plan"]["Plan Rows"])


def bounded_count(rows: Rows, exact_up_to: int) -> Total:
    """The number of rows `rows` (a SELECT of the matching rows) returns: exact when at most
    `exact_up_to` (reading at most one more than that), else PostgreSQL's estimate (never below
    the rows it counted).

    On PostgreSQL the estimate is asked first: when it is far above the bound, counting even
    `exact_up_to` rows can cost as much as the whole list (a bitmap of a common search term's
    million matches is built before the first row is counted), and the answer would be the
    estimate anyway."""
    if db.engine.dialect.name != "postgresql":  # no estimate to fall back on
        return Total(_counted(rows))
    planned = _planned_rows(rows)
    if planned > ESTIMATE_ONLY_ABOVE * exact_up_to:
        return Total(planned, estimated=True)
    seen = _counted(rows.limit(exact_up_to + 1))
    if seen <= exact_up_to:
        return Total(seen)
    return Total(max(planned, seen), estimated=True)


def _counted(rows: Rows) -> int:
    return db.session.scalar(select(func.count()).select_from(rows.subquery())) or 0
