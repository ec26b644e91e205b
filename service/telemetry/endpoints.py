"""GET /metrics: the Prometheus text format, outside /v1 and the OpenAPI document.

Several gateway processes (uvicorn --workers N, or several containers behind
one scrape target) each count their own requests. With PROMETHEUS_MULTIPROC_DIR
set (`stillhouse api` sets it), every process writes its counters to files
there and a scrape of any one of them sums them all; without it, the process's
own registry is served. The gauges come from the database on every scrape
(service.telemetry.collector), so any process answers the same."""

from __future__ import annotations

import hmac
import os

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from service.deps import StateDep
from service.errors import Unauthorized
from service.telemetry.collector import DatabaseCollector, Snapshot, read_snapshot
from service.telemetry.middleware import LATENCY, REQUESTS

router = APIRouter()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def scrape_registry(snapshot: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        # Sums the files of every process, this one included; per-process facts (CPU,
        # memory) have no meaning summed, so they are left out in this mode.
        MultiProcessCollector(registry)
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    registry.register(DatabaseCollector(snapshot))
    return registry


def _check_token(request: Request, token: str) -> None:
    if not token:
        return
    sent = request.headers.get("authorization", "")
    scheme, _, value = sent.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.encode()
    ):
        raise Unauthorized("Send the metrics token as 'Authorization: Bearer <token>'.")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: StateDep) -> Response:
    _check_token(request, state.settings.metrics_token)
    snapshot = await read_snapshot(state)
    body = generate_latest(scrape_registry(snapshot))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
