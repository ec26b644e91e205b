"""How long does a submitted job wait before an idle worker starts it? `started_at -
created_at` of `--jobs` jobs, read from GET /v1/jobs/{id}, with Redis as the broker.

    .venv/bin/python bench/submit_latency.py [--jobs 20] [--warmup 2] [--keep]

It builds a private stack (bench/worker_stack.py: a fresh PostgreSQL database, a redis-server
of its own, a real `stillhouse api` and one real `stillhouse worker --pool cpu`), uploads the
digits teacher and data sets, then submits one small complete job at a time and waits until it
has finished before the next, so the worker is idle (blocked on the broker) at every submit.
`--warmup` jobs run first, unmeasured: the worker's first job imports torch and the stages.

created_at is set by the gateway when it inserts the job (before its commit and the message
send, service/state.py UnitOfWork.commit through core/dispatch.py); started_at by the worker's
claim of the first stage (core/lifecycle.claim). Both are this machine's clock. Also printed,
for the same jobs, the submit's HTTP round trip seen by this client (POST /v1/jobs until 202).
Target: p50 at most 25 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.worker_stack import DEFAULT_PG, Stack, percentile, say, small_job  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--pg", default=DEFAULT_PG, help="an admin URL of the PostgreSQL server")
    parser.add_argument("--keep", action="store_true", help="keep the folder and its logs")
    args = parser.parse_args()

    stack = Stack(args.pg, keep=args.keep)
    try:
        ids = stack.open()
        waits: list[float] = []  # ms, started_at - created_at
        posts: list[float] = []  # ms, the POST's round trip
        load_before = os.getloadavg()
        for index in range(args.warmup + args.jobs):
            # One epoch: the job only has to finish before the next submit.
            body = small_job(ids, f"latency-{index:02d}", seed=index)
            body["training"]["epochs"] = 1
            time.sleep(0.5)  # the worker is back on the broker, idle
            t0 = time.perf_counter()
            job_id = stack.submit(body)
            post_ms = (time.perf_counter() - t0) * 1000
            job = stack.wait(job_id)
            wait_ms = (
                datetime.fromisoformat(job["started_at"])
                - datetime.fromisoformat(job["created_at"])
            ).total_seconds() * 1000
            if index >= args.warmup:
                waits.append(wait_ms)
                posts.append(post_ms)
            tag = "warm-up" if index < args.warmup else f"{index - args.warmup + 1}"
            say(f"job {tag}: started_at - created_at {wait_ms:.1f} ms, POST {post_ms:.1f} ms")
        load_after = os.getloadavg()

        print(
            f"\n{args.jobs} jobs after {args.warmup} warm-up jobs, one idle worker, Redis broker; "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load_before} -> {load_after}"
        )
        print("\n| series | p50 | p95 | min | max | mean |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, values in (
            ("started_at - created_at", waits),
            ("POST /v1/jobs round trip", posts),
        ):
            print(
                f"| {name} | {percentile(values, 0.5):.1f} ms | {percentile(values, 0.95):.1f} ms "
                f"| {min(values):.1f} ms | {max(values):.1f} ms | {statistics.fmean(values):.1f} ms |"
            )
        p50 = percentile(waits, 0.5)
        print(f"\ntarget p50 <= 25 ms: {'met' if p50 <= 25 else 'NOT met'} ({p50:.1f} ms)")
        return 0 if p50 <= 25 else 1
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
