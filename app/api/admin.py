"""Admin-only endpoints: dashboard, user management, task purge."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint

from app.api.current_user import current_user
from app.api.pagination import paginated
from app.extensions import token_auth
from app.models import Role
from app.repositories import users as user_repo
from app.schemas.admin import DashboardOut
from app.schemas.users import AdminUserPatchIn, UserListQuery, UserOut, UserPage
from app.services import accounts
from app.services import dashboard as dashboard_service
from app.services import tasks as task_service

bp = APIBlueprint(
    "admin",
    __name__,
    tag={"name": "Admin", "description": "Admin-only operations"},
    url_prefix="/admin",
)
ADMIN_ONLY = [Role.ADMIN.value]


@bp.get("/dashboard")
@bp.auth_required(token_auth, roles=ADMIN_ONLY)
@bp.output(DashboardOut)
@bp.doc(
    summary="Counts of users and tasks, and tasks created per day (last 14 days)",
)
def dashboard() -> dict[str, Any]:
    return dashboard_service.dashboard()


@bp.get("/users")
@bp.auth_required(token_auth, roles=ADMIN_ONLY)
@bp.input(UserListQuery, location="query", arg_name="query")
@bp.output(UserPage)
@bp.doc(summary="List accounts")
def list_users(query: UserListQuery) -> Any:
    return paginated(user_repo.page_users(query.page, query.per_page, query.role, query.is_active))


@bp.patch("/users/<int:user_id>")
@bp.auth_required(token_auth, roles=ADMIN_ONLY)
@bp.input(AdminUserPatchIn, arg_name="body")
@bp.output(UserOut)
@bp.doc(
    summary="Change a user's email, role, active flag or password",
    description="The last active admin cannot be demoted or deactivated (409).",
    responses={409: "The last active admin would be demoted or deactivated"},
)
def update_user(user_id: int, body: AdminUserPatchIn) -> Any:
    return accounts.admin_update_user(
        user_id, accounts.AdminUserChange(**body.model_dump(exclude_unset=True))
    )


@bp.delete("/tasks/<int:task_id>")
@bp.auth_required(token_auth, roles=ADMIN_ONLY)
@bp.doc(
    summary="Purge a task for good",
    description="Deletes the row; its audit trail and daily-log rows go with it.",
    responses={204: "Purged"},
)
def purge_task(task_id: int) -> tuple[str, int]:
    task_service.purge_task(current_user(), task_id)
    return "", 204
