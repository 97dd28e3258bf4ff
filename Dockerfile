# syntax=docker/dockerfile:1
# One image recipe for both services: `--build-arg SERVICE=ingest` (port 8000) or
# `SERVICE=processor` (port 8001). Build context: the repository root (compose sets both).
ARG PYTHON_VERSION=3.11

FROM ghcr.io/astral-sh/uv:0.9 AS uv

FROM python:${PYTHON_VERSION}-slim AS build
ARG SERVICE
RUN test "$SERVICE" = ingest || test "$SERVICE" = processor
COPY --from=uv /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first, from the lock file only, so code changes reuse this layer.
COPY pyproject.toml uv.lock README.md ./
COPY shared/pyproject.toml shared/pyproject.toml
COPY services/ingest/pyproject.toml services/ingest/pyproject.toml
COPY services/processor/pyproject.toml services/processor/pyproject.toml
COPY testing/pyproject.toml testing/pyproject.toml
COPY clients/python/pyproject.toml clients/python/pyproject.toml
RUN uv sync --frozen --no-dev --package "$SERVICE" --no-install-workspace
COPY shared shared
COPY services/$SERVICE services/$SERVICE
RUN uv sync --frozen --no-dev --package "$SERVICE" --no-editable \
 && ln -s "/app/.venv/bin/event-tracker-$SERVICE" /app/.venv/bin/event-tracker-service

FROM python:${PYTHON_VERSION}-slim
ARG SERVICE
RUN useradd --system --uid 10001 --no-create-home app
COPY --from=build --chown=app:app /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 LOG_FORMAT=json SERVICE=$SERVICE
USER app
EXPOSE 8000 8001
# Liveness on the service's own port: INGEST_PORT (8000) or PROCESSOR_PORT (8001).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; s = os.environ['SERVICE']; port = os.environ.get(f'{s.upper()}_PORT', '8000' if s == 'ingest' else '8001'); urllib.request.urlopen(f'http://127.0.0.1:{port}/health/live', timeout=2)"]
CMD ["event-tracker-service"]
