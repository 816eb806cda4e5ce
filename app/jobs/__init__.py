"""Celery job bodies ("jobs", so they are never confused with the product's tasks)."""
