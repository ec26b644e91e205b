"""The training loop: one linear train() over a data set held on the device.

Read it top to bottom: validate, move data to the device once, then per step only
index -> forward -> loss -> backward -> step. Loss sums and accuracy counts stay on the
device; the host syncs exactly once per epoch, at its end. Between epochs it may hand a
checkpoint (distill.checkpoint) to the caller, and it can resume from one bit-exactly.

Teacher outputs come one of two ways. Cached (offline KD): the caller ran the teacher once and
passes its logits, which a step indexes like the labels. Online: TrainConfig.teacher is called
on each batch, after augmentation, so the teacher sees exactly what the student sees; that call
is the per-step cost of online KD, and a teacher outside torch (ONNX Runtime) syncs there too.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from distill.batches import POSITIONS, Rows
from distill.checkpoint import TrainState, check_resume, restore, snapshot
from distill.checks import ValData, validate_inputs
from distill.class_weights import apply_class_weights, class_weights
from distill.device_data import place_data, rows_tensor, val_stats_of
from distill.errors import DistillError
from distill.features import batch_features, prepare_features
from distill.losses import WeightedLoss
from distill.schedule import LR_SCHEDULES, check_schedule
from distill.schedule import make_scheduler as _schedule
from distill.selection import EarlyStopping, Tracker, check_select, selected_record
from distill.students import input_dtype

OPTIMIZERS = ("adam", "adamw", "sgd")
__all__ = ["LR_SCHEDULES", "EarlyStopping", "TrainConfig", "TrainResult", "train"]

# Train accuracy: keep each step's detached logits and take one argmax per epoch while the epoch's
# logits fit in this many elements (128 MB in fp32); beyond it, one argmax kernel per step.
KEEP_LOGITS_MAX_ELEMENTS = 2**25


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 3e-3  # a safe Adam default for the small zoo students
    optimizer: str = "adam"  # adam | adamw | sgd (sgd uses momentum 0.9: plain SGD crawls)
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"
    lr_schedule: str = "constant"  # constant | cosine (to 0 over the epochs, stepped per epoch)
    warmup_epochs: int = 0  # linear warm-up epochs before the schedule (distill.schedule)
    # The best validation epoch's weights end in the model (distill.selection): "accuracy"
    # (falls back to "agreement" without val labels) | "agreement"; None keeps the last epoch's.
    select: str | None = None
    early_stopping: EarlyStopping | None = None
    # The `ce` term's class weights: None | "balanced" | one weight per class
    # (distill.class_weights); train() sets them on the loss from the training labels.
    class_weights: str | tuple[float, ...] | None = None
    # Std of the Gaussian noise added to each training batch's inputs; drawn from a generator
    # seeded by (seed, epoch), so a resumed run draws the same noise. Validation stays clean.
    augment_noise: float = 0.0
    # Online KD: (B, ...) -> (B, C) teacher logits, called under no_grad on each (augmented)
    # batch in place of the cached rows. It must be deterministic (eval mode) for exact resumes.
    teacher: Callable[[torch.Tensor], torch.Tensor] | None = None

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
        check_schedule(self.lr_schedule, self.warmup_epochs, self.epochs)
        check_select(self.select)
        if self.early_stopping is not None and not isinstance(self.early_stopping, EarlyStopping):
            raise DistillError("early_stopping must be an EarlyStopping(metric, patience, ...).")
        if (
            isinstance(self.augment_noise, bool)
            or not isinstance(self.augment_noise, int | float)
            or not math.isfinite(self.augment_noise)
            or self.augment_noise < 0
        ):
            raise DistillError(
                f"augment_noise must be a finite number >= 0, got {self.augment_noise!r}."
            )
        if self.teacher is not None and not callable(self.teacher):
            raise DistillError(
                f"teacher must be a callable from inputs (B, ...) to logits (B, C), got "
                f"{type(self.teacher).__name__}."
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
    history: list[EpochMetrics]  # the epochs run by this call only
    resumed_from_epoch: int = 0  # the checkpoint's epoch count; 0 when not resumed
    best: dict[str, Any] | None = None  # {"epoch", "metric", "value"}; None without validation
    # The epoch whose weights the model holds when config.select kept them: {"epoch", "by"}
    # with by "accuracy" | "agreement"; None: the model holds the last epoch's weights.
    selected: dict[str, Any] | None = None
    # Set when early stopping ended the run: {"epoch", "metric", "reason"}.
    early_stopped: dict[str, Any] | None = None


def make_optimizer(
    model: nn.Module, config: TrainConfig, extra: Iterable[nn.Parameter] = ()
) -> torch.optim.Optimizer:
    """The configured optimizer over the model's and `extra` parameters (a loss term's
    projections), one group, with torch's fused kernel where the device supports it.

    For the zoo's small students the per-parameter bookkeeping of the default (foreach) Adam
    costs more than the math; the fused kernel does one call per step (3x faster on CPU).
    """
    params = [p for p in [*model.parameters(), *extra] if p.requires_grad]
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


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """None for a constant LR without warm-up; else stepped once per epoch. Epoch e (1-based)
    trains at lr * f(e): e / (W + 1) during the W warm-up epochs, then 1 (constant) or
    (1 + cos(pi * (e - 1 - W) / (epochs - W))) / 2 (cosine); see distill.schedule."""
    return _schedule(optimizer, config.epochs, config.warmup_epochs, config.lr_schedule)


def epoch_seed(seed: int, epoch: int) -> int:
    """The data-order seed of one epoch, a function of (seed, epoch) alone, so resuming at
    epoch k needs no generator state. A SeedSequence hash rather than seed + epoch: torch's CPU
    generator keeps only the low 32 bits of a seed, and (0, 2) would shuffle like (1, 1)."""
    return int(np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1)[0])


def noise_seed(seed: int, epoch: int) -> int:
    """The augmentation-noise seed of one epoch: like epoch_seed, a function of (seed, epoch)
    alone, so a resumed run needs no generator state; a third word keeps it off the order's."""
    return int(np.random.SeedSequence([seed % 2**64, epoch, 1]).generate_state(1)[0])


