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
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import Settings  # noqa: E402
from core.keys import create_key  # noqa: E402
from core.migrate import upgrade  # noqa: E402

FINISHED = {"succeeded", "failed", "cancelled"}
FAULTS = ("kill", "freeze", "redis", "none")
# How often each fault is picked: crashes most, then freezes and broker restarts.
FAULT_WEIGHTS = (0.3, 0.25, 0.2, 0.25)

# Short timeouts, so a fault is noticed and repaired within seconds (tests/conftest.py does
# the same); a checkpoint every epoch, so a re-run training stage has something to resume.
HEARTBEAT_S = 1.0
HEARTBEAT_TIMEOUT_S = 6.0
RESEND_AFTER_S = 3.0
FREEZE_S = HEARTBEAT_TIMEOUT_S + 3.0

T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Run in each child before exec: the kernel SIGKILLs it if this script dies without
    cleaning up (itself SIGKILLed), so no worker outlives a run. Works on stopped ones too."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the atexit / finally cleanup still runs


def spawn(args: list[str], log: Path | None, env: dict[str, str]) -> subprocess.Popen[bytes]:
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C reaches only this script, which then stops the
            # children in order instead of all of them at once.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGCONT first (a frozen process cannot act on SIGTERM), then SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.kill(process.pid, sig)
        except ProcessLookupError:
            return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# Infrastructure: database, broker, gateway, workers.


class Database:
    """A fresh database on the shared server, migrated by Alembic, dropped by `drop()`."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"stillhouse_chaos_{uuid.uuid4().hex[:10]}"
        base = admin_url.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"  # plain libpq URL for psycopg
        self.sqlalchemy_url = self.url.replace("postgresql://", "postgresql+psycopg://", 1)
        self.created = False

    def create(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        self.created = True
        upgrade(self.sqlalchemy_url)

    def drop(self) -> None:
        if not self.created:
            return
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.created = False

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, connect_timeout=5) as conn:
            return list(conn.execute(sql, params).fetchall())


class PrivateRedis:
    """A redis-server of this run's own, with no persistence: a restart loses every message."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        self.process = spawn(args, None, dict(os.environ))
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
        self.process = None


@dataclass
class Worker:
    number: int
    process: subprocess.Popen[bytes]
    log: Path
    frozen_until: float | None = None  # monotonic time of its SIGCONT while frozen

    @property
    def pid(self) -> int:
        return self.process.pid


