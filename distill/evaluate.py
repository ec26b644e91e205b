"""Prediction and evaluation metrics on numpy logits (N, C)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from distill.errors import DistillError
from distill.students import input_dtype


def predict_logits(
    model: nn.Module, x: np.ndarray, batch_size: int = 1024, device: str = "cpu"
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


def evaluate(
    logits: np.ndarray,
    labels: np.ndarray | None,
    teacher_logits: np.ndarray | None = None,
    n_bins: int = 15,
) -> dict[str, float]:
    """accuracy and ece on labeled rows (-1 = unlabeled, ignored); agreement and
    kl_to_teacher = mean_b KL(softmax(t_b) || softmax(s_b)) when teacher logits are given."""
    if logits.ndim != 2 or len(logits) == 0:
        raise DistillError(f"Logits must be a non-empty (N, C) array, got {list(logits.shape)}.")
    out: dict[str, float] = {}
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
    return out
