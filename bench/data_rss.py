"""Peak RSS of training and of teacher labeling against dataset size: the streaming path
(distill.batches, used above STILLHOUSE_IN_MEMORY_MAX_BYTES) stays flat, proportional to the
batch; the in-memory path grows with the set.

    .venv/bin/python bench/data_rss.py [--sizes-mb 64 256 1024] [--epochs 1] [--folder /tmp]

Each measurement runs in a fresh child process (ru_maxrss is a high-water mark), on a
canonical x.npy of float32 rows of 784 features (an MNIST-sized sample) and 10 classes,
written in blocks by distill.npy_io.NpyWriter:
(train/stream) distill.loop.train on Rows views with the 10% seeded holdout, as
    workers/stages/inputs.split_rows builds them, cached kd + ce, an mlp [64], batch 256;
(train/memory) the same train() on the array loaded whole (today's path, below the threshold);
(label/stream) the teacher stage's _predict: an mlp teacher's logits written chunk by chunk.
The files are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FEATURES, CLASSES = 784, 10


def _write(folder: Path, mb: int) -> tuple[Path, Path, Path]:
    from distill.npy_io import NpyWriter

    n = mb * 1024 * 1024 // (FEATURES * 4)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(CLASSES, FEATURES)).astype(np.float32)
    paths = folder / "x.npy", folder / "y.npy", folder / "t.npy"
    with (
        NpyWriter(paths[0], np.float32, (FEATURES,)) as xs,
        NpyWriter(paths[1], np.int64, ()) as ys,
        NpyWriter(paths[2], np.float32, (CLASSES,)) as ts,
    ):
        for start in range(0, n, 8192):
            y = rng.integers(0, CLASSES, size=min(8192, n - start))
            xs.append(centers[y] + rng.normal(size=(len(y), FEATURES)).astype(np.float32))
            ys.append(y)
            ts.append(np.eye(CLASSES, dtype=np.float32)[y] * 4)
    return paths


def _child(mode: str, folder: Path, epochs: int) -> dict[str, float]:
    import torch

    from distill.batches import Rows
    from distill.loop import TrainConfig, train
    from distill.losses import build_loss
    from distill.students import build_student

    torch.set_num_threads(1)
    x_path, y_path, t_path = folder / "x.npy", folder / "y.npy", folder / "t.npy"
    y = np.load(y_path)
    t = np.load(t_path, mmap_mode="r")  # the holdout's rows are read from it
    from distill.evaluate import predict_logits  # noqa: F401 - imported before the baseline

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.monotonic()
    if mode == "label":
        from workers.stages.teacher import _predict

        class _Never:
            def __call__(self) -> bool:
                return False

            def raise_if_stopped(self) -> None: ...

        teacher = build_student("mlp", {"hidden": [256]}, (FEATURES,), CLASSES).eval()

        class _Teacher:
            def predict_logits(self, xb: np.ndarray, batch_size: int = 1024) -> np.ndarray:
                from distill.evaluate import predict_logits

                return predict_logits(teacher, xb, batch_size)

            def torch_logits(self, xb: torch.Tensor) -> torch.Tensor:
                return teacher(xb)

        _predict(_Teacher(), Rows.of(x_path), _Never(), folder / "logits.npy", CLASSES, "x")  # type: ignore[arg-type]
        return {"seconds": time.monotonic() - started, "base_rss_mb": base}
    order = np.random.default_rng(0).permutation(len(y))
    cut = len(y) // 10
    hold, keep = np.sort(order[:cut]), np.sort(order[cut:])
    t_train: np.ndarray | Rows
    if mode == "stream":  # as split_rows: x and the logits stream, the holdout is a view
        rows = Rows.of(x_path)
        x, xv = rows.take(keep), rows.take(hold)
        t_train = Rows.of(t_path).take(keep)
    else:
        whole = np.load(x_path)
        x, xv = whole[keep], whole[hold]
        del whole
        t_train = t[keep]
    loss = build_loss([{"name": "kd", "weight": 1.0}, {"name": "ce", "weight": 0.5}])
    model = build_student("mlp", {"hidden": [64]}, (FEATURES,), CLASSES)
    config = TrainConfig(epochs=epochs, batch_size=256)
    result = train(model, x, y[keep], t_train, loss, config, val=(xv, y[hold], np.array(t[hold])))
    return {
        "seconds": time.monotonic() - started,
        "val_accuracy": result.history[-1].values["val_accuracy"],
        "base_rss_mb": base,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--folder", default=tempfile.gettempdir())
    parser.add_argument("--memory-max-mb", type=int, default=256, help="in-memory runs up to this")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        out = _child(args.child[0], Path(args.child[1]), args.epochs)
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(out))
        return
    print(
        f"{'size on disk':>12} | {'path':>13} | {'peak RSS':>9} | {'above imports':>13} | "
        f"{'seconds':>7} | val acc"
    )
    for mb in args.sizes_mb:
        folder = Path(tempfile.mkdtemp(prefix="data-rss-", dir=args.folder))
        try:
            _write(folder, mb)
            modes = ["stream", "label"] + (["memory"] if mb <= args.memory_max_mb else [])
            for mode in modes:
                command = [sys.executable, __file__, "--child", mode, str(folder)]
                command += ["--epochs", str(args.epochs)]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                got = json.loads(done.stdout.strip().splitlines()[-1])
                name = {
                    "stream": "train/stream",
                    "memory": "train/memory",
                    "label": "label/stream",
                }[mode]
                acc = f"{got['val_accuracy']:.3f}" if "val_accuracy" in got else "-"
                print(
                    f"{mb:>9} MB | {name:>13} | {got['peak_rss_mb']:>6.0f} MB | "
                    f"{got['peak_rss_mb'] - got['base_rss_mb']:>10.0f} MB | "
                    f"{got['seconds']:>7.1f} | {acc}",
                    flush=True,
                )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
