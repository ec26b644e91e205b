"""The operator's commands: migrate, api, worker, gc. They run the service's parts on
this host and read the STILLHOUSE_* settings (core.config), not --url/--key."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import click

from core.config import get_settings


def redacted(url: str) -> str:
    head, sep, tail = url.partition("@")
    return f"{head.split(':')[0]}://***@{tail}" if sep else url


def migrate_database() -> None:
    from core.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    click.echo(f"database migrated: {redacted(settings.resolved_database_url)}")


@click.command()
def migrate() -> int:
    """Apply database migrations (alembic upgrade head)."""
    migrate_database()
    return 0


LOG_LEVELS = click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False)


@click.command()
@click.option("--host", help="Interface to listen on; default: STILLHOUSE_HOST (127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on; default: STILLHOUSE_PORT (8000).")
@click.option("--log-level", type=LOG_LEVELS, default="info", show_default=True, help="Uvicorn's.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Gateway processes sharing the port; /metrics sums their counters.",
)
def api(host: str | None, port: int | None, log_level: str, workers: int) -> int:
    """Run the HTTP gateway alone."""
    import uvicorn

    from core import logs

    settings = get_settings()
    port = port or settings.port
    prepare_metrics_dir(settings.data_dir, port)
    uvicorn.run(
        "service.main:app",
        host=host or settings.host,
        port=port,
        workers=workers,
        # JSON lines or text (core.logs), for uvicorn's lines and the service's alike.
        log_config=logs.dict_config(log_level, settings.log_format),
        log_level=log_level.lower(),
        # Access lines only when asked for (info or debug): a polled status read is one
        # request every quarter second per watcher.
        access_log=log_level.lower() in ("info", "debug"),
    )
    return 0


def prepare_metrics_dir(data_dir: Path, port: int) -> Path:
    """Point prometheus_client's multiprocess mode at a folder (PROMETHEUS_MULTIPROC_DIR if
    the operator set one, else <data dir>/prometheus/<port>) and empty it: each gateway
    process writes its counters there and /metrics sums them. Files left by an earlier run
    would be counted again, so they go. It is set before any gateway process imports
    prometheus_client, which reads it once."""
    folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or data_dir / "prometheus" / str(port))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder.resolve())
    return folder


@click.command()
@click.option("--pool", default="cpu", show_default=True, help="The queue this worker serves.")
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="cpu, cuda:N, or cuda:all (one worker process per GPU).",
)
@click.option("--log-level", type=LOG_LEVELS, default="info", show_default=True, help="Celery's.")
def worker(pool: str, device: str, log_level: str) -> int:
    """Run a worker for one pool and device."""
    if device == "cuda:all":
        from stillhouse.gpus import run_per_gpu

        return run_per_gpu(pool, log_level)
    os.environ["STILLHOUSE_WORKER_POOL"] = pool
    os.environ["STILLHOUSE_WORKER_DEVICE"] = device
    get_settings.cache_clear()
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            click.echo(f"error: device {device} is not available on this host", err=True)
            return 2
    elif device != "cpu":
        click.echo(
            f"error: device must be 'cpu', 'cuda[:N]' or 'cuda:all', not '{device}'", err=True
        )
        return 2
    from core import logs
    from workers.app import celery_app

    # From here on, so the warnings Celery gives before it sets up logging are lines too.
    log_format = get_settings().log_format
    logs.configure(log_level.upper(), log_format)
    # Celery's banner is printed, not logged: left out where the lines are JSON.
    quiet = ["--quiet"] if logs.resolve_format(log_format) == "json" else []
    # solo pool: one process, one task at a time, and CUDA is never initialised
    # in a parent that forks (see docs/architecture.md, "Workers and pools").
    celery_app.worker_main(
        [
            *quiet,
            "worker",
            "--queues",
            pool,
            "--pool",
            "solo",
            "--concurrency",
            "1",
            "--hostname",
            f"{pool}-{device.replace(':', '')}-{os.getpid()}@%h",
            "--loglevel",
            log_level.upper(),
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0


@click.command()
@click.option(
    "--grace-seconds",
    type=float,
    help="Spare blobs younger than this (default: STILLHOUSE_GC_GRACE_S, one hour): an "
    "upload or a job may be about to record them.",
)
@click.option("--dry-run", is_flag=True, help="Count, delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def gc(grace_seconds: float | None, dry_run: bool, as_json: bool) -> int:
    """Delete stored blobs that no row references."""
    from core.blobs import collect
    from core.db import make_engine, make_sessionmaker
    from core.storage import ArtifactStore

    settings = get_settings()
    grace = settings.gc_grace_s if grace_seconds is None else grace_seconds
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_sessionmaker(engine)() as session:
            store = ArtifactStore(settings.resolved_storage_url)
            report = collect(store, session, grace, dry_run=dry_run)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(asdict(report)))
        return 0
    verb = "would delete" if report.dry_run else "deleted"
    click.echo(
        f"{verb} {report.deleted} unreferenced blob(s), {report.reclaimed_bytes} bytes "
        f"({report.reclaimed_bytes / 1024**2:.1f} MiB); kept {report.referenced} referenced and "
        f"{report.young} younger than {grace:g} s, of {report.blobs} blobs"
    )
    return 0
