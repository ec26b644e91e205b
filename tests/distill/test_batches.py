"""The larger-than-memory path: Rows views over .npy files, the block-shuffled stream,
and a streamed training run landing where the in-memory one does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distill.batches import POSITIONS, BlockStream, Rows
from distill.loop import TrainConfig, train
from distill.losses import build_loss
from distill.npy_io import NpyWriter, npy_layout
from distill.students import build_student


def _npy(path: Path, a: np.ndarray, block: int = 7) -> Path:
    with NpyWriter(path, a.dtype, a.shape[1:]) as writer:
        for i in range(0, len(a), block):
            writer.append(a[i : i + block])
    return path


def test_the_writer_and_rows_read_what_numpy_wrote(tmp_path: Path) -> None:
    a = np.arange(60, dtype=np.int64).reshape(20, 3)
    path = _npy(tmp_path / "a.npy", a)
    assert np.array_equal(np.load(path), a)
    assert npy_layout(path).shape == (20, 3)
    rows = Rows.of(path)
    assert rows.shape == (20, 3) and rows.dtype == np.int64
    assert np.array_equal(rows[3:9], a[3:9])
    view = rows.take(np.array([15, 2, 7, 8]))  # sorted by the view
    assert np.array_equal(np.asarray(view), a[[2, 7, 8, 15]])
    assert np.array_equal(view[1:3], a[[7, 8]])
    both = view.concat(Rows.of(a[:2]))
    assert np.array_equal(both[2:6], np.concatenate([a[[8, 15]], a[:2]]))
    assert np.array_equal(both[np.array([0, 5])], a[[2, 1]])


def test_the_stream_visits_every_row_once_in_a_seeded_order(tmp_path: Path) -> None:
    n = 103
    x = Rows.of(_npy(tmp_path / "x.npy", np.arange(n, dtype=np.float32)[:, None]))
    stream = BlockStream({"x": x}, batch_size=10, window=3)
    batches = list(stream.epoch(seed=1))
    assert len(batches) == stream.steps == 11
    seen = np.concatenate([b[POSITIONS] for b in batches])
    assert sorted(seen.tolist()) == list(range(n))
    assert np.array_equal(np.concatenate([b["x"][:, 0] for b in batches]), seen.astype(np.float32))
    again = np.concatenate([b[POSITIONS] for b in stream.epoch(seed=1)])
    assert np.array_equal(seen, again)
    assert not np.array_equal(seen, np.concatenate([b[POSITIONS] for b in stream.epoch(seed=2)]))


def test_streamed_training_lands_where_in_memory_training_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8)) * 3
    y = rng.integers(0, 4, size=600)
    x = (centers[y] + rng.normal(size=(600, 8))).astype(np.float32)
    t = np.eye(4, dtype=np.float32)[y] * 4  # a confident teacher
    xv, yv, tv = x[:100], y[:100], t[:100]
    loss = build_loss([{"name": "kd", "weight": 1.0}, {"name": "ce", "weight": 1.0}])
    config = TrainConfig(epochs=4, batch_size=32, seed=0)
    results = {}
    for mode in ("memory", "stream"):
        torch.manual_seed(0)
        model = build_student("mlp", {"hidden": [32]}, (8,), 4)
        if mode == "memory":
            xs, xvs = x[100:], xv
        else:
            xs = Rows.of(_npy(tmp_path / "x.npy", x)).take(np.arange(100, 600))
            xvs = Rows.of(tmp_path / "x.npy").take(np.arange(100))
        result = train(model, xs, y[100:], t[100:], loss, config, val=(xvs, yv, tv))
        results[mode] = result.history[-1].values
    for mode in results:
        assert results[mode]["val_accuracy"] > 0.9, results
        assert results[mode]["train_accuracy"] > 0.9, results
    assert abs(results["memory"]["val_accuracy"] - results["stream"]["val_accuracy"]) < 0.05
