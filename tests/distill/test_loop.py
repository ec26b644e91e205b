"""train(): it learns, it stops when asked, it catches divergence and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.errors import DistillError
from distill.loop import EpochMetrics, TrainConfig, train
from distill.losses import build_loss
from distill.students import build_student


def blobs(
    n: int = 300, classes: int = 3, dim: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Separable Gaussian blobs; the 'teacher' logits are scaled distances to the centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, dim))
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.normal(0, 1, (n, dim))).astype(np.float32)
    teacher = -((x[:, None, :] - centres[None]) ** 2).sum(-1).astype(np.float32) / 4
    return x, y.astype(np.int64), teacher


def mlp(dim: int = 8, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_student("mlp", {"hidden": [16]}, (dim,), classes)


KD_CE = [{"name": "kd", "weight": 0.9}, {"name": "ce", "weight": 0.1}]


def test_learns_with_kd_and_ce_and_reports_metrics() -> None:
    x, y, t = blobs()
    y_partial = y.copy()
    y_partial[::2] = -1  # half the rows are an unlabeled transfer set
    seen: list[EpochMetrics] = []
    result = train(
        mlp(),
        x[:240],
        y_partial[:240],
        t[:240],
        build_loss(KD_CE),
        TrainConfig(epochs=8, batch_size=32, lr=1e-2),
        val=(x[240:], y[240:], t[240:]),
        on_epoch_end=seen.append,
    )
    assert result.epochs_completed == 8 and not result.stopped_early
    assert result.steps == 8 * 8 and seen == result.history
    last = result.history[-1].values
    assert set(last) == {
        "loss",
        "loss/kd",
        "loss/ce",
        "train_accuracy",
        "val_accuracy",
        "val_agreement",
        "val_kl",
    }
    assert last["val_accuracy"] > 0.9 and last["train_accuracy"] > 0.9  # chance is 1/3
    assert last["val_agreement"] > 0.9
    assert result.history[0].values["loss"] > last["loss"]
    assert last["loss"] == pytest.approx(
        0.9 * last["loss/kd"] + 0.1 * last["loss/ce"], rel=1e-4, abs=1e-6
    )


def test_learns_with_ce_only_on_cnn1d() -> None:
    x, y, _ = blobs(dim=12)
    torch.manual_seed(0)
    model = build_student("cnn1d", {"channels": 8}, (12,), 3)
    result = train(
        model,
        x,
        y,
        None,
        build_loss([{"name": "ce"}]),
        TrainConfig(epochs=15, batch_size=32, lr=1e-2),
    )
    assert result.history[-1].values["train_accuracy"] > 0.8


def test_unlabeled_transfer_set_with_kd_only() -> None:
    x, _, t = blobs()
    result = train(mlp(), x, None, t, build_loss([{"name": "kd"}]), TrainConfig(epochs=2))
    assert "train_accuracy" not in result.history[-1].values


def test_seeded_runs_are_identical() -> None:
    x, y, t = blobs()
    runs = [
        train(mlp(), x, y, t, build_loss(KD_CE), TrainConfig(epochs=2, batch_size=50, seed=3))
        for _ in range(2)
    ]
    assert runs[0].history == runs[1].history


def test_should_stop_returns_after_the_current_step() -> None:
    x, y, t = blobs()
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 5

    result = train(
        mlp(),
        x,
        y,
        t,
        build_loss(KD_CE),
        TrainConfig(epochs=3, batch_size=32),
        should_stop=should_stop,
    )
    assert result.stopped_early and result.steps == 5 and result.epochs_completed == 0
    assert result.history == []


def test_divergence_is_reported() -> None:
    x, y, _ = blobs()
    with pytest.raises(DistillError, match="Training diverged: the loss became NaN at epoch 1"):
        train(mlp(), x, y, None, build_loss([{"name": "ce"}]), TrainConfig(epochs=2, lr=1e30))


def count_host_syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per `tolist` (the loop's one sync an epoch); `item` and `bool` raise."""
    syncs: list[int] = []
    original = torch.Tensor.tolist

    def counting_tolist(self: torch.Tensor) -> object:
        syncs.append(1)
        return original(self)

    def forbidden(self: torch.Tensor, *args: object) -> object:
        raise AssertionError("host sync in the training loop")

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    monkeypatch.setattr(torch.Tensor, "item", forbidden)
    monkeypatch.setattr(torch.Tensor, "__bool__", forbidden)
    return syncs


