"""The training data on the device: what train() indexes each step, built once per run.

Below the in-memory threshold the whole set moves to the device once and a step only
indexes it; `Rows` (a set larger than memory) stays on disk and a `BlockStream` reads
each step's rows (distill.batches). Validation metrics are computed here too, as device
tensors, so the loop's one host sync per epoch reads them with the training sums.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.batches import BlockStream, Rows, training_stream
from distill.checks import ValData
from distill.students import input_dtype

# Validation on the device: inputs (M, ...) or Rows, labels (M,) | None, teacher logits (M, C) | None.
DeviceVal = tuple[torch.Tensor | Rows, torch.Tensor | None, torch.Tensor | None]


@dataclass(frozen=True)
class DeviceData:
    X: torch.Tensor  # (N, ...); (N, 0) when the rows stream, only its length is read
    Y: torch.Tensor | None  # (N,) int64; None when no row is labeled
    T: torch.Tensor | None  # (N, C) cached teacher logits; None when streamed or not needed
    stream: BlockStream | None  # the batches of a set larger than memory
    val: DeviceVal | None
    x_dtype: torch.dtype  # int64 token ids for an embedding student, else float32
    labeled_total: int  # rows with a label >= 0


def _to_device(
    a: np.ndarray | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device, dtype)


def rows_tensor(
    rows: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A host batch as a device tensor of `dtype`: float32, or int64 for a student that reads
    token ids (distill.students.input_dtype); the cast happens here, at the point of use."""
    return torch.from_numpy(np.ascontiguousarray(rows)).to(device, dtype)


@torch.no_grad()
def val_stats_of(
    student: nn.Module,
    x: torch.Tensor | Rows,
    y: torch.Tensor | None,
    t: torch.Tensor | None,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> dict[str, torch.Tensor]:
    """Validation metrics as 0-d device tensors (no host sync here). y has a labeled row."""
    student.eval()
    with autocast():
        device, dtype = next(student.parameters()).device, input_dtype(student)
        chunks = (x[i : i + 1024] for i in range(0, len(x), 1024))  # streamed when x is Rows
        logits = torch.cat(
            [
                student(c if isinstance(c, torch.Tensor) else rows_tensor(c, device, dtype))
                for c in chunks
            ]
        )  # (N, C)
    logits = logits.float()
    student.train()
    pred = logits.argmax(dim=1)  # (N,)
    out: dict[str, torch.Tensor] = {}
    if y is not None:
        # -1 (unlabeled) never equals an argmax, so it only counts in the denominator's mask.
        out["val_accuracy"] = (pred == y).sum() / (y >= 0).sum()
    if t is not None:
        out["val_agreement"] = (pred == t.argmax(dim=1)).float().mean()
        out["val_kl"] = F.kl_div(
            F.log_softmax(logits, dim=1),
            F.log_softmax(t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
    return out


def place_data(
    student: nn.Module,
    x: np.ndarray | Rows,
    y: np.ndarray | None,
    teacher_logits: np.ndarray | Rows | None,
    val: ValData | None,
    batch_size: int,
    device: torch.device,
) -> DeviceData:
    """Move (or stream, in batches of `batch_size`) the training and validation sets to
    `device`; `teacher_logits` is None when the loss reads no cached teacher outputs."""
    x_dtype = input_dtype(student)
    stream: BlockStream | None = None
    if isinstance(x, Rows):  # larger than memory: rows come from the files per step
        stream = training_stream(x, teacher_logits, batch_size)
        X = torch.empty((len(x), 0), device=device)
    else:
        X = torch.from_numpy(np.ascontiguousarray(x)).to(device, x_dtype)  # (N, ...)
    labeled_total = int((y >= 0).sum()) if y is not None else 0
    # An all -1 label array is the same as none: no label term, no train accuracy.
    Y = _to_device(y, torch.int64, device) if labeled_total > 0 else None  # (N,)
    T = (
        _to_device(np.asarray(teacher_logits), torch.float32, device)
        if stream is None and teacher_logits is not None
        else None
    )  # (N, C)
    val_t: DeviceVal | None = None
    if val is not None:
        xv, yv, tv = val
        has_labels = yv is not None and bool((yv >= 0).any())
        val_t = (
            xv if isinstance(xv, Rows) else rows_tensor(xv, device, x_dtype),  # (M, ...)
            _to_device(yv, torch.int64, device) if has_labels else None,  # (M,)
            _to_device(tv, torch.float32, device),  # (M, C)
        )
    return DeviceData(X, Y, T, stream, val_t, x_dtype, labeled_total)
