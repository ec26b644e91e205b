"""Teacher inference through the service vs raw ONNX Runtime: same model, batch and thread
count, one run each after a warm-up run of each. Target: the service at 0.9x raw or better.

    .venv/bin/python bench/teacher_inference.py [--samples 150000] [--threads N] [--repeats 1]

Teacher: an MLP 64 -> 1024 -> 1024 -> 10 (random weights: speed does not depend on training)
exported to ONNX with a dynamic batch dim, about 1.1 M multiply-adds a sample, so the figures
are dominated by the model as a real teacher's are. Data: --samples rows of 64 float32 in an
.npz file, as a user uploads it.

(a) the service: the teacher stage's code path in-process (workers/stages/teacher.py):
    load_npz on the stored file, OnnxTeacher on the stored model, _predict (predict_logits in
    chunks of CHUNK samples with a cancel check after each, batch 1024) with a stop check
    that never stops, the same per-chunk checks as the stage, writing the logits file chunk by chunk, then put_named into a real
    file-system ArtifactStore. Timed end to end, model and data loading included.
(b) raw: one InferenceSession on the same file, the same thread count, a plain loop of
    session.run over the in-memory array at batch 1024, outputs concatenated. Timed from
    session creation; reading and writing files is not part of it.

--threads N pins ORT's intra-op threads for both; without it both get onnxruntime's default
(one per core), which is what the worker runs with. Prints samples/s for both, the ratio
(a)/(b) (of the medians and per run), the predict step alone against (b), and where
(a)'s time went.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.storage import ArtifactStore  # noqa: E402
from distill.data import load_npz  # noqa: E402
from distill.teachers import OnnxTeacher  # noqa: E402
from examples.digits import export_teacher  # noqa: E402
from workers.stages.teacher import CHUNK, _predict  # noqa: E402

BATCH = 1024  # OnnxTeacher.predict_logits' default, as the stage calls it


class NeverStop:
    """Stands in for workers.jobs.StopCheck: the stage calls it after every chunk."""

    def __call__(self) -> bool:
        return False

    def raise_if_stopped(self) -> None:
        pass


def build_files(folder: Path, samples: int) -> tuple[Path, Path]:
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(
        torch.nn.Linear(64, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 10),
    ).eval()
    model = folder / "teacher.onnx"
    export_teacher(teacher, 64, model)
    data = folder / "transfer.npz"
    x = np.random.default_rng(0).random((samples, 64), dtype=np.float32)  # (N, 64)
    np.savez(data, x=x)
    return model, data


def service(model: Path, data: Path, store: ArtifactStore, threads: int | None) -> dict[str, float]:
    """(a): seconds spent in each step of the teacher stage."""
    t0 = time.perf_counter()
    x, _ = load_npz(data)  # load_arrays(store, dataset)
    t1 = time.perf_counter()
    teacher = OnnxTeacher(model, threads=threads)  # load_teacher(ctx, row)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # The stage's _predict checks each chunk (shape, finite) and writes it to the file.
        out = Path(tmp) / "logits.npy"
        width = int(teacher.session.get_outputs()[0].shape[-1])
        _predict(teacher, x, NeverStop(), out, width, "bench")  # type: ignore[arg-type]
        t3 = time.perf_counter()
        store.put_named("cache/teacher-logits/bench/logits.npy", out)
        t4 = time.perf_counter()
    return {"load data": t1 - t0, "load model": t2 - t1, "predict": t3 - t2, "save": t4 - t3}


def raw(model: Path, x: np.ndarray, threads: int | None) -> float:
    """(b): seconds for a session and a plain loop of session.run at BATCH."""
    t0 = time.perf_counter()
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    outs = [
        session.run(["logits"], {"input": x[start : start + BATCH]})[0]
        for start in range(0, len(x), BATCH)
    ]
    logits = np.concatenate(outs)  # (N, 10)
    assert logits.shape == (len(x), 10)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=150_000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stillhouse-bench-") as tmp:
        folder = Path(tmp)
        model, data = build_files(folder, args.samples)
        store = ArtifactStore(f"file://{folder}/artifacts")
        x, _ = load_npz(data)
        service(model, data, store, args.threads)  # warm-up, not counted: page cache,
        raw(model, x, args.threads)  # allocator, first-call code paths
        runs: list[tuple[dict[str, float], float]] = []  # ((a)'s steps, (b)'s seconds)
        for _ in range(args.repeats):  # interleaved, so a busy moment hits both
            runs.append((service(model, data, store, args.threads), raw(model, x, args.threads)))
    n = args.samples
    a = [n / sum(steps.values()) for steps, _ in runs]  # samples/s, a run each
    p = [n / steps["predict"] for steps, _ in runs]
    b = [n / seconds for _, seconds in runs]
    threads = args.threads or f"onnxruntime's default ({os.cpu_count()} cores)"
    print(
        f"{n:,} samples, batch {BATCH}, chunk {CHUNK}, threads {threads}, {len(runs)} run(s), "
        f"onnxruntime {ort.__version__}"
    )
    print(f"(a) service      {statistics.median(a):10,.0f} samples/s")
    print(f"(b) raw ORT      {statistics.median(b):10,.0f} samples/s")
    print(f"(a)/(b)          {statistics.median(a) / statistics.median(b):10.3f}  (medians)")
    print("(a)/(b) per run  " + ", ".join(f"{ai / bi:.3f}" for ai, bi in zip(a, b, strict=True)))
    print("predict step/(b) " + ", ".join(f"{pi / bi:.3f}" for pi, bi in zip(p, b, strict=True)))
    steps = runs[-1][0]
    total = sum(steps.values())
    print(
        "(a) last run:    "
        + ", ".join(f"{k} {v:.3f} s ({v / total:.0%})" for k, v in steps.items())
    )


if __name__ == "__main__":
    main()
