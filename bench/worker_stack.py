"""The private stack of `bench/worker_memory.py` and `bench/submit_latency.py`: a fresh,
migrated PostgreSQL database, a redis-server of its own (the broker, key prefix `bench:`), a
real `stillhouse api` process and one real `stillhouse worker --pool cpu` process (the Celery
solo pool), the digits teacher and data sets of examples/digits.py uploaded over HTTP, and a
small but complete distillation job to submit and wait for. Everything is stopped, the
database dropped and the folder removed by `close()`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chaos_stack import (  # noqa: E402
    FINISHED,
    Client,
    Database,
    Fleet,
    Gateway,
    Worker,
    say,
    spawn,
)
from core.config import Settings  # noqa: E402
from core.keys import create_key  # noqa: E402
from tests.servers import PrivateRedis  # noqa: E402

DEFAULT_PG = os.environ.get("STILLHOUSE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def percentile(values: list[float], q: float) -> float:
    """Nearest rank on the sorted values (q in 0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def small_job(ids: dict[str, str], name: str, seed: int, **changes: Any) -> dict[str, Any]:
    """A complete distillation job (teacher outputs, training, evaluation, export with the
    int8 variant, benchmark: the stages a user gets by default) that runs in seconds."""
    body: dict[str, Any] = {
        "name": name,
        "teacher_model_id": ids["teacher"],
        "student": {"architecture": "mlp", "params": {"hidden": [32]}},
        "train_dataset_id": ids["train"],
        "transfer_dataset_id": ids["transfer"],
        "val_dataset_id": ids["val"],
        "losses": [
            {"name": "kd", "weight": 0.9, "temperature": 4.0},
            {"name": "ce", "weight": 0.1},
        ],
        "training": {"epochs": 3, "batch_size": 64, "lr": 0.003, "seed": seed},
    }
    body.update(changes)
    return body


class Stack:
    """Start with `open()`, stop with `close()` (in a finally)."""

    def __init__(self, pg: str, keep: bool = False, worker_env: dict[str, str] | None = None):
        self.folder = Path(tempfile.mkdtemp(prefix="stillhouse-worker-bench-"))
        self.keep = keep
        self.db = Database(pg)
        self.redis = PrivateRedis(self.folder, lambda a: spawn(a, None, dict(os.environ)))
        self.worker_env = worker_env or {}
        self.gateway: Gateway | None = None
        self.fleet: Fleet | None = None
        self.client: Client | None = None
        self.worker: Worker | None = None
        self.digits = self.folder / "digits"

    def open(self) -> dict[str, str]:
        """Start everything and upload the teacher and data sets; their ids by role."""
        self.db.create()
        self.redis.start()
        settings = Settings(
            data_dir=self.folder / "data",
            database_url=self.db.sqlalchemy_url,
            broker_url=self.redis.url,
            broker_prefix="bench:",
        )
        settings.data_dir.mkdir(parents=True)
        env = {
            **os.environ,
            "STILLHOUSE_DATA_DIR": str(settings.data_dir),
            "STILLHOUSE_DATABASE_URL": settings.database_url,
            "STILLHOUSE_BROKER_URL": settings.broker_url,
            "STILLHOUSE_BROKER_PREFIX": settings.broker_prefix,
        }
        say(f"database {self.db.name}, redis-server on port {self.redis.port}, {self.folder}")
        # In a child process, so this script never imports torch.
        built = subprocess.run(
            [sys.executable, "-m", "examples.digits", str(self.digits)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            raise RuntimeError(f"examples/digits.py failed:\n{built.stderr[-3000:]}")
        self.gateway = Gateway(env, self.folder)
        self.gateway.start()
        self.fleet = Fleet({**env, **self.worker_env}, self.folder, self.db)
        self.worker = self.fleet.start()
        self.fleet.wait_registered(self.worker)
        self.client = Client(
            self.gateway.url, create_key(settings, f"bench-{uuid.uuid4().hex[:8]}")
        )
        ids = {
            "teacher": self.upload("models", self.digits / "teacher.onnx", "digits-teacher"),
            "train": self.upload("datasets", self.digits / "train.npz", "train"),
            "val": self.upload("datasets", self.digits / "val.npz", "val"),
            "transfer": self.upload("datasets", self.digits / "transfer.npz", "transfer"),
        }
        say(f"API at {self.gateway.url}, worker pid {self.worker.pid}, data uploaded")
        return ids

    def upload(self, kind: str, path: Path, name: str) -> str:
        assert self.client is not None
        return self.client.upload(kind, path, name)

    def submit(self, body: dict[str, Any]) -> str:
        assert self.client is not None
        response = self.client.http.post("/v1/jobs", json=body)
        if response.status_code != 202:
            raise RuntimeError(f"submit {body['name']}: {response.status_code} {response.text}")
        return str(response.json()["id"])

    def wait(self, job_id: str, timeout: float = 600.0, poll_s: float = 0.1) -> dict[str, Any]:
        """The job's body once it has finished; raises unless it succeeded."""
        assert self.client is not None and self.worker is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.client.http.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in FINISHED:
                if job["status"] != "succeeded":
                    raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
                return job
            if self.worker.process.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{self.worker.log.read_text()[-3000:]}")
            time.sleep(poll_s)
        raise RuntimeError(f"job {job_id} did not finish within {timeout} s")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.fleet is not None:
            self.fleet.stop_all()
        if self.gateway is not None:
            self.gateway.stop()
        self.redis.stop()
        self.db.drop()
        if self.keep:
            print(f"kept {self.folder}")
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
