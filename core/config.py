"""One typed settings object, read from `STILLHOUSE_*` environment variables.

The embedded defaults (SQLite file, Celery's filesystem transport, a local
artifact directory) all live under `data_dir`; production changes only URLs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STILLHOUSE_", extra="ignore")

    environment: str = "development"
    data_dir: Path = Path("./var")
    # Empty means "the embedded default under data_dir"; see the resolved_* properties.
    database_url: str = ""
    broker_url: str = ""
    storage_url: str = ""
    # A per-deployment (or per-test-run) prefix for every Redis key the broker writes.
    broker_prefix: str = ""
    port: int = 8000
    host: str = "127.0.0.1"
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    # Every body but an upload's (job specs, predict inputs): a cap keeps one request from
    # holding the gateway's memory.
    max_json_bytes: int = Field(default=1024**2, gt=0)
    allow_torch_programs: bool = False
    # Stages whose worker stops heartbeating for this long are failed or re-queued by the reaper.
    heartbeat_timeout_s: float = Field(default=120.0, gt=0)
    worker_heartbeat_s: float = Field(default=10.0, gt=0)
    # Longest a job may run; the broker's visibility timeout must exceed it (docs/reliability.md).
    max_job_seconds: int = Field(default=6 * 3600, gt=0)
    max_epochs: int = Field(default=1000, gt=0)
    # How long a GET/HEAD may trust an API key it has already seen: after a revoke (or a
    # tenant deletion) reads keep working for at most this long. Writes always re-check the
    # key in SQL, so a revoked key can change nothing from the moment it is revoked.
    key_cache_seconds: float = Field(default=5.0, ge=0)
    # Which queue and device this worker process serves (`stillhouse worker --pool --device`).
    worker_pool: str = "cpu"
    worker_device: str = "cpu"
    # Stage re-runs after a worker died mid-stage, before the job is failed.
    max_attempts: int = Field(default=3, ge=1)
    # A queued stage whose message nobody claimed for this long is sent again, when a worker
    # of its pool sits idle (the message was lost: broker restart, send failure).
    resend_after_s: float = Field(default=60.0, gt=0)
    # Training writes a checkpoint at the end of an epoch when this long has passed since the
    # last one (0: every epoch). A re-run stage resumes from it.
    checkpoint_every_s: float = Field(default=30.0, ge=0)
    # How long the first response to an `Idempotency-Key` is kept for retries.
    idempotency_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    # How long a worker retries a database call that failed because the database was
    # unreachable (with backoff, keeping its claim) before it gives the stage up.
    db_retry_s: float = Field(default=60.0, ge=0)
    # The largest student a job may train. 50M float32 parameters are 200 MB of weights and
    # about 800 MB with Adam's gradients and moments; a student meant for a CPU or an edge
    # box is far smaller, and a bigger one takes a worker's memory from every other job.
    max_student_params: int = Field(default=50_000_000, gt=0)
    # Inspections started on one upload without finishing (each killed its worker) before the
    # file is marked invalid instead of being loaded again.
    max_inspect_attempts: int = Field(default=2, ge=1)
    # A dataset's arrays may take at most this much memory decoded, and once converted for
    # training (x float32, y int64): what an uncompressed upload at the default cap could hold,
    # so a small compressed file cannot ask a training worker for more.
    max_dataset_decoded_bytes: int = Field(default=2 * 1024**3, gt=0)
    # The address-space ceiling (RLIMIT_AS) of the child process that reads a dataset. It
    # reads in 16 MiB chunks and needs about 200 MiB; the rest is headroom.
    inspect_memory_bytes: int = Field(default=1024**3, gt=0)
    # Labels are class indices; one past this is a mistake, not a class.
    max_classes: int = Field(default=1_000_000, gt=0)
    # An image-folder zip: at most this many entries, expanding to at most this many bytes
    # (the declared sizes summed, and enforced again while decompressing).
    max_zip_entries: int = Field(default=100_000, gt=0)
    max_zip_expanded_bytes: int = Field(default=2 * 1024**3, gt=0)
    # A job's train set (x, canonical dtype) up to this size is held whole on the device and
    # indexed per step; a larger one streams from the memory-mapped files in blocks.
    in_memory_max_bytes: int = Field(default=1024**3, gt=0)
    # An idle cpu worker deletes unreferenced blobs this often (0: never), sparing those
    # younger than the grace period: an upload or a stage may be about to record them.
    gc_interval_s: float = Field(default=3600.0, ge=0)
    gc_grace_s: float = Field(default=3600.0, ge=0)
    # The benchmark stage's time per model and runtime, split between the batch-1 latency runs
    # and the throughput runs. A second gives a stable p95 for models that run in well under a
    # millisecond; slower models get fewer runs within it (at least 20 latency runs and 3 batches).
    benchmark_seconds: float = Field(default=1.0, gt=0, le=600)
    # ONNX Runtime's and torch's threads in the benchmark (None: the runtimes' own default,
    # every core), recorded in the report beside the figures.
    benchmark_threads: int | None = Field(default=None, ge=1, le=1024)
    # torch's intra-op threads while a job trains (None: torch's default, every core). CPU
    # results depend on it (a parallel sum splits by thread count), so workers that must give
    # the same metrics for the same job share one value; the job's summary records it.
    training_threads: int | None = Field(default=None, ge=1, le=1024)
    # How long POST /v1/models/{id}/predict waits for a worker when the request names no
    # `timeout_s`: a worker runs one task at a time, so a predict queued behind a training
    # stage waits for it; past this the client gets a 504 instead of a hung connection.
    predict_timeout_s: float = Field(default=30.0, gt=0, le=300)
    # Samples one predict may carry: the inputs travel through the broker and the outputs
    # back through the gateway as JSON, so a bigger batch belongs in a job, not a request.
    max_predict_samples: int = Field(default=4096, gt=0)
    # Loaded models (ONNX Runtime sessions, torch modules) a worker keeps for predicts, so
    # repeated calls do not reload the file; each holds the model's weights in memory.
    predict_cached_models: int = Field(default=4, ge=1)
    # When set, GET /metrics asks for `Authorization: Bearer <this token>`; empty leaves it
    # open, as scrapers usually are (keep the port off the internet, or set it).
    metrics_token: str = ""
    # How long /metrics waits for its database reads (jobs, queues, workers) before it answers
    # without them and with stillhouse_metrics_database_up 0: a scrape must not hang in an outage.
    metrics_db_timeout_s: float = Field(default=2.0, gt=0, le=60)
    # Log lines: JSON objects when the log stream (stderr) is not a terminal, readable text
    # when it is (core.logs); "json" or "text" forces either.
    log_format: Literal["auto", "json", "text"] = "auto"
    # Testing only: "stage=seconds,..." pauses (cooperatively) at the start of a stage, so a
    # fault test can act while a short stage runs. Empty in production.
    failpoints: str = ""

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.environment == "production" and not self.database_url:
            raise ValueError(
                "STILLHOUSE_DATABASE_URL must be set in production; the SQLite default is for one machine."
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        """The sync (psycopg / sqlite3) URL used by workers and migrations."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'stillhouse.db').resolve()}"
        return sync_database_url(url)

    @property
    def async_database_url(self) -> str:
        """The async URL used by the gateway: asyncpg or aiosqlite."""
        return async_database_url(self.resolved_database_url)

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{(self.data_dir / 'artifacts').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


def sync_database_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("sqlite+aiosqlite://"):
        return "sqlite://" + url[len("sqlite+aiosqlite://") :]
    return url


def async_database_url(url: str) -> str:
    url = sync_database_url(url)
    if url.startswith("postgresql+psycopg://"):
        return "postgresql+asyncpg://" + url[len("postgresql+psycopg://") :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
