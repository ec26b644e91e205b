"""The private stack of `bench/chaos.py`: process helpers, a fresh database, the workers, the
API process and its HTTP client, and the workload's records (see that script's docstring)."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from core.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]

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


# Infrastructure: database, workers, gateway (the broker is tests/servers.py's PrivateRedis).


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

    def held_by(self, worker: Worker) -> str:
        """The stage the worker holds per the database. For training, the student epochs
        committed so far: they are committed with the checkpoint, so a re-run should resume
        from at least there."""
        rows = self.db.rows(
            "SELECT j.name, s.name, j.epoch FROM job_stages s JOIN jobs j ON j.id = s.job_id"
            " WHERE s.status = 'running' AND s.worker_id LIKE %s",
            f"%/cpu/cpu/{worker.pid}",
        )
        held = [
            f"{job} {stage}" + (f" at epoch {epoch}" if stage == "training" else "")
            for job, stage, epoch in rows
        ]
        return ", ".join(held) or "nothing"

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


# The workload, and what the run records about it.

FINISHED = {"succeeded", "failed", "cancelled"}


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
        plans[index].cancel_after = rng.uniform(0.5, 8.0)  # while it waits or runs
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


@dataclass
class Fault:
    """One fault injected (or a frozen worker thawed), as logged."""

    at: float  # monotonic
    wall: datetime
    kind: str
    detail: str
