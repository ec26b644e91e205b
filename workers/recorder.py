"""Training's writes to the database, off the training thread: per-epoch
metrics, the job's progress, and checkpoints. Every write is fenced by the
stage's lease; one that matches nothing stops the training at its next epoch."""

from __future__ import annotations

import queue
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from core import lifecycle, repository
from core.lifecycle import Claim
from distill.checkpoint import TrainState, save_checkpoint
from distill.loop import EpochMetrics
from workers.context import WorkerContext
from workers.retry import transact

# Epochs that end within this many seconds of each other share one commit.
MIN_WRITE_INTERVAL = 1.0


@dataclass(frozen=True)
class _Checkpoint:
    state: TrainState


class EpochRecorder:
    """Writes one run's metrics (and checkpoints) from a background thread, so the
    loop never waits for a commit. A write is retried while the database is
    unreachable (up to `db_retry_s`); one that fails for good (the database
    stayed away, or the lease was lost) is raised in the training thread at its
    next epoch, and the thread stays up to drain the queue."""

    def __init__(
        self,
        ctx: WorkerContext,
        claim: Claim,
        run: str,
        prefix: str,
        progress: Callable[[EpochMetrics], float],
        checkpoints: dict[str, Any],
    ) -> None:
        self.ctx, self.claim, self.run, self.prefix = ctx, claim, run, prefix
        self.progress = progress
        # {"<run>": {"key", "epoch", ...}}: the stage row's checkpoint column, kept in step.
        self.checkpoints = checkpoints
        self._queue: queue.SimpleQueue[EpochMetrics | _Checkpoint | None] = queue.SimpleQueue()
        self._error: Exception | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"metrics-{claim.job_id}", daemon=True
        )
        self._thread.start()

    def __call__(self, metrics: EpochMetrics) -> None:
        self._raise()
        self._queue.put(metrics)

    def checkpoint(self, state: TrainState) -> None:
        self._raise()
        self._queue.put(_Checkpoint(state))

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error  # stop training rather than lose its record

    def __enter__(self) -> EpochRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.close(raise_error=exc_type is None)

    def close(self, raise_error: bool = True) -> None:
        self._closing.set()
        self._queue.put(None)
        self._thread.join()
        if raise_error:
            self._raise()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Short epochs arrive faster than a commit is worth: gather for a moment, so
            # progress stays live within MIN_WRITE_INTERVAL while tiny jobs write rarely.
            self._closing.wait(MIN_WRITE_INTERVAL)
            while not self._queue.empty():
                batch.append(self._queue.get())
            items = [item for item in batch if item is not None]
            if items and self._error is None:
                try:
                    self._write(items)
                except Exception as exc:  # handed to the training thread at its next epoch
                    self._error = exc
            if None in batch:
                return

    def _write(self, items: list[EpochMetrics | _Checkpoint]) -> None:
        epochs = [m for m in items if isinstance(m, EpochMetrics)]
        saved = [c for c in items if isinstance(c, _Checkpoint)]
        entry = self._store_checkpoint(saved[-1].state) if saved else None
        row: dict[str, Any] = {}
        if epochs:
            row["progress"] = self.progress(epochs[-1])
            # The job's `epoch` counts the distilled student's epochs, `baseline_epoch`
            # the baseline's.
            row["baseline_epoch" if self.prefix else "epoch"] = epochs[-1].epoch
        points = [
            {
                "job_id": self.claim.job_id,
                "step": m.step,
                "epoch": m.epoch,
                "name": self.prefix + name,
                "value": float(value),
            }
            for m in epochs
            for name, value in m.values.items()
        ]

        def write(session: Session) -> None:
            lifecycle.fence(session, self.claim, **row)
            if points:
                session.execute(repository.insert_metrics(session.get_bind().dialect.name), points)
            if entry is not None:
                checkpoints = {**self.checkpoints, self.run: entry}
                lifecycle.save_stage_state(session, self.claim, checkpoint=checkpoints)

        # Retried while the database is away (the checkpoint file is stored once, above);
        # the training goes on meanwhile, and its next epochs join the next write.
        transact(self.ctx, f"recording job {self.claim.job_id}'s {self.run} epochs", write)
        if entry is not None:
            self.checkpoints[self.run] = entry

    def _store_checkpoint(self, state: TrainState) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "checkpoint.pt"
            save_checkpoint(state, path)
            key, _, size = self.ctx.store.put_file(path)
        return {"key": key, "epoch": state.epoch, "step": state.step, "size_bytes": size}
