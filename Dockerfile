# syntax=docker/dockerfile:1
# Build stage: the locked dependencies into a virtual environment.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.lock

# Runtime stage: the venv and the code, run as an unprivileged user.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENV=production \
    UPLOAD_DIR=/data/uploads \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    HOST=0.0.0.0
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /data/uploads /tmp/prometheus \
    && chown -R app:app /data /tmp/prometheus
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/mediaamp
COPY --chown=app:app app ./app
COPY --chown=app:app migrations ./migrations
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=2)"]
# granian (app/server.py): workers, threads and timeouts from the environment.
CMD ["python", "-m", "app.server"]
