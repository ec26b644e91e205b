"""Do list, status and metrics reads stay flat as the tables grow?

    .venv/bin/python bench/scale.py [--requests 200] [--jobs 100000] [--tenants 100]
                                    [--points-per-job 100] [--pg URL]

Two fresh, migrated PostgreSQL databases on the shared server, "empty" and "loaded", each
with a real `stillhouse api` process (uvicorn) on it. Requests go one at a time over one
keep-alive httpx connection per gateway (latency, not throughput), the two gateways and
the four requests taking turns (so the box's load falls on both alike), after 20 warm-up
rounds:

  list first page   GET /v1/jobs?limit=50                        (50 items)
  list deep page    GET /v1/jobs?limit=50&cursor=...             (50 items)
  job               GET /v1/jobs/{id}                            (the tenant's newest job)
  metrics since     GET /v1/jobs/{id}/metrics?since_epoch=15     (its last 5 of 20 epochs)

Both hold one tenant with 120 jobs, their 5 stages and 100 points each; "empty" is asked
as that tenant (the deep page is its second). In "loaded", tests/bulk.py adds `--jobs`
jobs over `--tenants` other tenants, their stages and `--points-per-job` points each
(100,000 jobs, 500,000 stages and 10 million points by default, written by INSERT ...
SELECT generate_series), then ANALYZE; it is asked as one of those tenants (1,000 jobs):
its newest job, and the deep page 950 jobs down. Every row of both has the same shape
(tests/bulk.py), so both answer pages of equal size. It prints one markdown row per
request (p50 and p95 in ms, the loaded p50 over the empty one), and drops both databases
at the end.
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


def measure(
    clients: dict[str, httpx.Client], paths: dict[str, dict[str, str]], requests: int
) -> dict[str, dict[str, list[float]]]:
    """Milliseconds per request, by phase and request. The phases' gateways and the requests
    take turns, so that the box's load (other processes) falls on all of them alike."""
    times: dict[str, dict[str, list[float]]] = {p: {n: [] for n in paths[p]} for p in clients}
    for round_ in range(WARMUP + requests):
        for name in paths["empty"]:
            for phase, client in clients.items():
                path = paths[phase][name]
                start = time.perf_counter()
                response = client.get(path)
                elapsed = (time.perf_counter() - start) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
                if round_ >= WARMUP:
                    times[phase][name].append(elapsed)
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

    dbs: list[Database] = []
    gateways: list[Gateway] = []
    with tempfile.TemporaryDirectory(prefix="stillhouse-scale-") as tmp:
        clients: dict[str, httpx.Client] = {}
        paths: dict[str, dict[str, str]] = {}
        try:
            for phase in ("empty", "loaded"):
                db = Database(args.pg)
                db.name = db.name.replace("chaos", f"scale_{phase}")
                db.url = db.url.replace("chaos", f"scale_{phase}")
                db.sqlalchemy_url = db.sqlalchemy_url.replace("chaos", f"scale_{phase}")
                db.create()
                dbs.append(db)
                with psycopg.connect(db.url) as conn:
                    bulk.load(conn, EMPTY_TAG, 1, 120, points_per_job=args.points_per_job)
                if phase == "loaded":
                    say(
                        f"{db.name}: loading {args.jobs:,} jobs over {args.tenants} tenants "
                        f"and {args.jobs * args.points_per_job:,} points"
                    )
                    seconds = load_big(db, args)
                    say(f"loaded in {seconds:.0f} s")
                folder = Path(tmp) / phase
                folder.mkdir()
                settings = Settings(
                    data_dir=folder / "data",
                    database_url=db.sqlalchemy_url,
                    # GETs send no message; the prefix keeps the shared Redis's keys apart.
                    broker_url=os.environ.get("STILLHOUSE_TEST_REDIS", "redis://127.0.0.1:6379/0"),
                    broker_prefix=f"bench-scale-{uuid.uuid4().hex[:8]}:",
                )
                gateway = Gateway(
                    {
                        **os.environ,
                        "STILLHOUSE_DATA_DIR": str(settings.data_dir),
                        "STILLHOUSE_DATABASE_URL": settings.database_url,
                        "STILLHOUSE_BROKER_URL": settings.broker_url,
                        "STILLHOUSE_BROKER_PREFIX": settings.broker_prefix,
                    },
                    folder,
                )
                gateways.append(gateway)
                gateway.start()
                # Empty: its one tenant, the deep page its second. Loaded: the big load's
                # tenant 0 (jobs 0, N, 2N...), the deep page 950 jobs down its 1,000.
                tag = EMPTY_TAG if phase == "empty" else LOADED_TAG
                deep = 49 if phase == "empty" else 949 * args.tenants
                key = create_key(settings, f"{tag}-0")
                clients[phase] = httpx.Client(
                    base_url=gateway.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
                )
                paths[phase] = paths_for(db, tag, bulk.row_id(tag, "j", deep))
            say(f"{args.requests} requests of each kind on each database, taking turns")
            results = measure(clients, paths, args.requests)
            counts = dbs[-1].rows(
                "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_stages), "
                "(SELECT count(*) FROM metrics)"
            )[0]
        finally:
            for client in clients.values():
                client.close()
            for gateway in gateways:
                gateway.stop()
            for db in dbs:
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
