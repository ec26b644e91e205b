"""Checkpoint and resume: a resumed run ends bit-identical to one that never stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from distill.checkpoint import TrainState, load_checkpoint, save_checkpoint
from distill.errors import DistillError
from distill.loop import EpochMetrics, TrainConfig, TrainResult, train
from distill.losses import build_loss
from distill.students import build_student

KD_CE = build_loss([{"name": "kd", "weight": 0.9}, {"name": "ce", "weight": 0.1}])


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 8-D; 'teacher' logits are scaled distances to the centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (3, 8))
    y = rng.integers(0, 3, n)
    x = (centres[y] + rng.normal(0, 1, (n, 8))).astype(np.float32)
    t = -((x[:, None, :] - centres[None]) ** 2).sum(-1).astype(np.float32) / 4
    return x, y.astype(np.int64), t


X, Y, T = blobs(96, seed=0)
VAL = blobs(48, seed=1)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These models are tiny: extra intra-op threads only spin, and on a busy 2-core host
    that made this file 10x slower. One thread, restored for the tests that follow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def student(seed: int) -> torch.nn.Module:
    # Dropout draws from the global RNG: without its restore a resumed run would differ.
    torch.manual_seed(seed)
    return build_student("mlp", {"hidden": [16], "dropout": 0.3}, (8,), 3)


def run(model: torch.nn.Module, config: TrainConfig, **kwargs: Any) -> TrainResult:
    return train(model, X, Y, T, KD_CE, config, val=VAL, **kwargs)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize(
    ("optimizer", "schedule"), [("adam", "cosine"), ("sgd", "cosine"), ("adamw", "constant")]
)
def test_resumed_run_is_bit_identical(optimizer: str, schedule: str, tmp_path: Path) -> None:
    config = TrainConfig(
        epochs=8, batch_size=16, lr=1e-2, optimizer=optimizer, lr_schedule=schedule, seed=7
    )
    whole_model = student(0)
    whole = run(whole_model, config)

    # The interrupted run: checkpoints after every epoch, stopped one step into epoch 4, so
    # the epoch-3 snapshot must not have moved with the training done after it.
    states: list[TrainState] = []
    cut = run(
        student(0),
        config,
        on_checkpoint=states.append,
        checkpoint_every_s=0,
        should_stop=lambda: len(states) == 3,
    )
    assert cut.stopped_early and cut.epochs_completed == 3 and states[-1].epoch == 3
    path = tmp_path / "epoch3.pt"
    save_checkpoint(states[-1], path)

    resumed_model = student(1)  # other initial weights: all must come from the checkpoint
    resumed = run(resumed_model, config, resume=load_checkpoint(path))
    assert_same_weights(resumed_model, whole_model)
    assert resumed.history[-1] == whole.history[-1]  # val metrics and losses, exactly
    assert [m.epoch for m in resumed.history] == [4, 5, 6, 7, 8]
    assert resumed.history == whole.history[3:]
    assert (resumed.epochs_completed, resumed.steps) == (8, whole.steps)
    assert resumed.resumed_from_epoch == 3 and whole.resumed_from_epoch == 0
    assert resumed.best == whole.best and whole.best is not None
    assert whole.best["metric"] == "val_accuracy"

    # The test would pass vacuously if dropout drew nothing: another RNG state gives other
    # weights.
    other = load_checkpoint(path)
    other.rng = {"cpu": torch.Generator().manual_seed(123).get_state()}
    other_model = student(1)
    run(other_model, config, resume=other)
    assert not torch.equal(
        other_model.state_dict()["net.4.weight"], whole_model.state_dict()["net.4.weight"]
    )


def test_in_memory_state_is_not_changed_by_resuming() -> None:
    config = TrainConfig(epochs=5, batch_size=16, seed=2)
    states: list[TrainState] = []
    run(student(0), config, on_checkpoint=states.append, checkpoint_every_s=0)
    first, second = student(1), student(2)
    run(first, config, resume=states[1])
    run(second, config, resume=states[1])  # the same object again: torch must not alias it
    assert_same_weights(first, second)


def test_checkpoint_policy() -> None:
    config = TrainConfig(epochs=4, batch_size=32)
    every: list[TrainState] = []
    run(student(0), config, on_checkpoint=every.append, checkpoint_every_s=0)
    # One per epoch but the last: the caller saves the final result instead.
    assert [s.epoch for s in every] == [1, 2, 3]
    assert [s.step for s in every] == [3, 6, 9]
    never: list[TrainState] = []
    run(student(0), config, on_checkpoint=never.append, checkpoint_every_s=1e9)
    assert never == []
    with pytest.raises(DistillError, match="checkpoint_every_s"):
        run(student(0), config, checkpoint_every_s=float("nan"))


def test_best_so_far_metric() -> None:
    config = TrainConfig(epochs=3, batch_size=32)
    xv, _, tv = VAL
    by_kl = train(student(0), X, Y, T, KD_CE, config, val=(xv, None, tv))
    assert by_kl.best is not None and by_kl.best["metric"] == "val_kl"
    kls = [m.values["val_kl"] for m in by_kl.history]
    assert by_kl.best["value"] == min(kls) and by_kl.best["epoch"] == 1 + kls.index(min(kls))
    assert train(student(0), X, Y, T, KD_CE, config).best is None


def test_resume_at_the_last_epoch_returns_at_once() -> None:
    config = TrainConfig(epochs=3, batch_size=32)
    states: list[TrainState] = []
    run(student(0), config, on_checkpoint=states.append, checkpoint_every_s=0)
    done = TrainConfig(epochs=2, batch_size=32)  # states[1] has 2 epochs done

    def never(*_: object) -> Any:
        raise AssertionError("train() ran although no epoch was left")

    model = student(1)
    result = run(model, done, resume=states[1], on_epoch_end=never, on_checkpoint=never)
    assert result == TrainResult(2, states[1].step, False, [], 2, states[1].best)
    for key, value in model.state_dict().items():  # the caller can export the student as is
        assert torch.equal(value, states[1].model[key])


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"optimizer": "sgd"}, "optimizer has"),
        ({"lr": 1e-4}, "optimizer has initial lr"),
        ({"lr_schedule": "cosine"}, "another lr_schedule"),
        ({"epochs": 1}, "2 epochs done but the run has 1"),
    ],
)
def test_resume_with_another_config_fails(change: dict[str, Any], fragment: str) -> None:
    config = TrainConfig(epochs=3, batch_size=32)
    states: list[TrainState] = []
    run(student(0), config, on_checkpoint=states.append, checkpoint_every_s=0)
    changed = TrainConfig(**{"epochs": 3, "batch_size": 32, **change})
    with pytest.raises(DistillError, match=fragment):
        run(student(0), changed, resume=states[1])


class Payload:
    """Any class: unpickling it would run code chosen by whoever wrote the file."""


@pytest.mark.parametrize("content", ["garbage", "foreign_dict", "pickled_object"])
def test_bad_checkpoint_files(content: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    if content == "garbage":
        path.write_bytes(b"\x00not a checkpoint")
    elif content == "foreign_dict":
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        torch.save({"format": 1, "epoch": Payload()}, path)
    fragment = "not a Stillhouse checkpoint" if content == "foreign_dict" else "could not be read"
    with pytest.raises(DistillError, match=fragment):
        load_checkpoint(path)


def test_truncated_checkpoint_file(tmp_path: Path) -> None:
    states: list[TrainState] = []
    run(student(0), TrainConfig(epochs=2), on_checkpoint=states.append, checkpoint_every_s=0)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(states[0], path)
    assert load_checkpoint(path).epoch == 1 and not (tmp_path / "ckpt.pt.tmp").exists()
    path.write_bytes(path.read_bytes()[:-100])  # e.g. a disk that filled up mid-write
    with pytest.raises(DistillError, match="could not be read"):
        load_checkpoint(path)


def test_epoch_metrics_history_only_holds_this_call() -> None:
    config = TrainConfig(epochs=3, batch_size=32)
    states: list[TrainState] = []
    seen: list[EpochMetrics] = []
    run(student(0), config, on_checkpoint=states.append, checkpoint_every_s=0)
    result = run(student(0), config, resume=states[0], on_epoch_end=seen.append)
    assert [m.epoch for m in result.history] == [2, 3] and seen == result.history
