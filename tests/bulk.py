"""Tenants, jobs, their stages and metric points in bulk, written by PostgreSQL itself
(INSERT ... SELECT generate_series): the rows the index tests and bench/scale.py need,
100,000 jobs and 10 million points in minutes rather than hours of ORM inserts.

Every id is an md5 of `tag` and a number shaped as a UUID, so two loads with different
tags never collide and a caller can name a row without reading it back. Jobs are spread
evenly over the tenants, one second apart (the newest is tenant 0's job 0); job n's
status is STATUSES[n mod 10]: six in ten succeeded, then one each failed, cancelled,
queued and running."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

# A distillation spec of the usual size (what a list serializes for every job).
SPEC = {
    "kind": "distill",
    "name": "bulk",
    "teacher_model_id": "00000000-0000-4000-8000-000000000001",
    "train_dataset_id": "00000000-0000-4000-8000-000000000002",
    "val_dataset_id": "00000000-0000-4000-8000-000000000003",
    "student": {"architecture": "mlp", "params": {"hidden": [128, 64]}},
    "losses": [{"name": "kd", "weight": 0.9, "temperature": 4.0}, {"name": "ce", "weight": 0.1}],
    "training": {"epochs": 20, "batch_size": 64, "lr": 0.001, "optimizer": "adamw"},
    "teacher_outputs": "cached",
    "baseline": True,
}
STAGES = ("teacher_inference", "training", "evaluation", "export", "benchmark")
SERIES = ("loss", "loss/kd", "loss/ce", "val_accuracy", "val_agreement")
STATUSES = ("succeeded",) * 6 + ("failed", "cancelled", "queued", "running")


def uuid_sql(tag: str, kind: str, number: str) -> str:
    """SQL for the id of row `number` (an SQL expression) of `kind`."""
    return f"md5('{tag}{kind}' || ({number})::text)::uuid::text"


def row_id(tag: str, kind: str, n: int) -> str:
    """The id uuid_sql gives row `n` of `kind` ("t" tenant, "j" job), from Python."""
    return str(uuid.UUID(hashlib.md5(f"{tag}{kind}{n}".encode()).hexdigest()))


def load(
    conn: Any,
    tag: str,
    tenants: int,
    jobs: int,
    points_per_job: int = 0,
    point_jobs: int | None = None,
) -> None:
    """`jobs` jobs over `tenants` tenants (job n is tenant n mod tenants's), five stages each,
    and `points_per_job` points (five series, epochs 1..) for the first `point_jobs` jobs
    (all by default). `conn`: a psycopg connection; the caller commits or rolls back."""
    status = "(ARRAY[" + ",".join(f"'{s}'" for s in STATUSES) + f"])[1 + mod(n, {len(STATUSES)})]"
    conn.execute(
        f"INSERT INTO tenants (id, name, created_at) SELECT {uuid_sql(tag, 't', 'n')}, "
        f"'{tag}-' || n, now() FROM generate_series(0, {tenants - 1}) n"
    )
    conn.execute(
        "INSERT INTO jobs (id, tenant_id, name, spec, status, stage, progress, epoch, "
        "baseline_epoch, cancel_requested, summary, warnings, created_at, updated_at, "
        "started_at, finished_at) "
        f"SELECT {uuid_sql(tag, 'j', 'n')}, {uuid_sql(tag, 't', f'mod(n, {tenants})')}, "
        f"'job-' || n, %s::json, {status}, 'benchmark', 1.0, 20, 20, false, "
        """'{"report": null}'::json, '[]'::json, """
        "now() - n * interval '1 second', now(), now() - n * interval '1 second', now() "
        f"FROM generate_series(0, {jobs - 1}) n",
        (json.dumps(SPEC),),
    )
    names = "ARRAY[" + ",".join(f"'{s}'" for s in STAGES) + "]"
    conn.execute(
        "INSERT INTO job_stages (id, job_id, name, position, status, pool, worker_id, device, "
        "attempts, started_at, finished_at, outputs) "
        f"SELECT {uuid_sql(tag, 's', 'n * 10 + p')}, {uuid_sql(tag, 'j', 'n')}, "
        f"({names})[p], p - 1, 'succeeded', 'cpu', 'host/cpu/cpu/1', 'cpu', 1, now(), now(), "
        """'{"details": {"note": "bulk"}}'::json """
        f"FROM generate_series(0, {jobs - 1}) n, generate_series(1, {len(STAGES)}) p"
    )
    if points_per_job:
        epochs = -(-points_per_job // len(SERIES))
        series = "ARRAY[" + ",".join(f"'{s}'" for s in SERIES) + "]"
        conn.execute(
            "INSERT INTO metrics (job_id, step, epoch, name, value) "
            f"SELECT {uuid_sql(tag, 'j', 'n')}, e * 100, e, ({series})[k], 1.0 / (e + k) "
            f"FROM generate_series(0, {(point_jobs or jobs) - 1}) n, "
            f"generate_series(1, {epochs}) e, generate_series(1, {len(SERIES)}) k"
        )
