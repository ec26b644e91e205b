"""Does a worker's memory stay flat across many jobs? RSS of one real worker process over
`--jobs` consecutive distillation jobs.

    .venv/bin/python bench/worker_memory.py [--jobs 50] [--new-data-every 10]
        [--benchmark-seconds 0.2] [--keep]

It builds a private stack (bench/worker_stack.py: a fresh PostgreSQL database, a redis-server
of its own, a real `stillhouse api` and one real `stillhouse worker --pool cpu`, the Celery
solo pool as the command runs it), uploads the digits teacher and data sets, then submits one
small but complete job at a time and waits for it to finish before the next: teacher outputs,
training (a third of the jobs with the no-KD baseline too), evaluation, export with the int8
variant, benchmark (each timing loop `--benchmark-seconds` long, so 50 jobs take minutes,
not ten). Students vary (mlp [32] / [64] / [32, 32], seeds). Every
`--new-data-every` jobs a new train set is uploaded (a resample of the digits with a little
noise and another row count), so the worker inspects it and computes fresh teacher outputs,
while the jobs in between read the cached ones.

The worker's RSS (VmRSS of /proc/<pid>/status plus its children's: the data inspector runs as
one) is sampled every second by a thread here, and after each job. Printed: the RSS after
every tenth job, then start (after the first job: torch, ONNX Runtime and the exporter are
imported by then), peak (from the first job's end on), end, and end - start. Target: flat
within 50 MB.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.worker_stack import DEFAULT_PG, Stack, say, small_job  # noqa: E402

STUDENTS = ([32], [64], [32, 32])


def tree_rss_kb(pid: int) -> int:
    """VmRSS of the process and of its descendants, in kB (0 for a process that is gone)."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += tree_rss_kb(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


class Sampler(threading.Thread):
    """The worker's RSS every `interval` seconds, as (monotonic time, MB)."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.samples.append((time.monotonic(), tree_rss_kb(self.pid) / 1024))


def new_train_set(source: Path, out: Path, variant: int) -> Path:
    """A resample of the labeled digits with another row count and a little noise."""
    data = np.load(source)
    rng = np.random.default_rng(variant)
    rows = rng.choice(len(data["x"]), size=len(data["x"]) - 20 * variant, replace=True)
    x = np.clip(data["x"][rows] + rng.normal(0, 0.02, (len(rows), 64)), 0, 1).astype(np.float32)
    np.savez(out, x=x, y=data["y"][rows])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--new-data-every", type=int, default=10)
    parser.add_argument("--pg", default=DEFAULT_PG, help="an admin URL of the PostgreSQL server")
    parser.add_argument(
        "--benchmark-seconds",
        type=float,
        default=0.2,
        help="STILLHOUSE_BENCHMARK_SECONDS for the worker (the service's default: 1.0); the "
        "same code runs, each timing loop is shorter",
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder and its logs")
    args = parser.parse_args()

    env = {"STILLHOUSE_BENCHMARK_SECONDS": str(args.benchmark_seconds)}
    stack = Stack(args.pg, keep=args.keep, worker_env=env)
    sampler: Sampler | None = None
    try:
        ids = stack.open()
        assert stack.worker is not None
        pid = stack.worker.pid
        sampler = Sampler(pid)
        sampler.start()
        after: list[float] = []  # MB after each job
        seconds: list[float] = []
        first_end = 0.0
        load_before = os.getloadavg()
        started = time.monotonic()
        for index in range(args.jobs):
            if index and index % args.new_data_every == 0:
                variant = index // args.new_data_every
                path = new_train_set(
                    stack.digits / "train.npz", stack.folder / f"train-{variant}.npz", variant
                )
                ids = {**ids, "train": stack.upload("datasets", path, f"train-{variant}")}
            body = small_job(
                ids,
                f"memory-{index:02d}",
                seed=index,
                student={"architecture": "mlp", "params": {"hidden": STUDENTS[index % 3]}},
                baseline=index % 3 == 2,
            )
            t0 = time.monotonic()
            stack.wait(stack.submit(body))
            seconds.append(time.monotonic() - t0)
            after.append(tree_rss_kb(pid) / 1024)
            if index == 0:
                first_end = time.monotonic()
            if (index + 1) % 10 == 0 or index == 0:
                say(f"job {index + 1}: {seconds[-1]:.1f} s, worker RSS {after[-1]:.1f} MB")
        elapsed = time.monotonic() - started
        sampler.stopped.set()
        sampler.join()
        load_after = os.getloadavg()

        since_first = [mb for t, mb in sampler.samples if t >= first_end] + after
        start, end = after[0], after[-1]
        peak = max(since_first)
        print(
            f"\n{args.jobs} jobs in {elapsed:.0f} s (per job: median "
            f"{sorted(seconds)[len(seconds) // 2]:.1f} s, max {max(seconds):.1f} s); "
            f"{len(sampler.samples)} samples; new train set every {args.new_data_every} jobs"
        )
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load_before} -> {load_after}")
        print("\n| after job | worker RSS |")
        print("|---:|---:|")
        for n in sorted({1, *range(10, args.jobs + 1, 10), args.jobs}):
            print(f"| {n} | {after[n - 1]:.1f} MB |")
        print("\n| start (after job 1) | peak | end | end - start | target |")
        print("|---:|---:|---:|---:|---|")
        verdict = "flat" if abs(end - start) <= 50 else "NOT flat"
        print(
            f"| {start:.1f} MB | {peak:.1f} MB | {end:.1f} MB | {end - start:+.1f} MB "
            f"| within 50 MB: {verdict} |"
        )
        before_first = [mb for t, mb in sampler.samples if t < first_end]
        if before_first:
            print(f"\n(before the first job ended: {min(before_first):.1f} MB at the first sample)")
        return 0 if abs(end - start) <= 50 else 1
    finally:
        if sampler is not None:
            sampler.stopped.set()
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
