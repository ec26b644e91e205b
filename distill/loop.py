"""The training loop: one linear train() over a data set held on the device.

Read it top to bottom: validate, move data to the device once, then per step only
index -> forward -> loss -> backward -> step. Loss sums and accuracy counts stay on the
device; the host syncs exactly once per epoch, at its end.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import DistillError
from distill.losses import WeightedLoss

OPTIMIZERS = ("adam", "adamw", "sgd")

# Train accuracy: keep each step's detached logits and take one argmax per epoch while the epoch's
# logits fit in this many elements (128 MB in fp32); beyond it, one argmax kernel per step.
KEEP_LOGITS_MAX_ELEMENTS = 2**25

ValData = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 3e-3  # a safe Adam default for the small zoo students
    optimizer: str = "adam"  # adam | adamw | sgd (sgd uses momentum 0.9: plain SGD crawls)
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise DistillError(f"epochs must be a positive integer, got {self.epochs!r}.")
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise DistillError(f"batch_size must be a positive integer, got {self.batch_size!r}.")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise DistillError(f"lr must be a finite number > 0, got {self.lr!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise DistillError(
                f"Unknown optimizer {self.optimizer!r}; valid optimizers are: "
                f"{', '.join(OPTIMIZERS)}."
            )
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise DistillError(
                f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}."
            )


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    step: int  # optimizer steps done so far
    values: dict[str, float]


@dataclass(frozen=True)
class TrainResult:
    epochs_completed: int
    steps: int
    stopped_early: bool
    history: list[EpochMetrics]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer, with torch's fused kernel where the device supports it.

    For the zoo's small students the per-parameter bookkeeping of the default (foreach) Adam
    costs more than the math; the fused kernel does one call per step (3x faster on CPU).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params) and all(
        p.device.type in ("cpu", "cuda") for p in params
    )
    kwargs: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        cls: type[torch.optim.Optimizer] = torch.optim.SGD
        kwargs["momentum"] = 0.9
    else:
        cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    if fused:
        try:
            return cls(params, fused=True, **kwargs)  # type: ignore[call-arg]
        except (RuntimeError, TypeError):  # an older build or device without the fused kernel
            pass
    return cls(params, **kwargs)


def _output_width(student: nn.Module, x: np.ndarray, device: torch.device) -> int:
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            sample = np.ascontiguousarray(x[:2], dtype=np.float32)
            out = student(torch.from_numpy(sample).to(device))  # (2, C)
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
    x: np.ndarray, y: np.ndarray | None, t: np.ndarray | None, width: int, what: str
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
        if not np.isfinite(t).all():
            raise DistillError(
                f"The {what} teacher logits contain NaN or infinite values; check the teacher "
                "model on this data."
            )


def _validate(
    student: nn.Module,
    x: np.ndarray,
    y: np.ndarray | None,
    teacher_logits: np.ndarray | None,
    loss: WeightedLoss,
    val: ValData | None,
    device: torch.device,
) -> int:
    if x.ndim < 2 or len(x) == 0:
        raise DistillError(
            f"The training inputs have shape {list(x.shape)}; they must be (N, ...) with N > 0."
        )
    width = _output_width(student, x, device)
    _check_arrays(x, y, teacher_logits, width, "training")
    if loss.needs_labels and (y is None or not (y >= 0).any()):
        raise DistillError(
            "The loss has a term that needs labels ('ce') but the training set has no labeled "
            "sample; upload labels or drop that term."
        )
    if loss.needs_teacher and teacher_logits is None:
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
        _check_arrays(xv, yv, tv, width, "validation")
    return width


def _to_device(
    a: np.ndarray | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device, dtype)


@torch.no_grad()
def _val_stats(
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    t: torch.Tensor | None,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> dict[str, torch.Tensor]:
    """Validation metrics as 0-d device tensors (no host sync here). y has a labeled row."""
    student.eval()
    with autocast():
        logits = torch.cat([student(x[i : i + 1024]) for i in range(0, len(x), 1024)])  # (N, C)
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


def train(
    student: nn.Module,
    x: np.ndarray,
    y: np.ndarray | None,
    teacher_logits: np.ndarray | None,
    loss: WeightedLoss,
    config: TrainConfig,
    *,
    val: ValData | None = None,
    on_epoch_end: Callable[[EpochMetrics], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train `student` on x (N, ...), labels y (N,) (-1 = unlabeled), teacher logits (N, C)."""
    device = torch.device(config.device)
    student.to(device)
    width = _validate(student, x, y, teacher_logits, loss, val, device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)  # shuffling; CPU so it works for any device
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast: Callable[[], contextlib.AbstractContextManager] = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if use_bf16
        else contextlib.nullcontext
    )

    # The whole data set moves to the device once; a step only indexes it.
    X = _to_device(x, torch.float32, device)  # (N, ...)
    assert X is not None
    labeled_total = int((y >= 0).sum()) if y is not None else 0
    # An all -1 label array is the same as none: no label term, no train accuracy.
    Y = _to_device(y, torch.int64, device) if labeled_total > 0 else None  # (N,)
    T = _to_device(teacher_logits, torch.float32, device) if loss.needs_teacher else None  # (N, C)
    val_t: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None = None
    if val is not None:
        xv, yv, tv = val
        has_labels = yv is not None and bool((yv >= 0).any())
        val_t = (
            torch.from_numpy(np.ascontiguousarray(xv)).to(device, torch.float32),  # (M, ...)
            _to_device(yv, torch.int64, device) if has_labels else None,  # (M,)
            _to_device(tv, torch.float32, device),
        )  # (M, C)
    n, bs = len(X), config.batch_size
    optimizer = make_optimizer(student, config)
    term_names = loss.active_names
    steps_per_epoch = math.ceil(n / bs)
    keep_logits = n * width <= KEEP_LOGITS_MAX_ELEMENTS
    track_preds = Y is not None and not keep_logits  # else: step_logits, one argmax per epoch
    student.train()

    history: list[EpochMetrics] = []
    step = 0
    with loss.assume_all_labeled(labeled_total == n):
        for epoch in range(1, config.epochs + 1):
            perm = torch.randperm(n, generator=gen).to(device, non_blocking=True)  # (N,)
            preds = torch.empty(n if track_preds else 0, dtype=torch.int64, device=device)  # (N,)
            step_logits: list[torch.Tensor] = []  # detached (B, C), when keep_logits
            step_losses: list[torch.Tensor] = []  # detached 0-d tensors, summed at epoch end
            for start in range(0, n, bs):
                idx = perm[start : start + bs]  # (B,)
                xb = X[idx]  # (B, ...)
                yb = Y[idx] if Y is not None else None  # (B,)
                tb = T[idx] if T is not None else None  # (B, C)
                with autocast():
                    logits = student(xb)  # (B, C)
                total, parts = loss(logits, tb, yb)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                step += 1
                # Bookkeeping without a host sync and with the fewest kernels per step.
                if track_preds:
                    torch.argmax(logits.detach(), dim=1, out=preds[start : start + bs])
                elif Y is not None:
                    step_logits.append(logits.detach())
                step_losses.append(total.detach())
                step_losses.extend(v.detach() for v in parts.values())
                if should_stop is not None and should_stop():
                    return TrainResult(epoch - 1, step, True, history)

            # The epoch's single host sync: training sums and validation metrics together.
            sums = torch.stack(step_losses).view(steps_per_epoch, -1).sum(dim=0)  # (1 + terms,)
            stats = [sums.float()]
            if Y is not None:
                if keep_logits:
                    preds = torch.cat(step_logits).argmax(dim=1)  # (N,)
                # -1 (unlabeled) never equals an argmax, so no mask is needed for the count.
                stats.append((preds == Y[perm]).sum().float().view(1))
            val_stats = _val_stats(student, *val_t, autocast) if val_t is not None else {}
            if val_stats:
                stats.append(torch.stack(list(val_stats.values())).float())
            numbers = torch.cat(stats).tolist()
            if not math.isfinite(numbers[0]):
                raise DistillError(
                    f"Training diverged: the loss became NaN at epoch {epoch}; lower the learning "
                    f"rate (now {config.lr:g}) or check the inputs and teacher logits for "
                    "extreme values."
                )
            values = {"loss": numbers[0] / steps_per_epoch}
            for i, name in enumerate(term_names, start=1):
                values[f"loss/{name}"] = numbers[i] / steps_per_epoch
            rest = numbers[1 + len(term_names) :]
            if Y is not None:
                values["train_accuracy"] = rest.pop(0) / labeled_total
            values.update(zip(val_stats, rest, strict=True))
            metrics = EpochMetrics(epoch=epoch, step=step, values=values)
            history.append(metrics)
            if on_epoch_end is not None:
                on_epoch_end(metrics)
    return TrainResult(config.epochs, step, False, history)
