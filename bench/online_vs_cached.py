"""Online vs cached teacher outputs: seconds per epoch when the teacher costs far more than
the student, and the teacher/student cost ratio that should explain the difference.

    .venv/bin/python bench/online_vs_cached.py [--samples 20000] [--repeats 5] [--threads 1]
        [--ort-threads 1] [--cached-epochs 21] [--online-epochs 4]

One process. Synthetic data: --samples x 64 features, x ~ N(0, 1), labels the teacher's argmax.
Teacher: an MLP 64 -> 2048 -> 2048 -> 10 (4.3 M parameters, seed 0) exported to ONNX and run by
distill.teachers.OnnxTeacher as a worker runs it; online KD calls OnnxTeacher.torch_logits, the
numpy round trip the training stage uses. Its session gets --ort-threads intra-op threads
(default 1; 0 = ONNX Runtime's default, one per core, as a worker has).
Student: zoo mlp hidden [32], batch 256, kd (T = 4, weight 0.9) + ce (0.1), fused Adam 3e-3,
--threads torch threads (default 1, as bench/train_overhead.py).

(cached)  distill.loop.train with the teacher's logits computed once beforehand; that pass over
          the data set (what the teacher_inference stage pays once per teacher and data set) is
          timed and printed but is not part of an epoch.
(online)  the same train() with TrainConfig(teacher=OnnxTeacher.torch_logits), augment_noise 0.
(noisy)   online with augment_noise 0.05: what an augmented job runs.
Seconds per epoch are read between on_epoch_end calls (the first epoch, which also pays the
set-up, is left out). The online teacher is wrapped in a clock, so its cost inside the loop
shows beside the one measured alone.

The cost ratio, measured directly on the same batches of 256:
  teacher = one OnnxTeacher.torch_logits call (median over 40 batches);
  student = one training step as the loop runs it: index the batch, forward, kd + ce, backward,
            Adam step (median over 400 steps);
  noise   = one augment_noise draw added to a batch (median over 400), for scale.

Each repeat measures every figure once, back to back; medians are printed, and the verdict is
the median of the per-repeat ratios. Two clocks: wall time, and this thread's CPU time. With
one torch thread and one ONNX Runtime thread all the work runs on this thread, so CPU time is
what other processes on a shared box disturb least (they take the core away, which wall time
counts and CPU time does not); the verdict uses it then, and wall time otherwise.

Formula. A cached step costs the student step s; an online step costs s plus one teacher call
t; nothing else per step differs, and what the loop does once per epoch (shuffle, the one sync)
is the same in both. So online_epoch / cached_epoch = (s + t) / s = 1 + r with r = t / s, less
the share of per-epoch work, which only lowers it. Target: online/cached >= 0.8 * (1 + r), i.e.
caching the logits saves the teacher's forward passes, within 20 %, and online KD costs nothing
beyond them that matters.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.loop import EpochMetrics, TrainConfig, make_optimizer, train  # noqa: E402
from distill.losses import build_loss  # noqa: E402
from distill.students import build_student  # noqa: E402
from distill.teachers import OnnxTeacher  # noqa: E402
from examples.digits import export_teacher  # noqa: E402

BATCH, LR, FEATURES, CLASSES, WIDTH = 256, 3e-3, 64, 10, 2048
LOSS = [{"name": "kd", "weight": 0.9, "temperature": 4.0}, {"name": "ce", "weight": 0.1}]
Times = tuple[float, float]  # (wall, this thread's CPU) seconds


def now() -> Times:
    return time.perf_counter(), time.thread_time()


def since(start: Times) -> Times:
    wall, cpu = now()
    return wall - start[0], cpu - start[1]


def median(times: list[Times]) -> Times:
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def make_teacher(folder: Path, ort_threads: int) -> OnnxTeacher:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, WIDTH),
        torch.nn.ReLU(),
        torch.nn.Linear(WIDTH, WIDTH),
        torch.nn.ReLU(),
        torch.nn.Linear(WIDTH, CLASSES),
    ).eval()
    path = folder / "teacher.onnx"
    export_teacher(net, FEATURES, path)
    teacher = OnnxTeacher(path)
    if ort_threads > 0:  # the same model in a session with a fixed thread count
        options = ort.SessionOptions()
        options.intra_op_num_threads = ort_threads
        teacher.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    return teacher


def student() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_student("mlp", {"hidden": [32]}, (FEATURES,), CLASSES)


class Timed:
    """The online teacher with a clock around each call: its cost inside the loop."""

    def __init__(self, teacher: OnnxTeacher) -> None:
        self.teacher, self.times = teacher, []  # type: ignore[var-annotated]

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        start = now()
        out = self.teacher.torch_logits(xb)
        self.times.append(since(start))
        return out


def epoch_time(x: np.ndarray, y: np.ndarray, t: np.ndarray | None, config: TrainConfig) -> Times:
    marks: list[Times] = []

    def mark(_: EpochMetrics) -> None:
        marks.append(now())

    train(student(), x, y, t, build_loss(LOSS), config, on_epoch_end=mark)
    n = len(marks) - 1
    return (marks[-1][0] - marks[0][0]) / n, (marks[-1][1] - marks[0][1]) / n


def per_call(step: Callable[[int], object], calls: int, warmup: int) -> Times:
    times = []
    for i in range(warmup + calls):
        start = now()
        step(i)
        times.append(since(start))
    return median(times[warmup:])


def teacher_call(teacher: OnnxTeacher, x: np.ndarray) -> Times:
    X = torch.from_numpy(x)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(2))

    def call(i: int) -> object:
        return teacher.torch_logits(X[perm[(i * BATCH) % (len(X) - BATCH) :][:BATCH]])

    return per_call(call, calls=40, warmup=3)


def student_step(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> Times:
    """One step of the loop's own work, with the engine's loss and optimizer."""
    model, loss = student(), build_loss(LOSS)
    optimizer = make_optimizer(model, TrainConfig(lr=LR))
    X, Y, T = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(t)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(3))

    def step(i: int) -> object:
        idx = perm[(i * BATCH) % (len(X) - BATCH) :][:BATCH]  # (B,)
        total, _ = loss(model(X[idx]), T[idx], Y[idx])
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        return None

    with loss.assume_all_labeled(True):
        return per_call(step, calls=400, warmup=20)


def noise_draw(x: np.ndarray) -> Times:
    """What augment_noise adds to a step: one randn of the batch's shape, added in place."""
    xb = torch.from_numpy(x[:BATCH]).clone()  # (B, 64)
    gen = torch.Generator().manual_seed(4)
    return per_call(
        lambda _: xb.add_(torch.randn(xb.shape, generator=gen), alpha=0.05), calls=400, warmup=20
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ort-threads", type=int, default=1)
    parser.add_argument("--cached-epochs", type=int, default=21)
    parser.add_argument("--online-epochs", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher = make_teacher(Path(tempfile.mkdtemp(prefix="stillhouse-bench-")), args.ort_threads)
    x = np.random.default_rng(0).normal(0, 1, (args.samples, FEATURES)).astype(np.float32)
    start = now()
    t = teacher.predict_logits(x)  # (N, 10): the cached path's one pass
    precompute = since(start)
    y = t.argmax(axis=1).astype(np.int64)
    timed = Timed(teacher)
    base = TrainConfig(batch_size=BATCH, lr=LR, seed=0)
    cached = replace(base, epochs=args.cached_epochs)
    online = replace(base, epochs=args.online_epochs, teacher=timed)
    noisy = replace(online, augment_noise=0.05)
    measures: dict[str, Callable[[], Times]] = {
        "cached": lambda: epoch_time(x, y, t, cached),
        "student": lambda: student_step(x, y, t),
        "teacher": lambda: teacher_call(teacher, x),
        "online": lambda: epoch_time(x, y, None, online),
        "noisy": lambda: epoch_time(x, y, None, noisy),
        "noise": lambda: noise_draw(x),
    }
    runs: dict[str, list[Times]] = {name: [] for name in measures}
    for _ in range(args.repeats):
        for name, measure in measures.items():
            runs[name].append(measure())

    out = sys.stdout
    out.write(
        f"N={args.samples} x {FEATURES}, teacher MLP {FEATURES}-{WIDTH}-{WIDTH}-{CLASSES} (ONNX), "
        f"student mlp[32], batch {BATCH} = {-(-args.samples // BATCH)} steps/epoch, torch "
        f"threads {torch.get_num_threads()}, ONNX Runtime threads {args.ort_threads or 'default'}, "
        f"{args.repeats} repeats\n"
        f"teacher pass over the data set (cached, once): {precompute[0]:.3f} s wall\n"
    )
    verdict_clock = 1 if args.ort_threads == 1 and args.threads == 1 else 0
    shares: list[float] = []
    for clock, clock_name in enumerate(("wall", "thread CPU")):
        out.write(f"[{clock_name}]\n")

        def row(label: str, values: list[float], scale: float = 1.0, unit: str = "") -> None:
            each = ", ".join(f"{v * scale:.3f}" for v in values)
            mid = statistics.median(values) * scale
            out.write(f"  {label:26s} {mid:9.3f}{unit} (runs: {each})\n")

        col = {name: [r[clock] for r in rs] for name, rs in runs.items()}
        row("cached epoch", col["cached"], unit=" s")
        row("online epoch", col["online"], unit=" s")
        row("online+noise epoch", col["noisy"], unit=" s")
        row("teacher call per batch", col["teacher"], 1e3, " ms")
        row("student step per batch", col["student"], 1e3, " ms")
        row("noise draw per batch", col["noise"], 1e6, " us")
        in_loop = statistics.median(t[clock] for t in timed.times)
        out.write(f"  {'teacher call in the loop':26s} {in_loop * 1e3:9.3f} ms\n")
        ratio = [o / c for o, c in zip(col["online"], col["cached"], strict=True)]
        expected = [1 + te / st for te, st in zip(col["teacher"], col["student"], strict=True)]
        share = [r / e for r, e in zip(ratio, expected, strict=True)]
        row("online/cached epoch", ratio)
        row("1 + r, r = teacher/student", expected)
        row("(online/cached) / (1 + r)", share)
        row(
            "online+noise / online",
            [n / o for n, o in zip(col["noisy"], col["online"], strict=True)],
        )
        if clock == verdict_clock:
            shares = share
    verdict = "PASS" if statistics.median(shares) >= 0.8 else "FAIL"
    out.write(
        f"target online/cached >= 0.8 * (1 + r) on {('wall', 'thread CPU')[verdict_clock]} time, "
        f"median of the repeats {statistics.median(shares):.3f}: {verdict}\n"
    )


if __name__ == "__main__":
    main()
