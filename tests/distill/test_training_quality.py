"""LR warm-up, early stopping, best-epoch selection, class weights and the report's metrics."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.checkpoint import TrainState, load_checkpoint, save_checkpoint
from distill.class_weights import apply_class_weights, class_weights
from distill.errors import DistillError
from distill.evaluate import evaluate, predict_logits, regression_metrics
from distill.loop import TrainConfig, train
from distill.losses import build_loss
from distill.schedule import make_scheduler
from distill.selection import EarlyStopping, update_best, update_stop
from distill.students import build_student
from tests.distill.test_checkpoint import KD_CE, VAL, T, X, Y, assert_same_weights, student

ATOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def lrs(epochs: int, warmup: int, kind: str, lr: float = 0.3) -> list[float]:
    """The LR each epoch trains at, as train() steps the schedule (once after each epoch)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(opt, epochs, warmup, kind)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


def test_schedule_values_by_hand() -> None:
    c = math.cos
    # W = 2 warm-up epochs of E = 6: lr/3, 2lr/3, then cosine over the 4 epochs left.
    want = [0.1, 0.2, 0.3, 0.3 * (1 + c(math.pi / 4)) / 2, 0.15, 0.3 * (1 + c(3 * math.pi / 4)) / 2]
    assert lrs(6, 2, "cosine") == pytest.approx(want, abs=1e-12)
    assert lrs(4, 1, "constant") == pytest.approx([0.15, 0.3, 0.3, 0.3], abs=1e-12)
    assert lrs(3, 0, "constant") == [0.3, 0.3, 0.3]
    assert lrs(4, 0, "cosine") == pytest.approx(
        [0.3, 0.3 * (1 + c(math.pi / 4)) / 2, 0.15, 0.3 * (1 + c(3 * math.pi / 4)) / 2], abs=1e-12
    )


def test_bad_schedule_settings_are_sentences() -> None:
    with pytest.raises(DistillError, match="warmup_epochs \\(3\\) must be less than epochs"):
        TrainConfig(epochs=3, warmup_epochs=3)
    with pytest.raises(DistillError, match="warmup_epochs must be an integer"):
        TrainConfig(epochs=3, warmup_epochs=-1)
    with pytest.raises(DistillError, match="patience must be an integer >= 1"):
        EarlyStopping(patience=0)
    with pytest.raises(DistillError, match="valid metrics are"):
        EarlyStopping(metric="loss")
    with pytest.raises(DistillError, match="Unknown select"):
        TrainConfig(select="loss")


def test_early_stopping_on_a_synthetic_history() -> None:
    rule = EarlyStopping(metric="accuracy", patience=2, min_delta=0.01)
    series = [0.5, 0.6, 0.605, 0.7, 0.7, 0.705, 0.9]  # 0.605 and 0.705 are within min_delta
    state, stopped_at = None, None
    for epoch, value in enumerate(series, start=1):
        state = update_stop(state, rule, "val_accuracy", epoch, {"val_accuracy": value})
        if state["bad_epochs"] >= rule.patience:
            stopped_at = epoch
            break
    assert stopped_at == 6 and state == {"best": 0.7, "epoch": 4, "bad_epochs": 2}
    # kl falls; a NaN never improves.
    kl = EarlyStopping(metric="kl", patience=1)
    s1 = update_stop(None, kl, "val_kl", 1, {"val_kl": 0.5})
    assert update_stop(s1, kl, "val_kl", 2, {"val_kl": 0.4})["bad_epochs"] == 0
    assert update_stop(s1, kl, "val_kl", 2, {"val_kl": math.nan})["bad_epochs"] == 1
    # Best-so-far: a tie keeps the earlier epoch.
    best = update_best(None, "val_agreement", 1, {"val_agreement": 0.8})
    assert update_best(best, "val_agreement", 2, {"val_agreement": 0.8}) is best


def test_training_stops_early_and_says_why() -> None:
    rule = EarlyStopping(metric="agreement", patience=1, min_delta=1.0)  # nothing beats +1.0
    config = TrainConfig(epochs=6, batch_size=16, lr=1e-2, seed=3, early_stopping=rule)
    result = train(student(0), X, Y, T, KD_CE, config, val=VAL)
    assert result.epochs_completed == 2 and len(result.history) == 2
    assert result.early_stopped is not None and result.early_stopped["epoch"] == 2
    assert "val_agreement did not rise by more than 1" in result.early_stopped["reason"]
    unlabeled_val = (VAL[0], None, VAL[2])
    with pytest.raises(DistillError, match="validation set has no labels"):
        train(
            student(0),
            X,
            Y,
            T,
            KD_CE,
            TrainConfig(epochs=2, early_stopping=EarlyStopping()),
            val=unlabeled_val,
        )


