"""SQLAlchemy models; importing this package registers every table on the metadata."""

from app.models.enums import AuditAction, JobState, LoaderRunState, Role, TaskPriority, TaskStatus
from app.models.idempotency import IdempotencyKey
from app.models.job import Job
from app.models.task import Task, TaskAuditEntry
from app.models.task_log import LoaderChunk, LoaderRun, TaskLogEntry
from app.models.token import RefreshToken, TokenFamily
from app.models.user import User

__all__ = [
    "AuditAction",
    "IdempotencyKey",
    "Job",
    "JobState",
    "LoaderChunk",
    "LoaderRun",
    "LoaderRunState",
    "RefreshToken",
    "Role",
    "Task",
    "TaskAuditEntry",
    "TaskLogEntry",
    "TaskPriority",
    "TaskStatus",
    "TokenFamily",
    "User",
]