def test_one_host_sync_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, t = blobs()
    syncs = count_host_syncs(monkeypatch)
    y = y.copy()
    y[::3] = -1
    train(mlp(), x, y, t, build_loss(KD_CE), TrainConfig(epochs=3, batch_size=16))
    assert len(syncs) == 3


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("teacher_rows", "teacher logits have shape"),
        ("teacher_width", "as many classes as the teacher"),
        ("teacher_inf", "NaN or infinite"),
        ("label_range", "labels must be in 0..2"),
        ("no_labels", "needs labels"),
        ("all_unlabeled", "needs labels"),
        ("no_teacher", "needs the teacher"),
        ("val_shape", "validation inputs"),
        ("x_shape", "cannot take samples"),
    ],
)
def test_input_validation(case: str, fragment: str) -> None:
    x, y, t = blobs()
    val = None
    if case == "teacher_rows":
        t = t[:-1]
    elif case == "teacher_width":
        t = np.concatenate([t, t[:, :1]], axis=1)
    elif case == "teacher_inf":
        t[3, 1] = np.inf
    elif case == "label_range":
        y[0] = 3
    elif case in ("no_labels", "all_unlabeled"):
        y = None if case == "no_labels" else np.full_like(y, -1)
    elif case == "no_teacher":
        t = None
    elif case == "val_shape":
        val = (x[:, :4], None, None)
    elif case == "x_shape":
        x = x[:, :5]
    with pytest.raises(DistillError, match=fragment):
        train(mlp(), x, y, t, build_loss(KD_CE), TrainConfig(epochs=1), val=val)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"optimizer": "lion"}, "adam, adamw, sgd"),
        ({"batch_size": 0}, "batch_size"),
        ({"weight_decay": float("inf")}, "weight_decay"),
        ({"lr_schedule": "step"}, "valid schedules are: constant, cosine"),
    ],
)
def test_config_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(DistillError, match=fragment):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_other_optimizers(optimizer: str) -> None:
    x, y, _ = blobs()
    result = train(
        mlp(),
        x,
        y,
        None,
        build_loss([{"name": "ce"}]),
        TrainConfig(epochs=5, batch_size=32, lr=1e-2, optimizer=optimizer, weight_decay=1e-4),
    )
    assert result.history[-1].values["train_accuracy"] > 0.8


def test_train_accuracy_same_with_per_step_argmax(monkeypatch: pytest.MonkeyPatch) -> None:
    import distill.loop

    x, y, t = blobs()
    y = y.copy()
    y[::4] = -1
    config = TrainConfig(epochs=2, batch_size=32)
    kept = train(mlp(), x, y, t, build_loss(KD_CE), config)
    monkeypatch.setattr(distill.loop, "KEEP_LOGITS_MAX_ELEMENTS", 0)
    per_step = train(mlp(), x, y, t, build_loss(KD_CE), config)
    assert kept.history == per_step.history


def test_all_minus_one_labels_mean_unlabeled() -> None:
    x, y, t = blobs()
    result = train(
        mlp(),
        x,
        np.full_like(y, -1),
        t,
        build_loss([{"name": "kd"}]),
        TrainConfig(epochs=1),
        val=(x[:50], None, t[:50]),
    )
    assert set(result.history[0].values) == {"loss", "loss/kd", "val_agreement", "val_kl"}
