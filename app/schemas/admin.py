"""Admin dashboard model."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field

from app.schemas.task_logs import LoaderRunOut


class DayCount(BaseModel):
    date: date
    count: int


class DashboardOut(BaseModel):
    users_by_role: dict[str, int]
    tasks_by_status: dict[str, int]
    tasks_by_priority: dict[str, int]
    soft_deleted_tasks: int
    tasks_created_per_day: list[DayCount]
    loader_runs: list[LoaderRunOut] = Field(description="The daily loader's latest runs")
    rows_logged_per_day: list[DayCount] = Field(
        description="Rows the daily loader logged per log date (last 14 days)"
    )
