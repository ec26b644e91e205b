"""Fleet and health: which workers are alive, and whether this process can serve."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import text

from core import repository
from core.models import utcnow
from service.deps import StateDep, TenantDep, UowDep
from service.errors import responses
from service.schemas import UtcDatetime

router = APIRouter(tags=["fleet"])


class WorkerPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    hostname: str
    pool: str
    device: str
    device_name: str | None
    memory_bytes: int | None
    versions: dict[str, Any]
    # The job the worker runs now, shown only when it is one of the caller's jobs.
    current_job_id: str | None
    started_at: UtcDatetime
    last_heartbeat: UtcDatetime
    alive: bool = False


@router.get("/v1/workers", response_model=list[WorkerPublic], responses=responses(401, 503))
async def list_workers(uow: UowDep, tenant_id: TenantDep, state: StateDep) -> list[WorkerPublic]:
    rows = await uow.session.execute(repository.workers_seen_by(tenant_id))
    now = utcnow()
    out = []
    for row, own_job_id in rows:
        public = WorkerPublic.model_validate(row)
        public.current_job_id = own_job_id
        age = (now - public.last_heartbeat.astimezone(UTC)).total_seconds()
        public.alive = age <= state.settings.heartbeat_timeout_s
        out.append(public)
    return out


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def readyz(state: StateDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready"
        checks["database"] = f"unreachable: {type(exc).__name__}"

    def ping_broker() -> None:
        with state.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)

    try:
        await anyio.to_thread.run_sync(ping_broker)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": checks,
        "time": datetime.now(UTC).isoformat(),
    }
    return JSONResponse(body, status_code=200 if ready else 503)
