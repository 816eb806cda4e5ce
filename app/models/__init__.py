"""SQLAlchemy models; importing this package registers every table on the metadata."""

from app.models.enums import AuditAction, Role, TaskPriority, TaskStatus
from app.models.task import Task, TaskAuditEntry
from app.models.token import RefreshToken, TokenFamily
from app.models.user import User

__all__ = [
    "AuditAction",
    "RefreshToken",
    "Role",
    "Task",
    "TaskAuditEntry",
    "TaskPriority",
    "TaskStatus",
    "TokenFamily",
    "User",
]
