"""Admin jobs: start the daily log on demand and follow any background job."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from apiflask import APIBlueprint
from flask import url_for

from app.api.current_user import current_user
from app.api.idempotency import idempotent
from app.api.openapi_parts import string_header
from app.api.spec.errors import route_responses
from app.extensions import token_auth
from app.models import Role
from app.schemas.task_logs import DailyLogJobIn, JobAccepted, JobOut
from app.services import jobs as job_service

bp = APIBlueprint(
    "admin_jobs",
    __name__,
    tag={"name": "Jobs", "description": "Background jobs (admin only)"},
    url_prefix="/admin/jobs",
)
ADMIN_ONLY = [Role.ADMIN.value]
LOCATION_HEADER: Any = {"Location": string_header("The job's status URL")}


@bp.post("/daily-log")
@bp.auth_required(token_auth, roles=ADMIN_ONLY)
@bp.input(DailyLogJobIn, arg_name="body")
@idempotent(bp)
@bp.output(JobAccepted, status_code=202)
@bp.doc(
    summary="Run the daily task log now",
    description="Queues the loader for `date` (or today plus missed days). Idempotent: a day "
    "already logged logs nothing twice. A retry with the same `Idempotency-Key` gets the same "
    "job instead of queueing another.",
    responses=route_responses(
        {
            202: {"description": "The job, queued", "headers": LOCATION_HEADER},
            503: "The job queue or the database is unavailable",
        }
    ),
)
def start_daily_log(body: DailyLogJobIn) -> Any:
    job = job_service.start_daily_log_job(body.date, current_user())
    location = url_for("admin_jobs.get_job", job_id=job.id)
    return (
        {"job_id": job.id, "state": job.state, "status_url": location},
        202,
        {"Location": location},
    )


# A UUID converter: `GET /admin/jobs/daily-log` is no job, and the path does not answer GET.
@bp.get("/<uuid:job_id>")
@bp.auth_required(token_auth, roles=[Role.ADMIN.value, Role.MODERATOR.value])
@bp.output(JobOut)
@bp.doc(
    summary="A background job's state, progress and result",
    description="Admins see every job; moderators the jobs they started (CSV imports).",
)
def get_job(job_id: UUID) -> Any:
    return job_service.job_status(str(job_id), current_user())
