"""Admin dashboard model."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel


class DayCount(BaseModel):
    date: date
    count: int


class DashboardOut(BaseModel):
    users_by_role: dict[str, int]
    tasks_by_status: dict[str, int]
    tasks_by_priority: dict[str, int]
    soft_deleted_tasks: int
    tasks_created_per_day: list[DayCount]
