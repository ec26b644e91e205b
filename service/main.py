"""The FastAPI gateway. It never imports torch: uploads are inspected and jobs
run on workers.

    uvicorn service.main:app            # or: stillhouse api
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from core.broker import make_celery
from core.config import Settings, get_settings
from core.db import make_async_engine, make_async_sessionmaker
from core.replies import reply_channel
from core.status_cache import status_cache
from core.storage import ArtifactStore
from service.catalog.losses import router as losses_router
from service.catalog.students import router as students_router
from service.datasets.endpoints import router as datasets_router
from service.docs import install_docs
from service.errors import install_error_handlers
from service.fleet.endpoints import router as fleet_router
from service.integrity import install_integrity_handler
from service.jobs.endpoints import router as jobs_router
from service.models.endpoints import router as models_router
from service.state import AppState, KeyCache
from service.telemetry.endpoints import router as telemetry_router
from service.telemetry.middleware import HttpMetricsMiddleware
from service.uploads import BodyLimitMiddleware

# The dashboard: index.html at "/", its modules and styles under /dashboard/ (package data).
DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
DASHBOARD = DASHBOARD_DIR / "index.html"
DESCRIPTION = """Upload a teacher model and data, start a distillation job, and download the
student with a report of what distillation bought against a no-KD baseline.

**Authentication.** Every `/v1` route needs an API key, sent as
`Authorization: Bearer <key>` (press *Authorize*). `stillhouse keys create` makes one.

**Errors** are `{"error": "<code>", "detail": "<a sentence>"}` with a 4xx or 5xx status;
each operation lists the ones it can answer. A 503 carries `Retry-After`.

**Lists** are newest first, `limit` items a page; pass `next_cursor` as `cursor` for the
next page. Creating requests accept an `Idempotency-Key` header, so a retry is safe."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_async_engine(settings.async_database_url)
        app.state.stillhouse = AppState(
            settings=settings,
            engine=engine,
            sessions=make_async_sessionmaker(engine),
            celery=make_celery(settings),
            store=ArtifactStore(settings.resolved_storage_url, settings.data_dir / "cache"),
            keys=KeyCache(ttl=settings.key_cache_seconds),
            replies=reply_channel(settings),
            status=status_cache(settings),
        )
        yield
        await app.state.stillhouse.replies.aclose()
        if app.state.stillhouse.status is not None:
            await app.state.stillhouse.status.aclose()
        await engine.dispose()

    app = FastAPI(
        title="Stillhouse",
        version="0.1.0",
        summary="Knowledge distillation as a service: upload a teacher and data, get a student.",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by service.docs from installed files: FastAPI's own pages load from a CDN.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    install_docs(app)
    install_error_handlers(app)
    install_integrity_handler(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_upload_bytes=settings.max_upload_bytes,
        max_json_bytes=settings.max_json_bytes,
    )
    app.add_middleware(HttpMetricsMiddleware)  # outermost: it times and counts the 413s too
    routers = (models_router, datasets_router, jobs_router, fleet_router)
    for router in (*routers, students_router, losses_router, telemetry_router):
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD, media_type="text/html")

    app.mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR), name="dashboard")

    return app


app = create_app()
