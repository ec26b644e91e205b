"""evaluate() against numbers worked out by hand; predict_logits shape and mode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distill.evaluate import evaluate, expected_calibration_error, predict_logits
from distill.students import build_student


def test_ece_four_samples() -> None:
    # Confidences .95 (right), .55 (wrong), .65 (right), .75 (wrong); 5 bins of width 0.2:
    # (0.4, 0.6]: |0 - .55| * 1/4; (0.6, 0.8]: |.5 - .70| * 2/4; (0.8, 1]: |1 - .95| * 1/4.
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.35, 0.65], [0.25, 0.75]])
    labels = np.array([0, 1, 1, 0])
    expected = 0.55 / 4 + 0.2 * 2 / 4 + 0.05 / 4  # = 0.25
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(expected)
    # Same example through evaluate(): logits = log(probs) give back these probabilities,
    # and an unlabeled (-1) row is ignored.
    logits = np.log(np.vstack([probs, [[0.5, 0.5]]]))
    out = evaluate(logits, np.append(labels, -1), n_bins=5)
    assert out["accuracy"] == pytest.approx(0.5) and out["ece"] == pytest.approx(0.25)


def test_agreement_and_kl() -> None:
    s = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    t = np.array([[2.0, 0.0], [1.0, 0.0]], dtype=np.float32)

    def sm(row: list[float]) -> list[float]:
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    kl = 0.0
    for sr, tr in zip(s.tolist(), t.tolist(), strict=True):
        p, q = sm(tr), sm(sr)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    out = evaluate(s, None, t)
    assert set(out) == {"agreement", "kl_to_teacher"}
    assert out["agreement"] == 0.5
    assert out["kl_to_teacher"] == pytest.approx(kl / 2, rel=1e-6)


def test_predict_logits_eval_mode_and_batches() -> None:
    torch.manual_seed(0)
    model = build_student("mlp", {"hidden": [8], "dropout": 0.5}, (4,), 3)
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    a = predict_logits(model, x, batch_size=3)
    b = predict_logits(model, x, batch_size=100)
    assert a.shape == (10, 3) and a.dtype == np.float32
    # Dropout is off in eval mode, so only float32 rounding differs between batch sizes; an
    # absolute tolerance too, since relative alone fails on logits near zero.
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)
