"""Access to the settings and helpers a service needs, resolved from the running app."""

from __future__ import annotations

from celery import Celery
from flask import current_app

from app.auth.passwords import PasswordService
from app.config import Settings


def settings() -> Settings:
    value: Settings = current_app.config["SETTINGS"]
    return value


def passwords() -> PasswordService:
    s = settings()
    return PasswordService(s.argon2_time_cost, s.argon2_memory_cost_kib, s.argon2_parallelism)


def celery() -> Celery:
    value: Celery = current_app.extensions["celery"]
    return value
