# Two images from one file:
#   api     the gateway: FastAPI, SQLAlchemy, Celery client; no torch
#   worker  adds torch, ONNX Runtime and the KD engine
# docker compose builds both (see docker-compose.yml).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY catalog catalog
COPY core core
COPY service service
COPY workers workers
COPY distill distill
COPY stillhouse stillhouse
COPY migrations migrations
RUN useradd --create-home --uid 1000 stillhouse && mkdir -p /data && chown stillhouse /data

FROM base AS api
RUN pip install '.[s3]'
USER stillhouse
EXPOSE 8000
CMD ["stillhouse", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# PIP_EXTRA_INDEX_URL may point pip at a CPU-only torch wheel index for a smaller image.
ARG PIP_EXTRA_INDEX_URL=""
RUN pip install '.[worker,s3]'
USER stillhouse
CMD ["stillhouse", "worker", "--pool", "cpu", "--device", "cpu"]
