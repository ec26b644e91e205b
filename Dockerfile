# Two images from one file:
#   api     the gateway: FastAPI, SQLAlchemy, Celery client; no torch
#   worker  adds torch (CPU build; --build-arg TORCH_VARIANT=cu126 for CUDA), ONNX Runtime
#           and the KD engine
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
# torch first, from the PyTorch index: the CPU build unless TORCH_VARIANT names a CUDA one
# (cu126, cu128, ...; docker-compose.yml's worker-gpu passes it). PyPI's Linux wheel is the
# CUDA build, gigabytes a CPU worker never uses. Only torch and what it needs come from that
# index; its version is pyproject.toml's pin, read here so that it is written once. The
# second install finds torch satisfied (==2.13.0 matches 2.13.0+cpu) and takes the rest
# from PyPI.
ARG TORCH_VARIANT=cpu
RUN TORCH="$(python -c 'import tomllib; extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]; print(next(r for r in extras["worker"] if r.startswith("torch==")))')" \
    && pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "$TORCH" \
    && pip install '.[worker,s3]'
USER stillhouse
CMD ["stillhouse", "worker", "--pool", "cpu", "--device", "cpu"]
