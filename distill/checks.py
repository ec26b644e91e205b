"""Input checks for train(): shapes, label ranges and loss needs, each failure a sentence.

They run once before training, on the host arrays, so the training loop itself never checks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from distill.batches import Rows
from distill.errors import DistillError
from distill.losses import WeightedLoss
from distill.students import check_token_ids, input_dtype

# Validation set: inputs (M, ...), labels (M,) or None, teacher logits (M, C) or None.
ValData = tuple[np.ndarray | Rows, np.ndarray | None, np.ndarray | None]


def _output_width(student: nn.Module, x: np.ndarray | Rows, device: torch.device) -> int:
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            sample = torch.from_numpy(np.ascontiguousarray(x[:2]))  # (2, ...)
            out = student(sample.to(device, input_dtype(student)))  # (2, C)
    except RuntimeError as exc:
        raise DistillError(
            f"The student cannot take samples of shape {list(x.shape[1:])} ({exc}); build it "
            "for the data set's sample shape."
        ) from exc
    finally:
        student.train(was_training)
    if out.ndim != 2:
        raise DistillError(f"The student returns shape {list(out.shape)}; it must return (N, C).")
    return int(out.shape[1])


def _check_arrays(
    x: np.ndarray | Rows,
    y: np.ndarray | None,
    t: np.ndarray | Rows | None,
    width: int,
    what: str,
) -> None:
    n = len(x)
    if y is not None:
        if y.shape != (n,):
            raise DistillError(
                f"The {what} labels have shape {list(y.shape)} but there are {n} samples; give "
                "one label per sample (-1 for unlabeled)."
            )
        if len(y) and (y.min() < -1 or y.max() >= width):
            raise DistillError(
                f"The {what} labels range over [{int(y.min())}, {int(y.max())}] but the student "
                f"has {width} outputs; labels must be in 0..{width - 1} (-1 for unlabeled)."
            )
    if t is not None:
        if t.shape != (n, width):
            raise DistillError(
                f"The {what} teacher logits have shape {list(t.shape)} but {n} samples and a "
                f"student with {width} outputs need ({n}, {width}); use a student with as many "
                "classes as the teacher."
            )
        # Streamed logits (Rows) were checked finite chunk by chunk as the teacher wrote them.
        if not isinstance(t, Rows) and not np.isfinite(t).all():
            raise DistillError(
                f"The {what} teacher logits contain NaN or infinite values; check the teacher "
                "model on this data."
            )


def _check_teacher(
    teacher: Callable[[torch.Tensor], torch.Tensor],
    x: np.ndarray | Rows,
    width: int,
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    """An online teacher answers a 2-sample batch with (2, C) logits, C the student's width;
    the batch has the type the student reads (and the teacher gets in training)."""
    sample = torch.from_numpy(np.ascontiguousarray(x[:2])).to(device, dtype)
    try:
        with torch.no_grad():
            out = teacher(sample)  # (2, C)
    except RuntimeError as exc:
        raise DistillError(
            f"The teacher cannot take samples of shape {list(x.shape[1:])} ({exc}); give data "
            "shaped for the teacher."
        ) from exc
    if tuple(out.shape) != (len(sample), width):
        raise DistillError(
            f"The teacher returns shape {list(out.shape)} for {len(sample)} samples but the "
            f"student has {width} outputs; use a student with as many classes as the teacher."
        )


def validate_inputs(
    student: nn.Module,
    x: np.ndarray | Rows,
    y: np.ndarray | None,
    teacher_logits: np.ndarray | Rows | None,
    loss: WeightedLoss,
    val: ValData | None,
    device: torch.device,
    teacher: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Check the training (and validation) arrays against the student and the loss, and an
    online teacher's output width; returns the student's output width C, measured with one
    2-sample forward pass in eval mode."""
    if x.ndim < 2 or len(x) == 0:
        raise DistillError(
            f"The training inputs have shape {list(x.shape)}; they must be (N, ...) with N > 0."
        )
    check_token_ids(student, x, "training")
    width = _output_width(student, x, device)
    _check_arrays(x, y, teacher_logits, width, "training")
    if loss.needs_labels and (y is None or not (y >= 0).any()):
        raise DistillError(
            "The loss has a term that needs labels ('ce') but the training set has no labeled "
            "sample; upload labels or drop that term."
        )
    if teacher is not None:
        _check_teacher(teacher, x, width, device, input_dtype(student))
    elif loss.needs_teacher and teacher_logits is None:
        raise DistillError(
            "The loss has a term that needs the teacher (e.g. 'kd') but no teacher logits were "
            "given; attach a teacher or use only 'ce'."
        )
    if val is not None:
        xv, yv, tv = val
        if xv.shape[1:] != x.shape[1:] or len(xv) == 0:
            raise DistillError(
                f"The validation inputs have shape {list(xv.shape)} but training samples have "
                f"shape {list(x.shape[1:])}; give a non-empty validation set of the same shape."
            )
        check_token_ids(student, xv, "validation")
        _check_arrays(xv, yv, tv, width, "validation")
    return width
