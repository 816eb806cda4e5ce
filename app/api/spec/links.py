"""OpenAPI links: which operation's answer supplies the id another operation takes.

With them a client (or a stateful fuzzer) goes from a created task to reading, changing,
deleting, restoring, purging it and reading its history and daily log; from a registered or
listed account to changing it; from a started job to its status; from a session to its refresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TASK_OPERATIONS = (
    "get_task",
    "update_task",
    "delete_task",
    "restore_task",
    "task_history",
    "task_logs",
    "purge_task",
)


@dataclass(frozen=True)
class Link:
    source: str  # operationId
    status: str
    targets: tuple[str, ...]  # operationIds
    parameters: dict[str, str]  # target parameter -> runtime expression
    body: dict[str, str] | None = None  # target request body, by runtime expressions


LINKS = (
    Link("create_task", "201", TASK_OPERATIONS, {"task_id": "$response.body#/id"}),
    Link("get_task", "200", TASK_OPERATIONS, {"task_id": "$response.body#/id"}),
    Link("update_task", "200", TASK_OPERATIONS, {"task_id": "$response.body#/id"}),
    Link("restore_task", "200", TASK_OPERATIONS, {"task_id": "$response.body#/id"}),
    Link("list_tasks", "200", TASK_OPERATIONS, {"task_id": "$response.body#/items/0/id"}),
    Link("list_tasks", "200", ("get_log",), {"log_id": "$response.body#/items/0/log/log_id"}),
    Link("task_logs", "200", ("get_log",), {"log_id": "$response.body#/items/0/log_id"}),
    Link("get_log", "200", TASK_OPERATIONS, {"task_id": "$response.body#/id"}),
    Link("task_history", "200", TASK_OPERATIONS, {"task_id": "$response.body#/items/0/task_id"}),
    Link("register", "201", ("update_user",), {"user_id": "$response.body#/id"}),
    Link("list_users", "200", ("update_user",), {"user_id": "$response.body#/items/0/id"}),
    Link("start_daily_log", "202", ("get_job",), {"job_id": "$response.body#/job_id"}),
    Link("upload_csv", "202", ("get_job",), {"job_id": "$response.body#/job_id"}),
    Link("login", "200", ("refresh",), {}, {"refresh_token": "$response.body#/refresh_token"}),
    Link("refresh", "200", ("refresh",), {}, {"refresh_token": "$response.body#/refresh_token"}),
)


def _operations(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        operation["operationId"]: operation
        for item in spec["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }


def add_links(spec: dict[str, Any]) -> dict[str, Any]:
    operations = _operations(spec)
    for link in LINKS:
        response = operations[link.source]["responses"][link.status]
        for target in link.targets:
            if target not in operations:
                raise RuntimeError(f"a link from {link.source} names no operation: {target}")
            document: dict[str, Any] = {"operationId": target}
            if link.parameters:
                document["parameters"] = dict(link.parameters)
            if link.body is not None:
                document["requestBody"] = dict(link.body)
            response.setdefault("links", {})[target] = document
    return spec
