"""The Celery app for worker and beat:

celery -A app.celery_worker.celery worker --loglevel=info
celery -A app.celery_worker.celery beat --loglevel=info
"""

from __future__ import annotations

from pathlib import Path

from app import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]
# Beat opens its schedule file (CELERY_BEAT_SCHEDULE) before any signal it sends, and stops if
# the directory is missing: instance/ is not made by anything else when the database is not an
# embedded SQLite file.
Path(flask_app.config["SETTINGS"].celery_beat_schedule).parent.mkdir(parents=True, exist_ok=True)
