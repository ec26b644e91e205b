"""How much slower is the engine's train() than a minimal hand-written PyTorch loop?

    .venv/bin/python bench/train_overhead.py [--repeats 9] [--epochs 20] [--threads 1]

One process, scikit-learn's bundled digits (1,797 samples x 64 features, 10 classes). A small
mlp teacher is trained first; its logits feed both runs. (a) distill.loop.train with kd + ce and
the callbacks a service passes (a rate-limited cancel check and a per-epoch metrics sink);
(b) the same student (mlp hidden [32]), data, batch size 64, step count, optimizer and losses in
a bare loop. Each is warmed up, then they run interleaved; the median samples/s and the ratio
(a)/(b) are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
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


def run_engine(x: np.ndarray, y: np.ndarray, t: np.ndarray, epochs: int) -> tuple[float, float]:
    torch.manual_seed(1)
    student = build_student("mlp", {"hidden": [32]}, (64,), 10)
    loss = build_loss(
        [{"name": "kd", "weight": W_KD, "temperature": T}, {"name": "ce", "weight": W_CE}]
    )
    sink: list[EpochMetrics] = []
    last_check = [0.0]

    def should_stop() -> bool:
        # What a worker does: look at a cancel flag at most every 2 s, else return at once.
        now = time.monotonic()
        if now - last_check[0] < 2.0:
            return False
        last_check[0] = now
        return False

    config = TrainConfig(epochs=epochs, batch_size=BATCH, lr=LR, seed=1)
    clock = Clock()
    train(student, x, y, t, loss, config, on_epoch_end=sink.append, should_stop=should_stop)
    return clock.rates(epochs * len(x))


def run_baseline(
    x: np.ndarray, y: np.ndarray, t: np.ndarray, epochs: int, fused: bool = True
) -> tuple[float, float]:
    torch.manual_seed(1)
    student = build_student("mlp", {"hidden": [32]}, (64,), 10)
    clock = Clock()
    X, Y, TL = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(t)
    # The engine picks the fused Adam kernel; the baseline uses the same so the ratio measures the
    # loop alone. fused=False (torch's default Adam) is printed for context.
    opt = torch.optim.Adam(student.parameters(), lr=LR, fused=fused)
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
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y, t = make_data()
    run_engine(x, y, t, 2)  # warm-up
    run_baseline(x, y, t, 2)
    engine: list[tuple[float, float]] = []
    base: list[tuple[float, float]] = []
    default_adam: list[tuple[float, float]] = []
    for _ in range(args.repeats):
        engine.append(run_engine(x, y, t, args.epochs))
        base.append(run_baseline(x, y, t, args.epochs))
        default_adam.append(run_baseline(x, y, t, args.epochs, fused=False))
    steps = args.epochs * -(-len(x) // BATCH)
    out = sys.stdout
    out.write(
        f"digits N={len(x)}, mlp[32], batch {BATCH}, {steps} steps/run, "
        f"torch threads {torch.get_num_threads()}, {args.repeats} interleaved repeats\n"
    )
    for i, clock in enumerate(("wall", "cpu")):
        a = statistics.median(r[i] for r in engine)
        b = statistics.median(r[i] for r in base)
        pairs = statistics.median(e[i] / r[i] for e, r in zip(engine, base, strict=True))
        out.write(
            f"[{clock:4s}] (a) distill.loop.train {a:9,.0f} samples/s | "
            f"(b) hand-written loop {b:9,.0f} samples/s | (a)/(b) {a / b:.3f} "
            f"(median of per-pair ratios {pairs:.3f})\n"
        )
    c = statistics.median(r[0] for r in default_adam)
    out.write(
        f"context: the hand-written loop with torch's default (foreach) Adam: "
        f"{c:,.0f} samples/s wall\n"
    )


if __name__ == "__main__":
    main()