class Fleet:
    """The cpu-pool workers: start, crash, freeze and thaw them."""

    def __init__(self, env: dict[str, str], folder: Path, db: Database) -> None:
        self.env, self.folder, self.db = env, folder, db
        self.workers: list[Worker] = []  # the live ones
        self.dead: list[Worker] = []  # killed; kept for their logs
        self.started = 0

    def start(self) -> Worker:
        self.started += 1
        log = self.folder / f"worker-{self.started:02d}.log"
        args = [sys.executable, "-m", "stillhouse.cli", "worker", "--pool", "cpu"]
        worker = Worker(self.started, spawn([*args, "--device", "cpu"], log, self.env), log)
        self.workers.append(worker)
        return worker

    def wait_registered(self, worker: Worker, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker {worker.pid} exited:\n{worker.log.read_text()[-3000:]}")
            pattern = f"%/cpu/cpu/{worker.pid}"
            if self.db.rows("SELECT 1 FROM workers WHERE id LIKE %s", pattern):
                return
            time.sleep(0.3)
        raise RuntimeError(f"worker {worker.pid} did not register within {timeout} s")

    def awake(self) -> list[Worker]:
        return [w for w in self.workers if w.frozen_until is None]

    def kill(self, worker: Worker) -> Worker:
        """A crash: SIGKILL, no shutdown hook; a replacement starts at once."""
        os.kill(worker.pid, signal.SIGKILL)
        worker.process.wait()
        self.workers.remove(worker)
        self.dead.append(worker)
        return self.start()

    def freeze(self, worker: Worker, seconds: float) -> None:
        os.kill(worker.pid, signal.SIGSTOP)
        worker.frozen_until = time.monotonic() + seconds

    def thaw(self, worker: Worker) -> None:
        os.kill(worker.pid, signal.SIGCONT)
        worker.frozen_until = None

    def thaw_due(self) -> list[Worker]:
        due = [w for w in self.workers if w.frozen_until and w.frozen_until <= time.monotonic()]
        for worker in due:
            self.thaw(worker)
        return due

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                os.kill(worker.pid, signal.SIGCONT)
                os.kill(worker.pid, signal.SIGTERM)  # all at once: the shutdowns overlap
        for worker in self.workers:
            stop_process(worker.process, timeout=20)

    def logs(self) -> list[Path]:
        return sorted(w.log for w in [*self.workers, *self.dead])


class Gateway:
    """The real `stillhouse api` process, on a free port."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.port = free_port()
        self.env, self.log = env, folder / "api.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", "stillhouse.cli", "api", "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--log-level", "warning"]
        self.process = spawn(args, self.log, self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the API did not answer /healthz within 60 s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


# The workload.


@dataclass
class Plan:
    """One job to submit: when, with what body, whether it is retried or cancelled."""

    index: int
    submit_at: float  # seconds after the first submission
    body: dict[str, Any]
    idempotency_key: str | None = None
    cancel_after: float | None = None  # seconds after its own submission
    job_id: str | None = None
    submitted_at: float | None = None  # monotonic
    retries_same: list[bool] = field(default_factory=list)
    cancel_status: int | None = None


def make_plans(rng: random.Random, ids: dict[str, str], jobs: int, window: float) -> list[Plan]:
    """A seeded mix: 4 to 20 epochs, batch 16 to 64, some with a baseline; an eighth sent
    with an Idempotency-Key and an eighth cancelled (never the same job)."""
    plans = []
    for index in range(jobs):
        body = {
            "name": f"chaos-{index:02d}",
            "teacher_model_id": ids["teacher"],
            "student": {"architecture": "mlp", "params": {"hidden": [rng.choice([16, 32, 64])]}},
            "train_dataset_id": ids["train"],
            "transfer_dataset_id": ids["transfer"],
            "val_dataset_id": ids["val"],
            "losses": [
                {"name": "kd", "weight": 0.9, "temperature": 4.0},
                {"name": "ce", "weight": 0.1},
            ],
            "training": {
                "epochs": rng.randint(4, 20),
                "batch_size": rng.choice([16, 32, 64]),
                "lr": 0.003,
                "optimizer": "adam",
                "seed": rng.randrange(1000),
            },
            "baseline": rng.random() < 0.4,
        }
        # The first job goes at once, the rest spread over the submission window.
        plans.append(Plan(index, 0.0 if index == 0 else rng.uniform(0, window), body))
    special = max(1, jobs // 8)
    chosen = rng.sample(range(jobs), min(jobs, 2 * special))
    for index in chosen[:special]:
        plans[index].idempotency_key = f"chaos-{uuid.uuid4()}"
    for index in chosen[special : 2 * special]:
        plans[index].cancel_after = rng.uniform(1.0, 25.0)
    return sorted(plans, key=lambda p: p.submit_at)


class Client:
    """The gateway's HTTP API with one tenant's key. Calls are retried on transport errors
    only (the API process is never faulted here, but the box is busy)."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )

    def upload(self, kind: str, path: Path, name: str) -> str:
        with open(path, "rb") as handle:
            response = self.http.post(
                f"/v1/{kind}", files={"file": (path.name, handle)}, data={"name": name}
            )
        response.raise_for_status()
        resource_id = str(response.json()["id"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            body = self.http.get(f"/v1/{kind}/{resource_id}").json()
            if body["status"] == "ready":
                return resource_id
            if body["status"] == "invalid":
                raise RuntimeError(f"{kind} {name} is invalid: {body['error']}")
            time.sleep(0.3)
        raise RuntimeError(f"{kind} {name} was not inspected within 120 s")

    def submit(self, plan: Plan) -> tuple[str, bool]:
        """(job id, replayed): POST /v1/jobs, with the plan's Idempotency-Key if it has one."""
        headers = {"Idempotency-Key": plan.idempotency_key} if plan.idempotency_key else {}
        for attempt in range(3):
            try:
                response = self.http.post("/v1/jobs", json=plan.body, headers=headers)
                break
            except httpx.TransportError as exc:
                if attempt == 2:
                    raise
                say(f"submit {plan.body['name']}: {type(exc).__name__}; retrying")
                time.sleep(1)
        if response.status_code != 202:
            raise RuntimeError(
                f"submit {plan.body['name']}: {response.status_code} {response.text}"
            )
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        return str(response.json()["id"]), replayed

    def cancel(self, job_id: str) -> int:
        return self.http.post(f"/v1/jobs/{job_id}/cancel").status_code

    def close(self) -> None:
        self.http.close()


# The run.


@dataclass
class Fault:
    at: float  # monotonic
    wall: datetime
    kind: str
    detail: str


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
        self.redis = PrivateRedis(self.folder)
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
            [sys.executable, "examples/digits.py", str(digits)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:  # its exporter warnings are noise unless it failed
            raise RuntimeError(f"examples/digits.py failed:\n{built.stderr[-3000:]}")
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
        # Submissions fill the first 40% of the fault window, so most jobs run while faults land.
        self.plans = make_plans(self.rng, ids, self.o.jobs, 0.4 * chaos_s)
        start = time.monotonic()
        deadline, calm_from = start + self.o.minutes * 60, start + chaos_s
        pending = list(self.plans)
        next_fault = start + self.rng.uniform(*self.o.interval)
        next_report = start
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
            if now >= next_report:
                counts = self.status_counts()
                say(f"jobs {dict(sorted(counts.items()))}; workers {self.fleet_line()}")
                next_report = now + 15
                done = sum(counts.get(s, 0) for s in FINISHED)
                if not pending and done == len(self.plans):
                    say("every job finished")
                    break
            if now >= deadline:
                say("deadline reached")
                break
            time.sleep(0.2)
        self.unfinished_snapshot = self.db.rows(
            "SELECT j.id, j.name, j.status, j.stage, j.epoch, s.name, s.status, s.attempts,"
            " s.worker_id, s.queued_at, s.heartbeat_at, s.resumed_from_epoch"
            " FROM jobs j JOIN job_stages s ON s.job_id = j.id"
            " WHERE j.status NOT IN ('succeeded', 'failed', 'cancelled')"
            " ORDER BY j.name, s.position"
        )
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
            job = self.worker_job(victim)
            spare = self.fleet.kill(victim)
            self.fault_log(
                "kill",
                f"SIGKILL worker #{victim.number} pid {victim.pid} (running {job}); "
                f"replacement #{spare.number} pid {spare.pid}",
            )
        elif kind == "freeze":
            victim = self.rng.choice(candidates)
            job = self.worker_job(victim)
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

    def worker_job(self, worker: Worker) -> str:
        """The stage the worker holds per the database (its last heartbeat's view)."""
        rows = self.db.rows(
            "SELECT j.name || ' ' || s.name FROM job_stages s JOIN jobs j ON j.id = s.job_id"
            " WHERE s.status = 'running' AND s.worker_id LIKE %s",
            f"%/cpu/cpu/{worker.pid}",
        )
        return ", ".join(r[0] for r in rows) or "nothing"

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
        jobs = self.db.rows(
            "SELECT id, name, status, error, (spec->'training'->>'epochs')::int,"
            " (spec->>'baseline')::boolean, student_model_id, cancel_requested FROM jobs"
            " ORDER BY name"
        )
        by_status = Counter(j[2] for j in jobs)
        lost = [j for j in jobs if j[2] not in FINISHED]
        students = dict(
            self.db.rows(
                "SELECT source_job_id, count(*) FROM models WHERE source_job_id IS NOT NULL"
                " GROUP BY 1"
            )
        )
        duplicated = [j for j in jobs if students.get(j[0], 0) > 1]
        # A succeeded job registers exactly one student, the one its row names.
        missing = [
            j for j in jobs if j[2] == "succeeded" and (students.get(j[0], 0) != 1 or not j[6])
        ]
        metric_dups = self.db.rows(
            "SELECT job_id, name, epoch, count(*) FROM metrics GROUP BY 1, 2, 3 HAVING count(*) > 1"
        )
        series: dict[str, dict[str, list[int]]] = {}
        for job_id, name, epochs in self.db.rows(
            "SELECT job_id, name, array_agg(epoch ORDER BY epoch) FROM metrics GROUP BY 1, 2"
        ):
            series.setdefault(job_id, {})[name] = list(epochs)
        bad_series: list[tuple[str, str, str]] = []
        for job_id, name, status, _, epochs, baseline, _, _ in jobs:
            if status != "succeeded":
                continue
            mine = series.get(job_id, {})
            # "loss" is the series the brief names; the others written per epoch must agree.
            expected = {"loss", "val_accuracy"} | ({"baseline/loss"} if baseline else set())
            for metric in sorted(expected | set(mine)):
                if mine.get(metric) != list(range(1, epochs + 1)):
                    points = mine.get(metric)
                    shown = (
                        "none" if points is None else f"{points[:3]}..{points[-3:]} ({len(points)})"
                    )
                    bad_series.append((name, metric, f"expected 1..{epochs}, got {shown}"))
        stages = self.db.rows(
            "SELECT name, coalesce(sum(greatest(attempts - 1, 0)), 0),"
            " count(*) FILTER (WHERE resumed_from_epoch > 0) FROM job_stages GROUP BY 1"
        )
        reruns = {name: int(n) for name, n, _ in stages}
        resumed = sum(int(r) for _, _, r in stages)
        retries = [same for p in self.plans for same in p.retries_same]
        cancels = [p for p in self.plans if p.cancel_status is not None]
        fault_counts = Counter(f.kind for f in self.faults if f.kind != "thaw")
        acknowledged = sum(p.job_id is not None for p in self.plans)
        latencies = sorted(
            float(s)
            for (s,) in self.db.rows(
                "SELECT extract(epoch FROM finished_at - created_at) FROM jobs"
                " WHERE status = 'succeeded'"
            )
        )
        latency = (
            f"median {latencies[len(latencies) // 2]:.0f} s, max {latencies[-1]:.0f} s"
            if latencies
            else "-"
        )
        wall = time.monotonic() - self.started

        rows = [
            ("jobs submitted", f"{len(jobs)} ({acknowledged} acknowledged by the API)"),
            ("succeeded", by_status["succeeded"]),
            ("failed", by_status["failed"]),
            (
                "cancelled",
                f"{by_status['cancelled']} ({len(cancels)} cancel requests, HTTP "
                f"{dict(Counter(p.cancel_status for p in cancels))})",
            ),
            ("lost (unfinished at the deadline)", len(lost)),
            ("duplicated (>1 student model)", len(duplicated)),
            ("succeeded without exactly one student", len(missing)),
            ("metric duplicates (job, name, epoch)", len(metric_dups)),
            ("succeeded jobs with a series not 1..N", len({b[0] for b in bad_series})),
            ("stage re-runs (sum attempts - 1)", f"{sum(reruns.values())} {reruns}"),
            ("training stages resumed from a checkpoint", resumed),
            ("idempotent retries returning the same job", f"{sum(retries)}/{len(retries)}"),
            ("succeeded jobs, submission to finish", latency),
            ("faults", f"{sum(fault_counts.values())} {dict(sorted(fault_counts.items()))}"),
            ("workers started (initial + replacements)", self.fleet.started if self.fleet else 0),
            ("wall time", f"{wall:.0f} s"),
        ]
        width = max(len(r[0]) for r in rows)
        print("\n" + "=" * 78)
        print(f"chaos soak, seed {self.o.seed}: {self.o.jobs} jobs, {self.o.workers} workers")
        print("=" * 78)
        for label, value in rows:
            print(f"  {label:<{width}}  {value}")
        print("=" * 78)

        failed = [j for j in jobs if j[2] == "failed"]
        if failed:
            print("\nfailed jobs (expected only when a stage's worker died max_attempts times):")
            for job in failed:
                print(f"  {job[1]} {job[0]}: {job[3]}")
        anomalies = bool(lost or duplicated or missing or metric_dups or bad_series)
        anomalies |= not all(retries)
        if anomalies:
            self.keep_folder = True
            print("\nANOMALIES")
            for job in lost:
                self.evidence(job[0], job[1], "lost: not finished by the deadline")
            for job in duplicated:
                self.evidence(job[0], job[1], f"duplicated: {students[job[0]]} student models")
            for job in missing:
                self.evidence(job[0], job[1], f"succeeded with {students.get(job[0], 0)} students")
            for job_id, name, epoch, count in metric_dups:
                print(f"  metric duplicate: job {job_id} {name} epoch {epoch}: {count} points")
            for name, metric, detail in bad_series:
                print(f"  series: {name} {metric}: {detail}")
            if not all(retries):
                print(f"  idempotent retries: {retries}")
            print(f"\nlogs kept in {self.folder}")
        return 1 if anomalies else 0

    def evidence(self, job_id: str, name: str, what: str) -> None:
        """Everything needed to tell what happened to one job without rerunning."""
        print(f"\n--- {name} {job_id}: {what}")
        snapshot = [r for r in self.unfinished_snapshot if r[0] == job_id]
        if snapshot:
            print("  at the deadline (before the workers were stopped):")
            for row in snapshot:
                print(
                    f"    job {row[2]}/{row[3]} epoch {row[4]} | stage {row[5]} {row[6]} "
                    f"attempts {row[7]} worker {row[8]} queued {row[9]} heartbeat {row[10]} "
                    f"resumed {row[11]}"
                )
        print("  stages now:")
        for row in self.db.rows(
            "SELECT name, status, attempts, worker_id, lease, queued_at, started_at,"
            " heartbeat_at, finished_at, resumed_from_epoch, error FROM job_stages"
            " WHERE job_id = %s ORDER BY position",
            job_id,
        ):
            print(f"    {row}")
        for row in self.db.rows(
            "SELECT id, created_at, files FROM models WHERE source_job_id = %s", job_id
        ):
            print(f"  student model {row[0]} created {row[1]}")
        last = self.db.rows(
            "SELECT max(greatest(coalesce(heartbeat_at, queued_at), coalesce(finished_at,"
            " queued_at), queued_at)) FROM job_stages WHERE job_id = %s",
            job_id,
        )[0][0]
        if last is not None:
            before = [f for f in self.faults if f.wall <= last][-4:]
            print(f"  last stage activity {last}; the faults just before it:")
            for fault in before:
                print(f"    {fault.wall.isoformat()} {fault.kind}: {fault.detail}")
        print("  worker log lines naming the job:")
        for log in self.fleet.logs() if self.fleet else []:
            lines = [
                line for line in log.read_text(errors="replace").splitlines() if job_id in line
            ]
            for line in lines[-12:]:
                print(f"    {log.name}: {line[:300]}")

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
