"""Every loss term against values worked out by hand with math, not torch."""

from __future__ import annotations

import math

import pytest
import torch

from distill.errors import DistillError
from distill.losses import LOSSES, LossBatch, build_loss

S = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]
T = [[3.0, 2.0, 1.0], [0.0, 0.0, 2.0]]


def softmax(row: list[float], temp: float = 1.0) -> list[float]:
    e = [math.exp(v / temp) for v in row]
    return [v / sum(e) for v in e]


def tensors() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(S), torch.tensor(T)


def test_kd_matches_hinton_formula() -> None:
    temp = 2.0
    expected = 0.0
    for s_row, t_row in zip(S, T, strict=True):
        p, q = softmax(t_row, temp), softmax(s_row, temp)
        expected += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    expected = temp**2 * expected / len(S)
    s, t = tensors()
    got = LOSSES["kd"](temperature=temp)(LossBatch(s, t, None))
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_kd_is_zero_when_student_equals_teacher() -> None:
    s, _ = tensors()
    assert LOSSES["kd"]()(LossBatch(s, s.clone(), None)).item() == pytest.approx(0.0, abs=1e-6)


def test_ce_ignores_unlabeled_rows() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 3.0, 2.0]])
    labels = torch.tensor([0, -1, 2])
    expected = (-math.log(softmax([2.0, 1.0, 0.0])[0]) - math.log(softmax([1.0, 3.0, 2.0])[2])) / 2
    assert LOSSES["ce"]()(LossBatch(logits, None, labels)).item() == pytest.approx(
        expected, rel=1e-6, abs=1e-6
    )


def test_ce_all_unlabeled_batch_is_exactly_zero_with_zero_grad() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    value = LOSSES["ce"]()(LossBatch(logits, None, torch.full((4,), -1)))
    value.backward()
    assert value.item() == 0.0
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros(4, 3))


def test_ce_fast_path_equals_masked_path_when_all_labeled() -> None:
    logits, labels = torch.tensor(S), torch.tensor([2, 0])
    loss = build_loss([{"name": "ce"}])
    masked, _ = loss(logits, None, labels)
    with loss.assume_all_labeled(True):
        fast, _ = loss(logits, None, labels)
    assert fast.item() == pytest.approx(masked.item(), rel=1e-6, abs=1e-6)
    assert not loss.terms[0][2].all_labeled  # restored on exit
    expected = (-math.log(softmax(S[0])[2]) - math.log(softmax(S[1])[0])) / 2
    assert fast.item() == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_hard_uses_teacher_argmax() -> None:
    # Teacher argmax: row 0 -> class 0, row 1 -> class 2.
    expected = (-math.log(softmax(S[0])[0]) - math.log(softmax(S[1])[2])) / 2
    s, t = tensors()
    assert LOSSES["hard"]()(LossBatch(s, t, None)).item() == pytest.approx(
        expected, rel=1e-6, abs=1e-6
    )


def test_mse_logits() -> None:
    diffs = [(a - b) ** 2 for sr, tr in zip(S, T, strict=True) for a, b in zip(sr, tr, strict=True)]
    s, t = tensors()
    assert LOSSES["mse_logits"]()(LossBatch(s, t, None)).item() == pytest.approx(
        sum(diffs) / 6, rel=1e-6, abs=1e-6
    )


def test_weighted_sum_and_parts() -> None:
    s, t = tensors()
    labels = torch.tensor([2, -1])
    loss = build_loss(
        [
            {"name": "kd", "weight": 0.9, "temperature": 1.0},
            {"name": "ce", "weight": 0.1},
            {"name": "hard", "weight": 0.0},
        ]
    )
    total, parts = loss(s, t, labels)
    assert set(parts) == {"kd", "ce"}  # zero-weight terms are not computed
    assert parts["ce"].item() == pytest.approx(-math.log(softmax(S[0])[2]), rel=1e-6, abs=1e-6)
    assert total.item() == pytest.approx(
        0.9 * parts["kd"].item() + 0.1 * parts["ce"].item(), rel=1e-6, abs=1e-6
    )
    assert loss.needs_labels and loss.needs_teacher


@pytest.mark.parametrize(
    ("terms", "fragment"),
    [
        (
            [{"name": "nope"}],
            "valid loss terms are: attention, ce, dkd, hard, hint, kd, mse_logits, rkd",
        ),
        ([{"name": "kd", "weight": -1}], "weight of loss term 'kd' is invalid"),
        ([{"name": "kd", "weight": float("nan")}], "weight of loss term 'kd' is invalid"),
        ([{"name": "ce", "temperature": 2}], "Unknown key 'temperature'"),
        ([{"name": "kd", "temperature": 0}], "temperature of loss term 'kd' is invalid"),
        ([{"name": "kd", "weight": 0}], "All loss weights are 0"),
        ([], "non-empty list"),
        ([{"weight": 1}], 'with a "name"'),
        ([{"name": "ce"}, {"name": "ce"}], "appears twice"),
    ],
)
def test_build_loss_errors(terms: list[dict], fragment: str) -> None:
    with pytest.raises(DistillError, match=fragment.replace("(", r"\(")):
        build_loss(terms)


def test_registry_flags() -> None:
    assert LOSSES["ce"].needs_labels and not LOSSES["ce"].needs_teacher
    assert all(LOSSES[n].needs_teacher for n in ("kd", "hard", "mse_logits"))
    assert issubclass(DistillError, ValueError)