def train(
    student: nn.Module,
    x: np.ndarray | Rows,
    y: np.ndarray | None,
    teacher_logits: np.ndarray | Rows | None,
    loss: WeightedLoss,
    config: TrainConfig,
    *,
    val: ValData | None = None,
    on_epoch_end: Callable[[EpochMetrics], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: TrainState | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    checkpoint_every_s: float = 30.0,
    teacher_features: Mapping[str, np.ndarray] | None = None,
) -> TrainResult:
    """Train `student` on x (N, ...), labels y (N,) (-1 = unlabeled), teacher logits (N, C).

    x as an ndarray is moved to the device whole and a step indexes it; x as `Rows` (a set
    larger than memory) is streamed in block-shuffled batches (distill.batches), with memory
    proportional to the batch, and so is the validation set when it is `Rows`.

    With `config.teacher` (online KD) the teacher is run on each batch and `teacher_logits` is
    ignored; a loss without a teacher term never calls it.

    With `resume` (a snapshot taken after epoch k) it loads the weights, optimizer, LR schedule
    and RNG states and runs epochs k+1..epochs; on CPU the result is bit-identical to a run
    that never stopped. At the end of an epoch other than the last, once `checkpoint_every_s`
    have passed since the start or the last checkpoint, `on_checkpoint` gets a snapshot.

    `teacher_features` holds the teacher's named intermediate tensors (N, ...) aligned with x,
    for loss terms that read them (hint, attention, rkd on a tensor); the student's layers
    they read are hooked for the run (distill.features) and unhooked when it ends.
    """
    started = time.monotonic()
    if not checkpoint_every_s >= 0:  # also rejects NaN
        raise DistillError(f"checkpoint_every_s must be a number >= 0, got {checkpoint_every_s!r}.")
    device = torch.device(config.device)
    student.to(device)
    done = 0  # epochs completed before this call
    if resume is not None:
        done = check_resume(resume, config.epochs)
        if done == config.epochs:  # nothing left to run; the student gets the final weights
            restore(resume, student)
            selected = selected_record(config.select, resume.best, resume.best_model is not None)
            if selected is not None and resume.best_model is not None:
                student.load_state_dict(resume.best_model)
            return TrainResult(
                epochs_completed=done,
                steps=resume.step,
                stopped_early=False,
                history=[],
                resumed_from_epoch=done,
                best=resume.best,
                selected=selected,
            )
    online = config.teacher if loss.needs_teacher else None
    if online is not None:
        teacher_logits = None  # the teacher answers each batch; cached rows are not read
    elif config.augment_noise > 0 and loss.needs_teacher:
        raise DistillError(
            "augment_noise needs an online teacher when the loss has a teacher term: cached "
            "teacher logits describe the un-augmented inputs; pass TrainConfig(teacher=...)."
        )
    if config.augment_noise > 0 and input_dtype(student) == torch.int64:
        raise DistillError(
            "augment_noise adds Gaussian noise to float inputs but this student reads token "
            "ids (vocab_size is set); set augment_noise to 0."
        )
    width = validate_inputs(student, x, y, teacher_logits, loss, val, device, teacher=online)
    apply_class_weights(loss, class_weights(config.class_weights, y, width), device)
    torch.manual_seed(config.seed)
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast: Callable[[], contextlib.AbstractContextManager] = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if use_bf16
        else contextlib.nullcontext
    )

    t_cached = teacher_logits if loss.needs_teacher else None
    data = place_data(student, x, y, t_cached, val, config.batch_size, device)
    X, Y, T, stream, val_t = data.X, data.Y, data.T, data.stream, data.val
    x_dtype, labeled_total = data.x_dtype, data.labeled_total
    tracker = Tracker(  # the best epoch (and its weights) and early stopping
        config.select,
        config.early_stopping,
        val_labels=val_t is not None and val_t[1] is not None,
        val_teacher=val_t is not None and val_t[2] is not None,
        device=device,
        resume=resume,
    )
    n, bs = len(X), config.batch_size
    # Projections are built here (after the seed, before the optimizer); the tap's hooks
    # stay until the `with` below ends.
    tap = prepare_features(student, x, loss, teacher_features, width, device, online is not None)
    optimizer = make_optimizer(student, config, loss.parameters())
    scheduler = make_scheduler(optimizer, config)
    term_names = loss.active_names
    steps_per_epoch = math.ceil(n / bs)
    keep_logits = n * width <= KEEP_LOGITS_MAX_ELEMENTS and stream is None
    track_preds = Y is not None and not keep_logits  # else: step_logits, one argmax per epoch
    noise = float(config.augment_noise)
    noise_gen: torch.Generator | None = None
    student.train()

    history: list[EpochMetrics] = []
    step = 0
    if resume is not None:
        # Last before the loop: the RNG state must be the one the next epoch started from.
        try:
            restore(resume, student, optimizer, scheduler, loss)
        except BaseException:
            tap.remove()
            raise
        step = resume.step
    last_checkpoint = started
    with loss.assume_all_labeled(labeled_total == n), tap:
        for epoch in range(done + 1, config.epochs + 1):
            # A CPU generator, so the order is the same on any device.
            gen = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
            perm = torch.randperm(n, generator=gen).to(device, non_blocking=True)  # (N,)
            if noise > 0:  # a generator on the device: drawing the noise never syncs
                noise_gen = torch.Generator(device).manual_seed(noise_seed(config.seed, epoch))
            preds = torch.empty(n if track_preds else 0, dtype=torch.int64, device=device)  # (N,)
            step_logits: list[torch.Tensor] = []  # detached (B, C), when keep_logits
            step_losses: list[torch.Tensor] = []  # detached 0-d tensors, summed at epoch end
            batches = stream.epoch(epoch_seed(config.seed, epoch)) if stream is not None else None
            for start in range(0, n, bs):
                if batches is None:
                    idx = perm[start : start + bs]  # (B,)
                    xb = X[idx]  # (B, ...), a copy: the noise never reaches X
                    tb = T[idx] if T is not None else None  # (B, C)
                else:  # streamed: the batch's rows were read from the files
                    rows = next(batches)
                    idx = torch.from_numpy(rows[POSITIONS]).to(device)  # (B,)
                    perm[start : start + len(idx)] = idx  # the order, for train accuracy
                    xb = rows_tensor(rows["x"], device, x_dtype)  # (B, ...)
                    tb = rows_tensor(rows["t"], device) if "t" in rows else None  # (B, C)
                if noise_gen is not None:
                    xb.add_(torch.randn(xb.shape, generator=noise_gen, device=device), alpha=noise)
                yb = Y[idx] if Y is not None else None  # (B,)
                if online is not None:
                    with torch.no_grad():
                        tb = online(xb).float()  # (B, C), on the inputs the student sees
                with autocast():
                    logits = student(xb)  # (B, C)
                fb = batch_features(tap.teacher, idx) if tap.teacher else None  # {name: (B, ...)}
                total, parts = loss(logits, tb, yb, tap.outputs, fb)
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
                    return TrainResult(epoch - 1, step, True, history, done, tracker.best)
            if scheduler is not None:
                scheduler.step()  # host-side floats: no sync

            # The epoch's single host sync: training sums and validation metrics together.
            sums = torch.stack(step_losses).view(steps_per_epoch, -1).sum(dim=0)  # (1 + terms,)
            stats = [sums.float()]
            if Y is not None:
                if keep_logits:
                    preds = torch.cat(step_logits).argmax(dim=1)  # (N,)
                # -1 (unlabeled) never equals an argmax, so no mask is needed for the count.
                stats.append((preds == Y[perm]).sum().float().view(1))
            val_stats = val_stats_of(student, *val_t, autocast) if val_t is not None else {}
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
            stop = tracker.end_epoch(epoch, values, student)
            metrics = EpochMetrics(epoch=epoch, step=step, values=values)
            history.append(metrics)
            if on_epoch_end is not None:
                on_epoch_end(metrics)
            if stop:
                break
            # One clock read per epoch; after the last epoch the caller saves the result instead.
            if (
                on_checkpoint is not None
                and epoch < config.epochs
                and time.monotonic() - last_checkpoint >= checkpoint_every_s
            ):
                on_checkpoint(
                    snapshot(
                        student,
                        optimizer,
                        scheduler,
                        epoch,
                        step,
                        tracker.best,
                        best_model=tracker.weights,
                        early_stop=tracker.stop_state,
                        loss=loss,
                    )
                )
                last_checkpoint = time.monotonic()  # a slow save does not count as interval
    selected = tracker.finish(student)
    last = history[-1].epoch if history else done
    return TrainResult(
        last,
        step,
        False,
        history,
        done,
        tracker.best,
        selected=selected,
        early_stopped=tracker.early_stopped,
    )
