"""The gauges read at scrape time: jobs by status, queue depth and the oldest
queued stage per pool, live workers per pool, how long ago the reaper and the
sweeper ran, and (with a Redis broker) the broker's own queue lengths.

They are read from the database on every scrape rather than kept in the
process, so every gateway process answers the same numbers and none go stale.
The reads run under `STILLHOUSE_METRICS_DB_TIMEOUT_S`: in an outage the scrape
answers at once without them and with `stillhouse_metrics_database_up 0`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core import repository
from core.models import utcnow
from core.queues import JobStatus, Pool
from service.state import AppState

log = logging.getLogger("stillhouse.api")
MAINTENANCE_TASKS = ("reaper", "sweeper")


@dataclass
class Snapshot:
    now: datetime
    database_up: bool = False
    jobs: dict[str, int] = field(default_factory=dict)
    # pool -> (stages queued, oldest queued_at)
    queues: dict[str, tuple[int, datetime | None]] = field(default_factory=dict)
    live_workers: dict[str, int] = field(default_factory=dict)
    last_runs: dict[str, datetime] = field(default_factory=dict)
    # pool -> messages waiting in the broker; None when the broker is not Redis.
    broker: dict[str, int] | None = None
    broker_up: bool | None = None

    @property
    def pools(self) -> list[str]:
        """Every pool worth a series: the built-in ones, and any with work or workers."""
        return sorted({p.value for p in Pool} | set(self.queues) | set(self.live_workers))


def _aware(moment: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; every one we write is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def read_snapshot(state: AppState) -> Snapshot:
    snapshot = Snapshot(now=utcnow())
    timeout = state.settings.metrics_db_timeout_s
    try:
        with anyio.fail_after(timeout):
            await _read_database(state, snapshot)
        snapshot.database_up = True
    except Exception as exc:  # TimeoutError or any driver error: answer without the gauges
        log.warning("/metrics: database read failed: %s", type(exc).__name__)
    if state.settings.resolved_broker_url.startswith(("redis://", "rediss://")):
        try:
            with anyio.fail_after(timeout):
                snapshot.broker = await _broker_lengths(state, snapshot.pools)
            snapshot.broker_up = True
        except Exception as exc:
            log.warning("/metrics: broker read failed: %s", type(exc).__name__)
            snapshot.broker_up = False
    return snapshot


async def _read_database(state: AppState, snapshot: Snapshot) -> None:
    timeout_s = state.settings.heartbeat_timeout_s
    async with state.sessions() as session:
        jobs = await session.execute(repository.job_status_counts())
        snapshot.jobs = {status: count for status, count in jobs}
        queued = await session.execute(repository.queued_stage_stats())
        snapshot.queues = {pool or "": (count, oldest) for pool, count, oldest in queued}
        live = await session.execute(repository.live_worker_counts(snapshot.now, timeout_s))
        snapshot.live_workers = {pool: count for pool, count in live}
        runs = await session.execute(repository.maintenance_runs())
        snapshot.last_runs = {name: _aware(at) for name, at in runs}


async def _broker_lengths(state: AppState, pools: list[str]) -> dict[str, int]:
    """LLEN of each pool's Celery queue: the messages no worker has fetched yet. Kombu
    keeps a queue under its name behind the deployment's key prefix."""
    settings = state.settings
    client = aioredis.from_url(settings.resolved_broker_url, socket_timeout=2)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.llen(f"{settings.broker_prefix}{pool}")
            lengths = await pipe.execute()
    finally:
        await client.aclose()
    return dict(zip(pools, (int(n) for n in lengths), strict=True))


class DatabaseCollector(Collector):
    """Turns one Snapshot into gauge families; built afresh for every scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.snapshot
        yield GaugeMetricFamily(
            "stillhouse_metrics_database_up",
            "1 when this scrape read the database within STILLHOUSE_METRICS_DB_TIMEOUT_S, "
            "else 0 (and the database gauges are left out).",
            value=1 if s.database_up else 0,
        )
        if s.database_up:
            yield from self._database_gauges()
        if s.broker_up is not None:
            yield GaugeMetricFamily(
                "stillhouse_metrics_broker_up",
                "1 when this scrape read the Redis broker's queue lengths, else 0.",
                value=1 if s.broker_up else 0,
            )
        if s.broker is not None:
            broker = GaugeMetricFamily(
                "stillhouse_broker_queue_length",
                "Messages waiting in the broker's queue of a pool (Redis LLEN): sent, not "
                "yet fetched by a worker.",
                labels=["pool"],
            )
            for pool, length in sorted(s.broker.items()):
                broker.add_metric([pool], length)
            yield broker

    def _database_gauges(self) -> Iterator[GaugeMetricFamily]:
        s = self.snapshot
        jobs = GaugeMetricFamily(
            "stillhouse_jobs", "Jobs of every tenant, by status.", labels=["status"]
        )
        for status in sorted({st.value for st in JobStatus} | set(s.jobs)):
            jobs.add_metric([status], s.jobs.get(status, 0))
        yield jobs

        depth = GaugeMetricFamily(
            "stillhouse_queue_depth",
            "Job stages queued for a pool: sent to it and not yet claimed by a worker.",
            labels=["pool"],
        )
        oldest = GaugeMetricFamily(
            "stillhouse_queue_oldest_age_seconds",
            "Seconds the oldest queued stage of a pool has waited since its message was "
            "sent (job_stages.queued_at); 0 when none waits.",
            labels=["pool"],
        )
        live = GaugeMetricFamily(
            "stillhouse_live_workers",
            "Workers of a pool whose heartbeat is within STILLHOUSE_HEARTBEAT_TIMEOUT_S.",
            labels=["pool"],
        )
        for pool in s.pools:
            count, since = s.queues.get(pool, (0, None))
            depth.add_metric([pool], count)
            waited = (s.now - _aware(since)).total_seconds() if since is not None else 0.0
            oldest.add_metric([pool], max(0.0, waited))
            live.add_metric([pool], s.live_workers.get(pool, 0))
        yield from (depth, oldest, live)

        age = GaugeMetricFamily(
            "stillhouse_maintenance_last_run_age_seconds",
            "Seconds since any worker last completed a pass of the reaper or the sweeper "
            "(absent until one has).",
            labels=["task"],
        )
        stamp = GaugeMetricFamily(
            "stillhouse_maintenance_last_run_timestamp_seconds",
            "Unix time at which any worker last completed a pass of the reaper or the sweeper.",
            labels=["task"],
        )
        for task in MAINTENANCE_TASKS:
            at = s.last_runs.get(task)
            if at is not None:
                age.add_metric([task], max(0.0, (s.now - at).total_seconds()))
                stamp.add_metric([task], at.timestamp())
        yield from (age, stamp)
