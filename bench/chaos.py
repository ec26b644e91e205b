"""Soak benchmark: does the job lifecycle keep its promises under repeated faults?

    .venv/bin/python bench/chaos.py --jobs 24 --workers 3 --minutes 6 --seed 1

It builds a private stack (a fresh, migrated PostgreSQL database on the shared server, a
redis-server of its own on a free port without persistence, a data folder in a temporary
directory, a real `stillhouse api` process and `--workers` real `stillhouse worker --pool cpu`
processes with short timeouts), uploads the digits teacher and data sets once, then submits
`--jobs` distillation jobs of mixed sizes over the first part of the run. A few are sent with
an `Idempotency-Key` and retried; a few are cancelled at random moments.

Meanwhile, every few seconds a seeded RNG picks one fault and logs it:
  kill    SIGKILL a random worker (no goodbye) and start a replacement;
  freeze  SIGSTOP a random worker for heartbeat-timeout + 3 s, then SIGCONT it;
  redis   stop and start the private redis-server, losing every message it held;
  none    do nothing this time.
`--seed` fixes the workload and the schedule of faults; which stage a fault lands on still
depends on timing (a busy box runs slower), so two runs with one seed differ in detail.
Faults stop `--calm` seconds before the deadline (`--minutes` after the first submission), so
a job still unfinished at the deadline had that long, undisturbed, to recover: it is "lost".

At the end the workers are stopped and the database is asked for the figures: jobs submitted,
succeeded, failed, cancelled, lost, duplicated (more than one registered student), metric
duplicates (more than one point per job, series and epoch), succeeded jobs whose series are not
exactly epochs 1..N, stage re-runs (sum of attempts - 1) and training stages that resumed from
a checkpoint. Evidence is printed for every anomaly (the job and stage rows, the faults that
preceded it, worker log lines naming it). The exit status is 1 when any job was lost or
duplicated, any metric series is wrong, or an idempotent retry got another job; 0 otherwise.

Everything started here is stopped on the way out (frozen workers are woken first), the
database is dropped and the temporary folder removed; with anomalies the folder (worker logs)
is kept and its path printed. `--keep` keeps both.
"""

from __future__ import annotations

import argparse
import atexit
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chaos_report import Report, unfinished_stages  # noqa: E402
from bench.chaos_stack import (  # noqa: E402
    FINISHED,
    Client,
    Database,
    Fault,
    Fleet,
    Gateway,
    Plan,
    make_plans,
    say,
    spawn,
)
from core.config import Settings  # noqa: E402
from core.keys import create_key  # noqa: E402
from tests.servers import PrivateRedis  # noqa: E402

FAULTS = ("kill", "freeze", "redis", "none")
# How often each fault is picked: crashes most, then freezes and broker restarts.
FAULT_WEIGHTS = (0.3, 0.25, 0.2, 0.25)

# Short timeouts, so a fault is noticed and repaired within seconds (tests/conftest.py does
# the same); a checkpoint every epoch, so a re-run training stage has something to resume.
HEARTBEAT_S = 1.0
HEARTBEAT_TIMEOUT_S = 6.0
RESEND_AFTER_S = 3.0
FREEZE_S = HEARTBEAT_TIMEOUT_S + 3.0


@dataclass
class Options:
    jobs: int
    workers: int
    minutes: float
    seed: int
    calm: float
    interval: tuple[float, float]
    pg: str
    keep: bool


