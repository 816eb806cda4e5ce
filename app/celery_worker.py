"""The Celery app for worker and beat:

celery -A app.celery_worker.celery worker --loglevel=info
celery -A app.celery_worker.celery beat --loglevel=info
"""

from __future__ import annotations

from app import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]
