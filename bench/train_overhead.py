"""How much slower is the service's training loop than a minimal hand-written PyTorch loop?

    .venv/bin/python bench/train_overhead.py [--repeats 9] [--epochs 50] [--threads 1] [--db URL]

One process, scikit-learn's bundled digits (1,797 samples x 64 features, 10 classes). A small
mlp teacher is trained first; its logits feed every run.
(a) the service: distill.loop.train with kd + ce and the worker's own callbacks, which write
    each epoch's metrics and progress to a real, migrated database (a temporary SQLite file, or
    --db) and read the job's cancel flag from it;
(a0) the engine alone: the same train() with no-op callbacks;
(b) the same student (mlp hidden [32]), data, batch size 64, step count, optimizer and losses in
    a bare loop.
Each is warmed up, then they run interleaved; the median samples/s and the ratios are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.evaluate import evaluate, predict_logits  # noqa: E402
from distill.loop import EpochMetrics, TrainConfig, train  # noqa: E402
from distill.losses import build_loss  # noqa: E402
from distill.students import build_student  # noqa: E402
from workers.context import WorkerContext  # noqa: E402
from workers.jobs import CancelCheck, EpochRecorder  # noqa: E402

BATCH, LR, T, W_KD, W_CE = 64, 3e-3, 4.0, 0.9, 0.1


class Clock:
    """Wall time, and this thread's CPU time: with one torch thread all the work runs on this
    thread, so CPU time is the figure that other processes on a shared 2-core box disturb least."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def rates(self, samples: int) -> tuple[float, float]:
        return (
            samples / (time.perf_counter() - self.wall),
            samples / (time.thread_time() - self.cpu),
        )


class ServiceJob:
    """A real job row in a real, migrated database, and the worker context around it."""

    def __init__(self, url: str, folder: Path) -> None:
        from core.config import Settings
        from core.db import make_engine, make_sessionmaker
        from core.migrate import upgrade
        from core.models import Job, Tenant
        from core.storage import ArtifactStore

        upgrade(url)
        sessions = make_sessionmaker(make_engine(url))
        with sessions.begin() as session:
            tenant = Tenant(name=f"bench-{uuid.uuid4().hex[:8]}")
            session.add(tenant)
            session.flush()
            job = Job(tenant_id=tenant.id, name="bench", spec={}, status="running")
            session.add(job)
            session.flush()
            self.job_id = job.id
        self.ctx = WorkerContext(
            settings=Settings(database_url=url, data_dir=folder),
            sessions=sessions,
            store=ArtifactStore(f"file://{folder}/artifacts"),
            pool="cpu",
            device="cpu",
            worker_id="bench",
        )

    def recorder(self, epochs: int) -> EpochRecorder:
        return EpochRecorder(self.ctx, self.job_id, lambda m: m.epoch / epochs)

    def cancel(self) -> CancelCheck:
        return CancelCheck(self.ctx, self.job_id)


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
    x: np.ndarray, y: np.ndarray, t: np.ndarray, epochs: int, service: ServiceJob | None = None
) -> tuple[float, float]:
    """(a) train() as a worker calls it. With `service`, the callbacks are the worker's own:
    per-epoch metric rows and progress written to a real database, and the cancel flag read
    from it (at most once a second). Without, no-op callbacks (the engine alone)."""
    torch.manual_seed(1)
    student = build_student("mlp", {"hidden": [32]}, (64,), 10)
    loss = build_loss(
        [{"name": "kd", "weight": W_KD, "temperature": T}, {"name": "ce", "weight": W_CE}]
    )
    config = TrainConfig(epochs=epochs, batch_size=BATCH, lr=LR, seed=1)
    clock = Clock()
    if service is None:
        sink: list[EpochMetrics] = []
        train(student, x, y, t, loss, config, on_epoch_end=sink.append, should_stop=lambda: False)
    else:
        recorder = service.recorder(epochs)
        try:
            train(
                student, x, y, t, loss, config, on_epoch_end=recorder, should_stop=service.cancel()
            )
        finally:
            recorder.close()  # the run is done when its last metrics are committed
    return clock.rates(epochs * len(x))


def run_baseline(x: np.ndarray, y: np.ndarray, t: np.ndarray, epochs: int) -> tuple[float, float]:
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
    return clock.rates(epochs * len(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--db", help="SQLAlchemy URL of a database to write to (default: SQLite)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="stillhouse-bench-"))
    service = ServiceJob(args.db or f"sqlite:///{folder / 'bench.db'}", folder)
    x, y, t = make_data()
    run_engine(x, y, t, 2, service)  # warm-up
    run_engine(x, y, t, 2)
    run_baseline(x, y, t, 2)
    runs: dict[str, list[tuple[float, float]]] = {"service": [], "engine": [], "bare": []}
    for _ in range(args.repeats):
        runs["service"].append(run_engine(x, y, t, args.epochs, service))
        runs["engine"].append(run_engine(x, y, t, args.epochs))
        runs["bare"].append(run_baseline(x, y, t, args.epochs))
    steps = args.epochs * -(-len(x) // BATCH)
    database = (args.db or "sqlite (temporary file)").split("@")[-1]
    out = sys.stdout
    out.write(
        f"digits N={len(x)}, mlp[32], batch {BATCH}, {steps} steps/run, "
        f"torch threads {torch.get_num_threads()}, {args.repeats} interleaved repeats, "
        f"database {database}\n"
    )
    for i, clock in enumerate(("wall", "cpu")):
        med = {name: statistics.median(r[i] for r in rs) for name, rs in runs.items()}
        pairs = statistics.median(
            a[i] / b[i] for a, b in zip(runs["service"], runs["bare"], strict=True)
        )
        out.write(
            f"[{clock:4s}] (a) service {med['service']:9,.0f} samples/s | "
            f"(a0) engine alone {med['engine']:9,.0f} | (b) hand-written {med['bare']:9,.0f} | "
            f"(a)/(b) {med['service'] / med['bare']:.3f} (per-pair median {pairs:.3f}) | "
            f"(a0)/(b) {med['engine'] / med['bare']:.3f}\n"
        )


if __name__ == "__main__":
    main()
