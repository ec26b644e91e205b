"""How much slower is the service's training loop than a minimal hand-written PyTorch loop?

    .venv/bin/python bench/train_overhead.py [--repeats 9] [--epochs 50] [--threads 1]
        [--checkpoint-every S] [--db URL]

One process, scikit-learn's bundled digits (1,797 samples x 64 features, 10 classes). A small
mlp teacher is trained first; its logits feed every run.
(a) the service: distill.loop.train with kd + ce, wired as the training stage wires it
    (workers/stages/training.py): a real job claimed in a real, migrated database (a temporary
    SQLite file, or --db), StopCheck as should_stop, EpochRecorder as on_epoch_end and
    recorder.checkpoint as on_checkpoint, checkpoints every --checkpoint-every seconds (default:
    the service's STILLHOUSE_CHECKPOINT_EVERY_S default). Every write is fenced by the lease;
(a-ckpt0) the same with a checkpoint at the end of every epoch (checkpoint_every_s=0);
(a0) the engine alone: the same train() with no-op callbacks;
(b) the same student (mlp hidden [32]), data, batch size 64, step count, optimizer and losses in
    a bare loop.
Each is warmed up, then they run interleaved; the median samples/s and the ratios are printed,
with the checkpoints each service variant handed over and stored per run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import distill.loop  # noqa: E402
from core import lifecycle  # noqa: E402
from core.config import Settings  # noqa: E402
from core.lifecycle import Claim  # noqa: E402
from core.stages import BY_NAME  # noqa: E402
from core.storage import ArtifactStore  # noqa: E402
from distill.checkpoint import TrainState  # noqa: E402
from distill.evaluate import evaluate, predict_logits  # noqa: E402
from distill.loop import EpochMetrics, TrainConfig, train  # noqa: E402
from distill.losses import build_loss  # noqa: E402
from distill.students import build_student  # noqa: E402
from workers.context import WorkerContext  # noqa: E402
from workers.jobs import StopCheck  # noqa: E402
from workers.recorder import EpochRecorder  # noqa: E402

BATCH, LR, T, W_KD, W_CE = 64, 3e-3, 4.0, 0.9, 0.1
TRAINING = "training"


class Clock:
    """Wall time, and this thread's CPU time: with one torch thread all the training runs on
    this thread, so CPU time is the figure that other processes on a shared 2-core box disturb
    least. It leaves out the recorder's thread (its commits and checkpoint files)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def rates(self, samples: int) -> tuple[float, float]:
        return (
            samples / (time.perf_counter() - self.wall),
            samples / (time.thread_time() - self.cpu),
        )


