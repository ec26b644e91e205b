"""Do list, status and metrics reads stay flat as the tables grow?

    .venv/bin/python bench/scale.py [--requests 200] [--jobs 100000] [--tenants 100]
                                    [--points-per-job 100] [--pg URL]

A fresh, migrated PostgreSQL database on the shared server and a real `stillhouse api`
process (uvicorn) on it; requests go one at a time over one keep-alive httpx connection
(latency, not throughput), each series after 20 warm-up requests:

  list first page   GET /v1/jobs?limit=50                        (50 items)
  list deep page    GET /v1/jobs?limit=50&cursor=...             (50 items)
  job               GET /v1/jobs/{id}                            (the tenant's newest job)
  metrics since     GET /v1/jobs/{id}/metrics?since_epoch=15     (its last 5 of 20 epochs)

Phase "empty": one tenant alone, 120 jobs with their 5 stages and 100 points each (the
deep page is its second). Phase "loaded": tests/bulk.py adds `--jobs` jobs over `--tenants`
other tenants, their stages and `--points-per-job` points each (100,000 jobs, 500,000
stages and 10 million points by default, written by INSERT ... SELECT generate_series),
then ANALYZE; the same requests run again as one of the new tenants (1,000 jobs): its
newest job, and the deep page 950 jobs down. Every row of both phases has the same shape
(tests/bulk.py), so the two phases answer pages of equal size. It prints one markdown row per request (p50 and p95 in
ms, the loaded p50 over the empty one), and drops the database at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chaos_stack import Database, Gateway, say  # noqa: E402
from core.config import Settings  # noqa: E402
from core.keys import create_key  # noqa: E402
from tests import bulk  # noqa: E402

WARMUP = 20
EMPTY_TAG, LOADED_TAG = "scale-a", "scale-b"  # tenants "scale-a-0", "scale-b-0"...


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cursor_of(db: Database, job_id: str) -> str:
    """The next_cursor a page ending at this job would carry (service.schemas.encode_cursor)."""
    (micros,) = db.rows(
        "SELECT (extract(epoch FROM created_at) * 1000000)::bigint FROM jobs WHERE id = %s",
        job_id,
    )[0]
    return f"{micros}_{job_id}"


def measure(client: httpx.Client, paths: dict[str, str], requests: int) -> dict[str, list[float]]:
    """Milliseconds per request of each path, the paths taking turns so that the box's load
    falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(WARMUP + requests):
        for name, path in paths.items():
            start = time.perf_counter()
            response = client.get(path)
            elapsed = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
            if round_ >= WARMUP:
                times[name].append(elapsed)
    return times


def paths_for(db: Database, tag: str, deep_after: str) -> dict[str, str]:
    """The requests of one phase, as the tenant of `tag`'s bulk load (its job 0 is its newest)."""
    job = bulk.row_id(tag, "j", 0)
    return {
        "list first page": "/v1/jobs?limit=50",
        "list deep page": f"/v1/jobs?limit=50&cursor={cursor_of(db, deep_after)}",
        "job": f"/v1/jobs/{job}",
        "metrics since": f"/v1/jobs/{job}/metrics?since_epoch=15",
    }


