"""flask commands: create-admin, admin-hint, load-daily, import-csv, logs prune."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from pydantic import TypeAdapter, ValidationError

from app.models import Role
from app.models.types import utcnow
from app.repositories import users as user_repo
from app.schemas.users import Email, NewPassword, Username
from app.services import accounts, csv_import, loader, log_retention
from app.services.errors import Conflict, DomainError


def _validated(adapter: TypeAdapter[str], value: str, name: str) -> str:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise click.BadParameter(exc.errors()[0]["msg"], param_hint=name) from exc


@click.command("create-admin")
@click.option("--username", envvar="ADMIN_USERNAME", required=True, help="[env ADMIN_USERNAME]")
@click.option("--email", envvar="ADMIN_EMAIL", required=True, help="[env ADMIN_EMAIL]")
@click.option(
    "--password-env",
    default="ADMIN_PASSWORD",
    show_default=True,
    help="Environment variable holding the password; prompted for when it is not set.",
)
@click.option(
    "--if-missing", is_flag=True, help="Succeed quietly when the username already exists."
)
@with_appcontext  # `flask` pushes one itself, but not every runner does (e.g. app.test_cli_runner)
def create_admin_command(username: str, email: str, password_env: str, if_missing: bool) -> None:
    """Create an admin account. The password is read from an environment variable or a hidden
    prompt, never from the command line (it would land in shell history and `ps`)."""
    username = _validated(TypeAdapter(Username), username, "--username")
    email = _validated(TypeAdapter(Email), email, "--email")
    existing = user_repo.get_user_by_username(username)
    if existing is not None:
        if if_missing:
            click.echo(
                f"user {username!r} already exists (role {existing.role.value}); nothing to do"
            )
            return
        raise click.ClickException(f"user {username!r} already exists")
    password = os.environ.get(password_env) or click.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    password = _validated(TypeAdapter(NewPassword), password, "password")
    try:
        user = accounts.create_admin(username, email, password)
    except Conflict as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"created admin {user.username!r} (id {user.id}, role {Role.ADMIN.value})")


@click.command("admin-hint")
@with_appcontext
def admin_hint_command() -> None:
    """Say how to create an admin, only while there is no active one (`make run` asks at each
    start, so the hint stops once it has been followed)."""
    if user_repo.first_active_admin() is not None:
        return
    # The command as it was typed (`make run`: .venv/bin/flask), which works where it did.
    flask = sys.argv[0] if Path(sys.argv[0]).name == "flask" else "flask"
    click.echo(
        f"No admin yet. Create one with:  {flask} create-admin --username admin "
        "--email admin@example.com\n"
        "(or start with ADMIN_USERNAME=admin ADMIN_PASSWORD=... make run)"
    )


@click.command("load-daily")
@click.option(
    "--date",
    "log_date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Day to log (YYYY-MM-DD). Default: today (UTC) plus any missed days.",
)
@with_appcontext
def load_daily_command(log_date: datetime | None) -> None:
    """Snapshot every active task into the daily log, in this process (no broker needed).
    Idempotent: a day already logged gains nothing twice."""
    days = loader.dates_to_log(utcnow().date(), log_date.date() if log_date else None)
    if not days:
        click.echo("nothing to do: today is already logged")
        return
    for day in days:
        with click.progressbar(length=1, label=f"logging {day}", show_pos=True) as bar:

            def progress(p: loader.ChunkProgress, bar: Any = bar) -> None:
                bar.length = max(p.chunks_total, 1)
                bar.update(1)

            run = loader.run_inline(day, "cli", progress)
        click.echo(
            f"{day}: run {run.id} {run.state.value}: {run.rows_logged} logged, "
            f"{run.rows_skipped} already logged, {run.rows_eligible} active tasks, "
            f"{run.chunks_total} chunks"
        )


@click.command("import-csv")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Validate and count; write nothing.")
@click.option(
    "--as",
    "actor_name",
    default=None,
    help="Username the import is attributed to (audit). Default: the first active admin.",
)
@with_appcontext
def import_csv_command(path: Path, dry_run: bool, actor_name: str | None) -> None:
    """Import tasks from a CSV file (the format of POST /upload-csv), with a progress bar and
    the same report. Idempotent: rows imported before are skipped. The same per-file caps
    (CSV_MAX_ROWS_PER_FILE, CSV_MAX_NEW_ACCOUNTS_PER_FILE: set them for one run to raise them)."""
    actor = (
        user_repo.get_user_by_username(actor_name.lower())
        if actor_name
        else user_repo.first_active_admin()
    )
    if actor is None:
        raise click.ClickException(
            f"no user {actor_name!r}" if actor_name else "no active admin: pass --as USERNAME"
        )
    # The file is read where it is (no copy to clean up; it is the operator's own). The caps
    # and the assignee rule are the API's: the upload's time is the command's start.
    uploaded_at = utcnow()
    with path.open("rb") as stream:
        try:
            total = csv_import.count_rows_within_cap(stream)
            with click.progressbar(length=total, label=f"importing {path.name}") as bar:
                done = 0

                def progress(rows: int) -> None:
                    nonlocal done
                    bar.update(rows - done)
                    done = rows

                report = csv_import.import_tasks(
                    stream,
                    actor,
                    uploaded_at=uploaded_at,
                    dry_run=dry_run,
                    batch_size=current_app.config["SETTINGS"].csv_batch_rows,
                    writers=current_app.config["SETTINGS"].csv_import_writers,
                    on_progress=progress,
                )
        except DomainError as exc:
            raise click.ClickException(exc.message) from exc
    click.echo(json.dumps(report.as_dict(), indent=2))


class Days(click.ParamType[timedelta]):
    """A span of whole days, written `180d`."""

    name = "days"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        match = re.fullmatch(r"(\d{1,5})d", str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a number of days such as 180d", param, ctx)
        return timedelta(days=int(match[1]))


@click.group("logs")
def logs_group() -> None:
    """The daily task log."""


@logs_group.command("prune")
@click.option(
    "--older-than",
    "older_than",
    type=Days(),
    required=True,
    help="Remove the days logged before today (UTC) minus this span, e.g. 180d.",
)
@with_appcontext
def prune_logs_command(older_than: timedelta) -> None:
    """Remove old days of the task log: whole months on PostgreSQL (a partition dropped once
    all of its days are older), rows on SQLite. Prints what it removed; safe at any time."""
    report = log_retention.prune(older_than, utcnow().date())
    for line in report.lines():
        click.echo(line)


def register_commands(app: Flask) -> None:
    app.cli.add_command(create_admin_command)
    app.cli.add_command(admin_hint_command)
    app.cli.add_command(load_daily_command)
    app.cli.add_command(import_csv_command)
    app.cli.add_command(logs_group)
