"""Figures for the admin dashboard."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from app.models import TaskPriority, TaskStatus
from app.models.types import utcnow
from app.repositories import loader as loader_repo
from app.repositories import tasks as task_repo
from app.repositories import users as user_repo

DASHBOARD_DAYS = 14
DASHBOARD_LOADER_RUNS = 10


def dashboard() -> dict[str, Any]:
    today = utcnow().date()
    since = today - timedelta(days=DASHBOARD_DAYS - 1)
    per_day = task_repo.count_created_per_day(since)
    logged = loader_repo.rows_logged_per_day(since)
    by_status = task_repo.count_live_tasks_by("status")
    by_priority = task_repo.count_live_tasks_by("priority")
    days: list[date] = [since + timedelta(days=i) for i in range(DASHBOARD_DAYS)]
    return {
        "users_by_role": user_repo.count_users_by_role(),
        "tasks_by_status": {s.value: by_status.get(s.value, 0) for s in TaskStatus},
        "tasks_by_priority": {p.value: by_priority.get(p.value, 0) for p in TaskPriority},
        "soft_deleted_tasks": task_repo.count_soft_deleted(),
        "tasks_created_per_day": [{"date": d, "count": per_day.get(d, 0)} for d in days],
        "loader_runs": loader_repo.recent_runs(DASHBOARD_LOADER_RUNS),
        "rows_logged_per_day": [{"date": d, "count": logged.get(d, 0)} for d in days],
    }