class CountingStore(ArtifactStore):
    """The real artifact store; it also counts the files put into it (checkpoints, here)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.files = 0

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, str, int]:
        self.files += 1
        return super().put_file(path)


class SnapshotCounter:
    """Counts the snapshots train() takes on the training thread (one per on_checkpoint call):
    distill.loop.snapshot, wrapped. The recorder stores at most one of them per commit."""

    def __init__(self) -> None:
        self.taken = 0
        self._snapshot = distill.loop.snapshot

        def counted(*args: Any, **kwargs: Any) -> TrainState:
            self.taken += 1
            return self._snapshot(*args, **kwargs)

        distill.loop.snapshot = counted


@dataclass(frozen=True)
class Run:
    wall: float  # samples/s
    cpu: float  # samples/s of this thread's CPU time
    snapshots: int = 0  # handed to on_checkpoint
    stored: int = 0  # checkpoint files written to the artifact store
    last_epoch: int = 0  # the stage row's checkpoint epoch after the run (0: none)


class Service:
    """A real, migrated database and the worker context around it. Each run gets a fresh job
    whose training stage this worker claims (a fresh lease), as a worker claims it."""

    def __init__(self, url: str, folder: Path) -> None:
        from core.db import make_engine, make_sessionmaker
        from core.migrate import upgrade
        from core.models import Tenant

        upgrade(url)
        sessions = make_sessionmaker(make_engine(url))
        with sessions.begin() as session:
            tenant = Tenant(name=f"bench-{uuid.uuid4().hex[:8]}")
            session.add(tenant)
            session.flush()
            self.tenant_id = tenant.id
        self.store = CountingStore(f"file://{folder}/artifacts")
        self.ctx = WorkerContext(
            settings=Settings(database_url=url, data_dir=folder),
            sessions=sessions,
            store=self.store,
            pool="cpu",
            device="cpu",
            worker_id="bench",
        )

    def claim(self) -> Claim:
        """A new job waiting at its training stage (teacher inference done), claimed under a
        fresh lease as a worker claims it. Not timed."""
        from core.models import Job, utcnow

        with self.ctx.sessions.begin() as session:
            job = Job(
                tenant_id=self.tenant_id, name="bench", spec={}, status="queued", stage=TRAINING
            )
            session.add(job)
            session.flush()
            stages = lifecycle.new_stages(job.id, "cpu")
            for stage in stages:
                if stage.position == 0:
                    stage.status = "succeeded"
                elif stage.name == TRAINING:
                    stage.status, stage.pool, stage.queued_at = "queued", "cpu", utcnow()
            session.add_all(stages)
            job_id = job.id
        with self.ctx.sessions.begin() as session:
            return lifecycle.claim(session, job_id, TRAINING, self.ctx.worker_id)

    def checkpoint_epoch(self, claim: Claim) -> int:
        from core.models import JobStage

        with self.ctx.sessions() as session:
            stage = session.get(JobStage, claim.stage_id)
            assert stage is not None
            return int((stage.checkpoint or {}).get("student", {}).get("epoch", 0))


def make_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # (N, 64)
    y = digits.target.astype(np.int64)  # (N,)
    torch.manual_seed(0)
    teacher = build_student("mlp", {"hidden": [256, 256]}, (64,), 10)
    train(
        teacher,
        x,
        y,
        None,
        build_loss([{"name": "ce"}]),
        TrainConfig(epochs=15, batch_size=64, lr=1e-3),
    )
    teacher_logits = predict_logits(teacher, x)  # (N, 10)
    acc = evaluate(teacher_logits, y)["accuracy"]
    return x, y, teacher_logits if acc > 0.9 else sys.exit(f"teacher too weak: {acc:.3f}")


def run_engine(
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    epochs: int,
    service: Service | None = None,
    every_s: float = 0.0,
    snapshots: SnapshotCounter | None = None,
) -> Run:
    """(a) train() as the training stage calls it. With `service`, the callbacks are the
    worker's own, on a freshly claimed job: per-epoch metric rows, progress and checkpoints
    (every `every_s` seconds) written by the recorder's thread under the lease, and the cancel
    flag and lease read by StopCheck (at most once a second). Without, no-op callbacks (the
    engine alone)."""
    torch.manual_seed(1)
    student = build_student("mlp", {"hidden": [32]}, (64,), 10)
    loss = build_loss(
        [{"name": "kd", "weight": W_KD, "temperature": T}, {"name": "ce", "weight": W_CE}]
    )
    config = TrainConfig(epochs=epochs, batch_size=BATCH, lr=LR, seed=1)
    if service is None:
        sink: list[EpochMetrics] = []
        clock = Clock()
        train(student, x, y, t, loss, config, on_epoch_end=sink.append, should_stop=lambda: False)
        return Run(*clock.rates(epochs * len(x)))
    assert snapshots is not None
    claim = service.claim()
    taken, stored = snapshots.taken, service.store.files
    start, end = BY_NAME[TRAINING].progress
    clock = Clock()
    check = StopCheck(service.ctx, claim)
    checkpoints = dict(claim.checkpoint)

    def progress(m: EpochMetrics) -> float:
        return start + (end - start) * m.epoch / epochs

    recorder = EpochRecorder(service.ctx, claim, "student", "", progress, checkpoints)
    with recorder:  # the run is done when its last metrics and checkpoint are committed
        train(
            student,
            x,
            y,
            t,
            loss,
            config,
            on_epoch_end=recorder,
            should_stop=check,
            on_checkpoint=recorder.checkpoint,
            checkpoint_every_s=every_s,
        )
    wall, cpu = clock.rates(epochs * len(x))
    return Run(
        wall,
        cpu,
        snapshots.taken - taken,
        service.store.files - stored,
        service.checkpoint_epoch(claim),
    )


def run_baseline(x: np.ndarray, y: np.ndarray, t: np.ndarray, epochs: int) -> Run:
    torch.manual_seed(1)
    student = build_student("mlp", {"hidden": [32]}, (64,), 10)
    clock = Clock()
    X, Y, TL = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(t)
    # The engine picks the fused Adam kernel; the baseline uses the same so the ratio measures the
    # loop alone.
    opt = torch.optim.Adam(student.parameters(), lr=LR, fused=True)
    gen = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        running = torch.zeros(())
        for i in range(0, len(X), BATCH):
            idx = perm[i : i + BATCH]
            logits = student(X[idx])  # (B, 10)
            kd = (
                F.kl_div(
                    F.log_softmax(logits / T, dim=1),
                    F.log_softmax(TL[idx] / T, dim=1),
                    reduction="batchmean",
                    log_target=True,
                )
                * T
                * T
            )
            loss = W_KD * kd + W_CE * F.cross_entropy(logits, Y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.detach()
        running.item()  # a script reads its epoch loss once
    return Run(*clock.rates(epochs * len(x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--checkpoint-every",
        type=float,
        default=Settings.model_fields["checkpoint_every_s"].default,
        metavar="S",
        help="(a)'s checkpoint policy in seconds (default: the service default, %(default)s)",
    )
    parser.add_argument("--db", help="SQLAlchemy URL of a database to write to (default: SQLite)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="stillhouse-bench-"))
    service = Service(args.db or f"sqlite:///{folder / 'bench.db'}", folder)
    snapshots = SnapshotCounter()
    x, y, t = make_data()
    every = args.checkpoint_every
    variants = {
        "service": lambda epochs: run_engine(x, y, t, epochs, service, every, snapshots),
        "ckpt0": lambda epochs: run_engine(x, y, t, epochs, service, 0.0, snapshots),
        "engine": lambda epochs: run_engine(x, y, t, epochs),
        "bare": lambda epochs: run_baseline(x, y, t, epochs),
    }
    for variant in variants.values():  # warm-up
        variant(2)
    runs: dict[str, list[Run]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, variant in variants.items():
            runs[name].append(variant(args.epochs))
    steps = args.epochs * -(-len(x) // BATCH)
    database = (args.db or "sqlite (temporary file)").split("@")[-1]
    out = sys.stdout
    out.write(
        f"digits N={len(x)}, mlp[32], batch {BATCH}, {args.epochs} epochs = {steps} steps/run, "
        f"torch threads {torch.get_num_threads()}, {args.repeats} interleaved repeats, "
        f"database {database}\n"
    )
    labels = {
        "service": f"(a) service, ckpt every {every:g} s",
        "ckpt0": "(a-ckpt0) service, ckpt every epoch",
        "engine": "(a0) engine alone",
        "bare": "(b) hand-written",
    }
    for i, clock in enumerate(("wall", "cpu")):
        med = {name: statistics.median(astuple(r)[i] for r in rs) for name, rs in runs.items()}
        out.write(f"[{clock}]\n")
        for name, label in labels.items():
            line = f"  {label:38s} {med[name]:9,.0f} samples/s"
            if name != "bare":
                pairs = statistics.median(
                    astuple(a)[i] / astuple(b)[i]
                    for a, b in zip(runs[name], runs["bare"], strict=True)
                )
                line += f" | /(b) {med[name] / med['bare']:.3f} (per-pair median {pairs:.3f})"
            out.write(line + "\n")
    for name in ("service", "ckpt0"):
        rs = runs[name]
        out.write(
            f"{labels[name]}: per run, snapshots taken {[r.snapshots for r in rs]}, "
            f"checkpoints stored {[r.stored for r in rs]}, "
            f"stage row's checkpoint epoch {[r.last_epoch for r in rs]}\n"
        )


def astuple(run: Run) -> tuple[float, float]:
    return run.wall, run.cpu


if __name__ == "__main__":
    main()
