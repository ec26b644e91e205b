"""Prediction and evaluation metrics on numpy logits (N, C)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from distill.batches import Rows
from distill.errors import DistillError
from distill.students import input_dtype


def predict_logits(
    model: nn.Module, x: np.ndarray | Rows, batch_size: int = 1024, device: str = "cpu"
) -> np.ndarray:
    """Model logits (N, C) float32, in eval mode without gradients."""
    model.eval().to(device)
    dtype = input_dtype(model)  # int64 token ids stay integers
    chunks: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))
            xb = xb.to(device, dtype)  # (b, ...)
            chunks.append(model(xb).float().cpu().numpy())  # (b, C)
    if not chunks:
        raise DistillError("There are no samples to predict on; give a non-empty data set.")
    return np.concatenate(chunks)  # (N, C)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)  # (N, C)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE, Guo et al. 2017, "On Calibration of Modern Neural Networks", ICML.

        ECE = sum_m (|B_m| / n) * | acc(B_m) - conf(B_m) |

    over n_bins equal-width confidence bins (0, 1/M], (1/M, 2/M], ..., ((M-1)/M, 1].
    """
    conf = probs.max(axis=1)  # (N,)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)  # (N,)
    # Bin m holds conf in (m/M, (m+1)/M]; ceil(conf*M)-1 gives that index.
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)  # (N,)
    ece = 0.0
    for m in range(n_bins):
        in_bin = bins == m
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray) -> list[float | None]:
    """acc_c = #{b: y_b = c, argmax s_b = c} / #{b: y_b = c} for c in 0..C-1 (C = the logits'
    width), i.e. each class's recall; None for a class without a labeled row."""
    keep = labels >= 0  # (N,)
    y, pred = labels[keep].astype(np.int64), logits[keep].argmax(axis=1)  # (n,), (n,)
    width = logits.shape[1]
    total = np.bincount(y, minlength=width)[:width]  # (C,)
    right = np.bincount(y[pred == y], minlength=width)[:width]  # (C,)
    return [float(r / t) if t > 0 else None for r, t in zip(right, total, strict=True)]


def regression_metrics(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """mse = mean_{b,c} (s_bc - t_bc)^2 and the coefficient of determination over all outputs,
    R^2 = 1 - sum_{b,c} (s_bc - t_bc)^2 / sum_{b,c} (t_bc - mean_b t_bc)^2 (each output's
    variance about its own mean; scikit-learn's r2_score with "variance_weighted"). R^2 is
    NaN-free: a constant target gives 1.0 for an exact fit and 0.0 otherwise."""
    s, t = outputs.astype(np.float64), targets.astype(np.float64)  # (N, C)
    residual = float(((s - t) ** 2).sum())
    spread = float(((t - t.mean(axis=0, keepdims=True)) ** 2).sum())
    if spread > 0:
        r2 = 1.0 - residual / spread
    else:
        r2 = 1.0 if residual == 0 else 0.0
    return {"mse": residual / s.size, "r2": r2}


def evaluate(
    logits: np.ndarray,
    labels: np.ndarray | None,
    teacher_logits: np.ndarray | None = None,
    n_bins: int = 15,
    regression: bool = False,
) -> dict[str, Any]:
    """accuracy, per_class_accuracy (with num_classes) and ece on labeled rows (-1 = unlabeled,
    ignored); agreement and kl_to_teacher = mean_b KL(softmax(t_b) || softmax(s_b)) when
    teacher logits are given, and with `regression` (the teacher's outputs are values, not
    class scores) mse_to_teacher and r2_to_teacher of the outputs against the teacher's."""
    if logits.ndim != 2 or len(logits) == 0:
        raise DistillError(f"Logits must be a non-empty (N, C) array, got {list(logits.shape)}.")
    out: dict[str, Any] = {}
    log_q = _log_softmax(logits)  # (N, C)
    if labels is not None:
        if labels.shape != (len(logits),):
            raise DistillError(
                f"There are {len(logits)} predictions but labels of shape {list(labels.shape)}; "
                "give one label per sample."
            )
        keep = labels >= 0  # (N,)
        if keep.any():
            y = labels[keep]
            out["accuracy"] = float((logits[keep].argmax(axis=1) == y).mean())
            out["per_class_accuracy"] = per_class_accuracy(logits, labels)
            out["num_classes"] = int(logits.shape[1])
            out["ece"] = expected_calibration_error(np.exp(log_q[keep]), y, n_bins)
    if teacher_logits is not None:
        if teacher_logits.shape != logits.shape:
            raise DistillError(
                f"The teacher logits have shape {list(teacher_logits.shape)} but the student's "
                f"have {list(logits.shape)}; they must match."
            )
        log_p = _log_softmax(teacher_logits)  # (N, C)
        out["agreement"] = float((logits.argmax(axis=1) == teacher_logits.argmax(axis=1)).mean())
        kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1)  # (N,)
        out["kl_to_teacher"] = float(kl.mean())
        if regression:
            figures = regression_metrics(logits, teacher_logits)
            out["mse_to_teacher"], out["r2_to_teacher"] = figures["mse"], figures["r2"]
    return out
