"""CSV import of tasks: `POST /upload-csv`."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import Response, jsonify, request, url_for
from werkzeug.exceptions import UnsupportedMediaType

from app.api.current_user import current_user
from app.api.idempotency import idempotent
from app.extensions import token_auth
from app.models import Role
from app.models.types import utcnow
from app.schemas.csv_import import CsvUploadIn, ImportReportOut
from app.services import csv_import
from app.services import jobs as job_service
from app.services.context import settings

bp = APIBlueprint("imports", __name__, tag={"name": "Import", "description": "CSV import of tasks"})


@bp.before_request
def _multipart_with_upload_limit() -> None:
    # Per-endpoint limit, larger than the 1 MiB JSON limit; werkzeug answers 413 past it while
    # parsing the form, with the file spooled to disk rather than held in memory.
    request.max_content_length = settings().csv_max_upload_bytes
    if request.method == "POST" and request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType("Send the file as multipart/form-data (field `file`).")


def _size(stream: Any) -> int:
    stream.seek(0, 2)
    size = int(stream.tell())
    stream.seek(0)
    return size


@bp.post("/upload-csv")
@bp.auth_required(token_auth, roles=[Role.ADMIN.value, Role.MODERATOR.value])
@bp.input(CsvUploadIn, location="form_and_files", arg_name="form")
@idempotent(bp)
@bp.output(ImportReportOut, description="Imported (a file under the job threshold)")
@bp.doc(
    summary="Import tasks from a CSV file",
    description=(
        "Columns: task_name, status, priority (required), description, created_at, "
        "assigned_user. status: TRUE/FALSE (any case), 1/0, yes/no; priority: LOW..CRITICAL in any "
        "case; created_at: M/D/YYYY or ISO 8601; UTF-8 with or without BOM, CRLF or LF, quoted "
        "fields. Valid rows are imported, invalid ones reported (first 100 errors). A row already "
        "imported (same name, created_at day and assignee) is skipped, so uploading a file twice "
        "creates nothing the second time. A file with more data rows than CSV_MAX_ROWS_PER_FILE "
        "is refused whole (422; a job fails with that reason), nothing imported. An assignee "
        "matches an account only if the account existed at the upload; a row naming an account "
        "created after the upload fails. Unknown assignees get an inactive account with no "
        "password, at most CSV_MAX_NEW_ACCOUNTS_PER_FILE per file: rows naming further unknown "
        "assignees fail. Files over the job threshold answer 202 with a job to follow at "
        "`GET /admin/jobs/{job_id}`; the stored upload is deleted when the job ends, whatever "
        "its outcome. Moderators and admins only. A retry with the same `Idempotency-Key` "
        "and the same file and fields gets the first answer (the same report, or the same job) "
        "without importing again."
    ),
    responses={
        202: "Queued as a background job: {job_id, state, status_url}",
        400: "Not a CSV file, or not UTF-8",
        413: "Over the upload limit (CSV_MAX_UPLOAD_BYTES)",
        415: "Not multipart/form-data",
        422: "Missing or unknown header columns, more data rows than the limit, or no file",
        503: "The job queue, the upload store or the database is unavailable",
    },
)
def upload_csv(form: CsvUploadIn) -> Any:
    # The upload's time for the assignee rule: accounts registered after it are never matched
    # (a job goes by its own created_at, as late as this or later).
    uploaded_at = utcnow()
    stream = form.file.stream
    if _size(stream) > settings().csv_async_threshold_bytes:
        # A bad header or a file that is no CSV at all answers 422/400 now, not as a failed job.
        # The job counts the rows (and refuses a file over the cap) as it starts.
        csv_import.check_header(stream)
        job = job_service.start_csv_import_job(stream, form.dry_run, current_user())
        location = url_for("admin_jobs.get_job", job_id=job.id)
        response: Response = jsonify(
            {"job_id": job.id, "state": job.state.value, "status_url": location}
        )
        response.status_code = 202
        response.headers["Location"] = location
        return response
    # One reading pass first (the file is under the job threshold): a byte that is not UTF-8
    # or broken quoting far down, or a row over the cap, answers 400/422 with nothing imported,
    # not after batches before it were committed. The job and the CLI make the same pass.
    csv_import.count_rows_within_cap(stream)
    report = csv_import.import_tasks(
        stream,
        current_user(),
        uploaded_at=uploaded_at,
        dry_run=form.dry_run,
        batch_size=settings().csv_batch_rows,
    )
    return report.as_dict()