def load_big(db: Database, args: argparse.Namespace) -> float:
    """The big load, as a restore would run it: the stages' and points' secondary indexes and
    unique constraints dropped and built again after (one sort each instead of 10 million
    insertions), and no per-row foreign-key trigger (the rows are consistent by
    construction). The end state is the migrated schema, analyzed."""
    start = time.monotonic()
    tables = ("job_stages", "metrics")
    with psycopg.connect(db.url) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET maintenance_work_mem = '512MB'")
        constraints = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE contype = 'u' AND conrelid::regclass::text = ANY(%s)",
            (list(tables),),
        ).fetchall()
        for table, name, _ in constraints:
            conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        indexes = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = ANY(%s) "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
            (list(tables),),
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        bulk.load(conn, LOADED_TAG, args.tenants, args.jobs, args.points_per_job)
        say(f"rows written in {time.monotonic() - start:.0f} s; building the indexes")
        for _, definition in indexes:
            conn.execute(definition)
        for table, name, definition in constraints:
            conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    with psycopg.connect(db.url, autocommit=True) as conn:
        for table in ("tenants", "jobs", *tables):
            conn.execute(f"ANALYZE {table}")
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--points-per-job", type=int, default=100)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "STILLHOUSE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()

    db = Database(args.pg)
    db.name = db.name.replace("chaos", "scale")
    db.url = db.url.replace("chaos", "scale")
    db.sqlalchemy_url = db.sqlalchemy_url.replace("chaos", "scale")
    gateway = None
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="stillhouse-scale-") as tmp:
        folder = Path(tmp)
        try:
            db.create()
            say(f"database {db.name}")
            with psycopg.connect(db.url) as conn:
                bulk.load(conn, EMPTY_TAG, tenants=1, jobs=120, points_per_job=args.points_per_job)
            settings = Settings(
                data_dir=folder / "data",
                database_url=db.sqlalchemy_url,
                # GETs send no message; the prefix keeps the shared Redis's keys apart.
                broker_url=os.environ.get("STILLHOUSE_TEST_REDIS", "redis://127.0.0.1:6379/0"),
                broker_prefix=f"bench-scale-{uuid.uuid4().hex[:8]}:",
            )
            env = {
                **os.environ,
                "STILLHOUSE_DATA_DIR": str(settings.data_dir),
                "STILLHOUSE_DATABASE_URL": settings.database_url,
                "STILLHOUSE_BROKER_URL": settings.broker_url,
                "STILLHOUSE_BROKER_PREFIX": settings.broker_prefix,
            }
            gateway = Gateway(env, folder)
            gateway.start()
            with httpx.Client(base_url=gateway.url, timeout=30) as client:
                say(f"empty: {args.requests} requests of each kind")
                client.headers["Authorization"] = f"Bearer {create_key(settings, 'scale-a-0')}"
                paths = paths_for(db, EMPTY_TAG, bulk.row_id(EMPTY_TAG, "j", 49))
                results["empty"] = measure(client, paths, args.requests)
                say(
                    f"loading {args.jobs:,} jobs over {args.tenants} tenants and "
                    f"{args.jobs * args.points_per_job:,} points"
                )
                seconds = load_big(db, args)
                say(f"loaded in {seconds:.0f} s")
                # As the big load's tenant 0 (its jobs 0, N, 2N...): the deep page starts
                # 950 jobs down its 1,000.
                client.headers["Authorization"] = f"Bearer {create_key(settings, 'scale-b-0')}"
                deep = bulk.row_id(LOADED_TAG, "j", 949 * args.tenants)
                say(f"loaded: {args.requests} requests of each kind")
                results["loaded"] = measure(client, paths_for(db, LOADED_TAG, deep), args.requests)
            counts = db.rows(
                "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_stages), "
                "(SELECT count(*) FROM metrics)"
            )[0]
        finally:
            if gateway is not None:
                gateway.stop()
            db.drop()
    report(results, counts, args.requests, seconds)
    return 0


def report(
    results: dict[str, dict[str, list[float]]], counts: tuple, requests: int, seconds: float
) -> None:
    jobs, stages, points = counts
    print(
        f"\nloaded: {jobs:,} jobs, {stages:,} stages, {points:,} metric points "
        f"(bulk load and ANALYZE {seconds:.0f} s); {requests} requests each, sequential\n"
    )
    print("| request | empty p50 | empty p95 | loaded p50 | loaded p95 | p50 loaded/empty |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in results["empty"]:
        empty, loaded = results["empty"][name], results["loaded"][name]
        e50, l50 = statistics.median(empty), statistics.median(loaded)
        print(
            f"| {name} | {e50:.1f} ms | {percentile(empty, 0.95):.1f} ms | {l50:.1f} ms "
            f"| {percentile(loaded, 0.95):.1f} ms | {l50 / e50:.2f}x |"
        )


if __name__ == "__main__":
    sys.exit(main())
