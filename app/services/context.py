"""Access to the settings and helpers a service needs, resolved from the running app."""

from __future__ import annotations

from celery import Celery
from flask import current_app

from app.auth.passwords import PasswordService
from app.auth.session_memory import SessionMemory
from app.auth.tokens import VerifiedTokens
from app.cache.store import ResponseCache
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


def response_cache() -> ResponseCache | None:
    """The app's response cache and counter store, None when caching is off."""
    value: ResponseCache | None = current_app.extensions.get("response_cache")
    return value


def session_memory() -> SessionMemory | None:
    value: SessionMemory | None = current_app.extensions.get("session_memory")
    return value


def verified_tokens() -> VerifiedTokens:
    value: VerifiedTokens = current_app.extensions["verified_tokens"]
    return value