def test_the_model_ends_with_the_best_epochs_weights() -> None:
    # A high SGD lr makes val accuracy jump around, so the best epoch is rarely the last.
    config = TrainConfig(epochs=8, batch_size=8, lr=0.5, optimizer="sgd", seed=1, select="accuracy")
    model = student(0)
    result = train(model, X, Y, T, KD_CE, config, val=VAL)
    accs = [m.values["val_accuracy"] for m in result.history]
    assert result.best is not None and result.selected is not None
    best_epoch = 1 + accs.index(max(accs))
    assert result.selected == {"epoch": best_epoch, "by": "accuracy"}
    measured = evaluate(predict_logits(model, VAL[0]), VAL[1], VAL[2])["accuracy"]
    assert measured == pytest.approx(max(accs), abs=ATOL)
    # Without labels in the validation set it falls back to agreement, and says so.
    fallback = train(student(0), X, Y, T, KD_CE, config, val=(VAL[0], None, VAL[2]))
    assert fallback.selected is not None and fallback.selected["by"] == "agreement"
    assert "no labels" in fallback.selected["note"]


def test_resume_keeps_warmup_best_weights_and_patience(tmp_path: Path) -> None:
    config = TrainConfig(
        epochs=8,
        batch_size=16,
        lr=0.05,
        optimizer="sgd",
        lr_schedule="cosine",
        warmup_epochs=2,
        seed=5,
        select="accuracy",
        early_stopping=EarlyStopping("kl", patience=3),
        class_weights="balanced",
    )
    whole_model = student(0)
    whole = train(whole_model, X, Y, T, KD_CE, config, val=VAL)
    states: list[TrainState] = []
    train(
        student(0),
        X,
        Y,
        T,
        KD_CE,
        config,
        val=VAL,
        on_checkpoint=states.append,
        checkpoint_every_s=0,
        should_stop=lambda: len(states) == 3,
    )
    path = tmp_path / "c.pt"
    save_checkpoint(states[-1], path)
    state = load_checkpoint(path)
    assert state.best_model is not None and state.early_stop is not None
    resumed_model = student(1)
    resumed = train(resumed_model, X, Y, T, KD_CE, config, val=VAL, resume=state)
    assert_same_weights(resumed_model, whole_model)
    assert resumed.history == whole.history[3:] and resumed.history
    assert (resumed.selected, resumed.early_stopped) == (whole.selected, whole.early_stopped)


def test_class_weights_against_a_hand_computed_ce() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 1, 1, -1])
    y = np.array([0, 1, 1, 1, 2, 2, -1])  # training labels: n = 6 labeled, counts (1, 3, 2)
    w = class_weights("balanced", y, 3)
    assert w is not None
    assert w.tolist() == pytest.approx([6 / 3, 6 / 9, 6 / 6])
    loss = build_loss([{"name": "ce", "weight": 1.0}])
    apply_class_weights(loss, w)
    total, _ = loss(logits, None, labels)
    nll = -F.log_softmax(logits, dim=1)
    want = (2 * nll[0, 0] + (2 / 3) * nll[1, 1] + (2 / 3) * nll[2, 1]) / (2 + 2 / 3 + 2 / 3)
    assert float(total) == pytest.approx(float(want), abs=ATOL)
    with loss.assume_all_labeled(True):  # the fully labeled fast path weighs the same
        full, _ = loss(logits[:3], None, labels[:3])
    assert float(full) == pytest.approx(float(want), abs=ATOL)
    with pytest.raises(DistillError, match="has 2 entries but the teacher has 3 classes"):
        class_weights([1.0, 2.0], y, 3)


def test_per_class_accuracy_and_regression_metrics() -> None:
    logits = np.array([[3, 0, 0], [0, 3, 0], [3, 0, 0], [0, 0, 3]], dtype=np.float32)
    labels = np.array([0, 1, 1, -1])
    out = evaluate(logits, labels)
    assert out["per_class_accuracy"] == [1.0, 0.5, None] and out["num_classes"] == 3
    s = np.array([[1.0, 2.0], [3.0, 5.0]])
    t = np.array([[1.0, 2.0], [3.0, 4.0]])
    # residual 1 over 4 outputs; spread about column means: (1 + 1) + (1 + 1) = 4.
    assert regression_metrics(s, t) == pytest.approx({"mse": 0.25, "r2": 0.75})
    reg = evaluate(s.astype(np.float32), None, t.astype(np.float32), regression=True)
    assert reg["r2_to_teacher"] == pytest.approx(0.75, abs=ATOL)


def test_build_student_is_unchanged_by_selection() -> None:
    # select=None keeps the last epoch's weights (the engine's default, as before).
    config = TrainConfig(epochs=2, batch_size=16, seed=0)
    a, b = student(0), student(0)
    train(a, X, Y, T, KD_CE, config, val=VAL)
    train(b, X, Y, T, KD_CE, config, val=VAL)
    assert_same_weights(a, b)
    assert build_student("mlp", {"hidden": [4]}, (8,), 3) is not None