class Chaos:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.rng = random.Random(options.seed)
        self.folder = Path(tempfile.mkdtemp(prefix="stillhouse-chaos-"))
        self.db = Database(options.pg)
        # Started like every child here: in its own session, and dies with this script.
        self.redis = PrivateRedis(self.folder, lambda args: spawn(args, None, dict(os.environ)))
        self.gateway: Gateway | None = None
        self.fleet: Fleet | None = None
        self.client: Client | None = None
        self.faults: list[Fault] = []
        self.plans: list[Plan] = []
        self.closed = False
        self.keep_folder = options.keep
        self.started = time.monotonic()
        self.unfinished_snapshot: list[tuple[Any, ...]] = []

    # set-up

    def setup(self) -> dict[str, str]:
        say(f"folder {self.folder}")
        self.db.create()
        say(f"database {self.db.name} created and migrated")
        self.redis.start()
        say(f"private redis-server on port {self.redis.port}")
        settings = Settings(
            data_dir=self.folder / "data",
            database_url=self.db.sqlalchemy_url,
            broker_url=self.redis.url,
            broker_prefix="chaos:",
        )
        env = {
            **os.environ,
            "STILLHOUSE_DATA_DIR": str(settings.data_dir),
            "STILLHOUSE_DATABASE_URL": settings.database_url,
            "STILLHOUSE_BROKER_URL": settings.broker_url,
            "STILLHOUSE_BROKER_PREFIX": settings.broker_prefix,
            "STILLHOUSE_WORKER_HEARTBEAT_S": str(HEARTBEAT_S),
            "STILLHOUSE_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
            "STILLHOUSE_RESEND_AFTER_S": str(RESEND_AFTER_S),
            "STILLHOUSE_CHECKPOINT_EVERY_S": "0",
            # One torch thread per worker: several workers share two cores with other work.
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        settings.data_dir.mkdir(parents=True)
        digits = self.folder / "digits"
        # In a child process, so this script never imports torch.
        built = subprocess.run(
            [sys.executable, "-m", "examples.digits", str(digits)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:  # its exporter warnings are noise unless it failed
            raise RuntimeError(f"python -m examples.digits failed:\n{built.stderr[-3000:]}")
        say("digits teacher and data sets built")
        self.gateway = Gateway(env, self.folder)
        self.gateway.start()
        say(f"API at {self.gateway.url}")
        self.fleet = Fleet(env, self.folder, self.db)
        first = [self.fleet.start() for _ in range(self.o.workers)]
        for worker in first:
            self.fleet.wait_registered(worker)
        say(f"{len(first)} workers registered: pids {[w.pid for w in first]}")
        key = create_key(settings, f"chaos-{uuid.uuid4().hex[:8]}")
        self.client = Client(self.gateway.url, key)
        ids = {
            "teacher": self.client.upload("models", digits / "teacher.onnx", "digits-teacher"),
            "train": self.client.upload("datasets", digits / "train.npz", "train"),
            "val": self.client.upload("datasets", digits / "val.npz", "val"),
            "transfer": self.client.upload("datasets", digits / "transfer.npz", "transfer"),
        }
        say("teacher and data sets uploaded and inspected")
        return ids

    # the soak

    def soak(self, ids: dict[str, str]) -> None:
        assert self.client is not None and self.fleet is not None
        chaos_s = self.o.minutes * 60 - self.o.calm
        # Submissions spread over the first 3/4 of the fault window, so jobs run (and queue)
        # while faults land for most of it, and the last ones can still finish before the calm.
        self.plans = make_plans(self.rng, ids, self.o.jobs, 0.75 * chaos_s)
        start = time.monotonic()
        deadline, calm_from = start + self.o.minutes * 60, start + chaos_s
        pending = list(self.plans)
        next_fault = start + self.rng.uniform(*self.o.interval)
        next_poll = next_report = start
        say(
            f"soak: {self.o.jobs} jobs, faults until +{chaos_s:.0f}s, deadline +{deadline - start:.0f}s"
        )
        while True:
            now = time.monotonic()
            for worker in self.fleet.thaw_due():
                self.fault_log("thaw", f"SIGCONT worker #{worker.number} pid {worker.pid}")
            while pending and start + pending[0].submit_at <= now:
                self.submit(pending.pop(0))
            for plan in self.plans:
                if (
                    plan.cancel_after is not None
                    and plan.cancel_status is None
                    and plan.submitted_at is not None
                    and now >= plan.submitted_at + plan.cancel_after
                ):
                    plan.cancel_status = self.client.cancel(str(plan.job_id))
                    say(f"cancel {plan.body['name']} {plan.job_id}: HTTP {plan.cancel_status}")
            if now >= next_fault and now < calm_from:
                self.inject()
                next_fault = now + self.rng.uniform(*self.o.interval)
            if now >= next_poll:
                counts = self.status_counts()
                next_poll = now + 2
                if now >= next_report:
                    say(f"jobs {dict(sorted(counts.items()))}; workers {self.fleet_line()}")
                    next_report = now + 15
                done = sum(counts.get(s, 0) for s in FINISHED)
                if not pending and done == len(self.plans):
                    say(f"every job finished: {dict(sorted(counts.items()))}")
                    break
            if now >= deadline:
                say("deadline reached")
                break
            time.sleep(0.2)
        self.unfinished_snapshot = unfinished_stages(self.db)
        # A client retry after all the faults must still get the first response.
        for plan in self.plans:
            if plan.idempotency_key and plan.job_id:
                again, replayed = self.client.submit(plan)
                plan.retries_same.append(again == plan.job_id and replayed)

    def submit(self, plan: Plan) -> None:
        assert self.client is not None
        job_id, _ = self.client.submit(plan)
        plan.job_id, plan.submitted_at = job_id, time.monotonic()
        extra = ""
        if plan.idempotency_key:
            # The client "did not hear" the answer and sends the same request again.
            again, replayed = self.client.submit(plan)
            plan.retries_same.append(again == job_id and replayed)
            extra = (
                f"; retried with its Idempotency-Key: {'same job' if again == job_id else again}"
            )
        training = plan.body["training"]
        say(
            f"submit {plan.body['name']} {job_id} ({training['epochs']} epochs, "
            f"batch {training['batch_size']}, baseline {plan.body['baseline']}){extra}"
        )

    def inject(self) -> None:
        assert self.fleet is not None
        kind = self.rng.choices(FAULTS, weights=FAULT_WEIGHTS)[0]
        candidates = self.fleet.awake()
        if kind in ("kill", "freeze") and not candidates:
            kind = "none"  # every worker is frozen: nothing to pick
        if kind == "kill":
            victim = self.rng.choice(candidates)
            job = self.fleet.held_by(victim)
            spare = self.fleet.kill(victim)
            self.fault_log(
                "kill",
                f"SIGKILL worker #{victim.number} pid {victim.pid} (running {job}); "
                f"replacement #{spare.number} pid {spare.pid}",
            )
        elif kind == "freeze":
            victim = self.rng.choice(candidates)
            job = self.fleet.held_by(victim)
            self.fleet.freeze(victim, FREEZE_S)
            self.fault_log(
                "freeze",
                f"SIGSTOP worker #{victim.number} pid {victim.pid} for {FREEZE_S:.0f}s "
                f"(running {job})",
            )
        elif kind == "redis":
            self.redis.stop()
            self.redis.start()
            self.fault_log("redis", f"redis-server on port {self.redis.port} restarted, empty")
        else:
            self.fault_log("none", "no fault this time")

    def fault_log(self, kind: str, detail: str) -> None:
        self.faults.append(Fault(time.monotonic(), datetime.now(UTC), kind, detail))
        say(f"FAULT {kind}: {detail}")

    def status_counts(self) -> Counter[str]:
        return Counter(
            {s: n for s, n in self.db.rows("SELECT status, count(*) FROM jobs GROUP BY 1")}
        )

    def fleet_line(self) -> str:
        assert self.fleet is not None
        frozen = len(self.fleet.workers) - len(self.fleet.awake())
        return f"{len(self.fleet.workers)} ({frozen} frozen), {self.fleet.started} started"

    # the verdict

    def report(self) -> int:
        report = Report(
            self.db,
            self.fleet,
            self.plans,
            self.faults,
            self.unfinished_snapshot,
            self.folder,
            self.started,
            self.o.seed,
            self.o.jobs,
            self.o.workers,
        )
        try:
            return report.show()
        finally:
            self.keep_folder |= report.anomalies  # the worker logs are the evidence

    # tear-down

    def close(self) -> None:
        """Idempotent: called from `finally` and again by atexit."""
        if self.closed:
            return
        self.closed = True
        if self.fleet is not None:
            self.fleet.stop_all()
        if self.gateway is not None:
            self.gateway.stop()
        if self.client is not None:
            self.client.close()
        self.redis.stop()
        if not self.o.keep:
            try:
                self.db.drop()
            except psycopg.Error as exc:
                print(f"could not drop database {self.db.name}: {exc}", file=sys.stderr)
        if not self.keep_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        elif self.o.keep:
            print(f"kept database {self.db.name} and folder {self.folder}")


def parse() -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=6.0, help="from the first submission")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--calm", type=float, default=60.0, help="seconds without faults before the deadline"
    )
    parser.add_argument(
        "--interval", default="4,8", help="seconds between faults: min,max (uniform)"
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "STILLHOUSE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the folder")
    args = parser.parse_args()
    low, high = (float(x) for x in args.interval.split(","))
    return Options(
        args.jobs, args.workers, args.minutes, args.seed, args.calm, (low, high), args.pg, args.keep
    )


def main() -> int:
    chaos = Chaos(parse())
    atexit.register(chaos.close)

    def interrupted(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through `finally`, which cleans up

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    try:
        ids = chaos.setup()
        chaos.soak(ids)
        if chaos.fleet is not None:
            chaos.fleet.stop_all()  # before the figures: nothing may change under the queries
        return chaos.report()
    finally:
        chaos.close()


if __name__ == "__main__":
    sys.exit(main())
