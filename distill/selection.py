"""Best-epoch selection and early stopping, both on the validation figures of each epoch.

Selection (TrainConfig.select): "accuracy" picks the epoch of the highest val_accuracy, and
falls back to "agreement" (val_agreement with the teacher) when the validation set has no
labels; "agreement" picks the highest val_agreement. A tie keeps the earlier epoch and a NaN
never wins. With select=None the record still names the best epoch (val_accuracy, else val_kl,
lower is better) but no weights are kept, and the model ends with the last epoch's weights.

Early stopping (TrainConfig.early_stopping = EarlyStopping(metric, patience, min_delta)): an
epoch improves when its value beats the best so far by more than min_delta,

    accuracy, agreement:  v > best + min_delta          kl:  v < best - min_delta

and training stops at the end of the epoch that makes `patience` epochs in a row without one
(Prechelt 1998, "Early Stopping - But When?"). The first epoch always improves.

Both states are plain numbers and a state dict, saved in the checkpoint, so a resumed run
selects and stops exactly where the uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distill.errors import DistillError

SELECT = ("accuracy", "agreement")
STOP_METRICS = ("accuracy", "agreement", "kl")


@dataclass(frozen=True)
class EarlyStopping:
    metric: str = "accuracy"  # accuracy | agreement | kl (val_<metric>)
    patience: int = 3  # epochs in a row without improvement that stop the run
    min_delta: float = 0.0  # the least change that counts as an improvement

    def __post_init__(self) -> None:
        if self.metric not in STOP_METRICS:
            raise DistillError(
                f"Unknown early_stopping metric {self.metric!r}; valid metrics are: "
                f"{', '.join(STOP_METRICS)}."
            )
        if (
            isinstance(self.patience, bool)
            or not isinstance(self.patience, int)
            or self.patience < 1
        ):
            raise DistillError(
                f"early_stopping patience must be an integer >= 1, got {self.patience!r}."
            )
        if (
            isinstance(self.min_delta, bool)
            or not isinstance(self.min_delta, int | float)
            or not math.isfinite(self.min_delta)
            or self.min_delta < 0
        ):
            raise DistillError(
                f"early_stopping min_delta must be a finite number >= 0, got {self.min_delta!r}."
            )


def check_select(select: str | None) -> None:
    if select is not None and select not in SELECT:
        raise DistillError(
            f"Unknown select {select!r}; valid choices are: {', '.join(SELECT)} (or none)."
        )


def selection_metric(select: str | None, val_labels: bool, val_teacher: bool) -> str | None:
    """The val_* figure the best epoch is chosen by, or None when the validation set has
    neither what `select` needs nor its fallback."""
    if select is None:
        return "val_accuracy" if val_labels else "val_kl" if val_teacher else None
    if select == "accuracy" and val_labels:
        return "val_accuracy"
    return "val_agreement" if val_teacher else None


def stop_metric(rule: EarlyStopping, val_labels: bool, val_teacher: bool) -> str:
    """The val_* figure early stopping watches; a sentence when validation cannot give it."""
    if rule.metric == "accuracy" and not val_labels:
        raise DistillError(
            "early_stopping watches 'accuracy' but the validation set has no labels; watch "
            "'agreement' or 'kl' instead, or give a labeled validation set."
        )
    if rule.metric != "accuracy" and not val_teacher:
        raise DistillError(
            f"early_stopping watches {rule.metric!r} but the validation set has no teacher "
            "outputs; watch 'accuracy' instead."
        )
    return f"val_{rule.metric}"


def _better(metric: str, value: float, best: float, margin: float = 0.0) -> bool:
    if metric == "val_kl":
        return value < best - margin
    return value > best + margin


def update_best(
    best: dict[str, Any] | None, metric: str | None, epoch: int, values: dict[str, float]
) -> dict[str, Any] | None:
    """The best-so-far record {"epoch", "metric", "value"} after this epoch."""
    if metric is None or metric not in values:
        return best
    value = values[metric]
    if not math.isfinite(value):
        return best
    if best is None or best["metric"] != metric or _better(metric, value, best["value"]):
        return {"epoch": epoch, "metric": metric, "value": value}
    return best


def update_stop(
    state: dict[str, Any] | None,
    rule: EarlyStopping,
    metric: str,
    epoch: int,
    values: dict[str, float],
) -> dict[str, Any]:
    """The early-stopping state {"best", "epoch", "bad_epochs"} after this epoch: the best
    value, the epoch that set it (None while no epoch gave a finite value) and the epochs in a
    row since. A NaN never improves."""
    value = values[metric]
    if state is None:
        state = {"best": None, "epoch": None, "bad_epochs": 0}
    if math.isfinite(value) and (
        state["best"] is None or _better(metric, value, state["best"], rule.min_delta)
    ):
        return {"best": value, "epoch": epoch, "bad_epochs": 0}
    return {**state, "bad_epochs": state["bad_epochs"] + 1}


def stop_reason(rule: EarlyStopping, metric: str, state: dict[str, Any], epoch: int) -> str:
    """The sentence a summary gives for a stop at `epoch`."""
    direction = "fall" if metric == "val_kl" else "rise"
    best = (
        f"best {state['best']:.6g} at epoch {state['epoch']}"
        if state["best"] is not None
        else "no finite value yet"
    )
    return (
        f"{metric} did not {direction} by more than {rule.min_delta:g} for {rule.patience} "
        f"epochs in a row ({best}); stopped after epoch {epoch} of the planned run."
    )


def copy_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the state dict on the model's device: later steps leave it unchanged."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def selected_record(
    select: str | None, best: dict[str, Any] | None, have_weights: bool
) -> dict[str, Any] | None:
    """{"epoch", "by"[, "note"]} for the weights a run leaves in the model, or None when they
    are the last epoch's (no select, or no validation figure to select by)."""
    if select is None or best is None or not have_weights:
        return None
    by = best["metric"].removeprefix("val_")
    record: dict[str, Any] = {"epoch": best["epoch"], "by": by}
    if by != select:
        record["note"] = f"selected by {by} because the validation set has no labels for {select}"
    return record


class Tracker:
    """One run's selection and early-stopping state, updated from each epoch's synced figures.

    `val_labels` / `val_teacher`: whether the validation set has labels / teacher outputs (no
    validation set: both False). With `resume` it goes on from a checkpoint's state.
    """

    def __init__(
        self,
        select: str | None,
        rule: EarlyStopping | None,
        val_labels: bool,
        val_teacher: bool,
        device: torch.device,
        resume: Any = None,  # a distill.checkpoint.TrainState
    ) -> None:
        if rule is not None and not (val_labels or val_teacher):
            raise DistillError(
                "early_stopping watches a validation metric but there is no validation set; "
                "give one or drop early_stopping."
            )
        self.select, self.rule = select, rule
        self.metric = selection_metric(select, val_labels, val_teacher)  # a val_* key or None
        self.keep = select is not None and self.metric is not None
        self.watched = stop_metric(rule, val_labels, val_teacher) if rule is not None else ""
        self.best: dict[str, Any] | None = None
        self.weights: dict[str, torch.Tensor] | None = None  # on the device, when keep
        self.stop_state: dict[str, Any] | None = None
        self.early_stopped: dict[str, Any] | None = None
        if resume is not None:
            self.best, self.stop_state = resume.best, resume.early_stop
            if self.keep and resume.best_model is not None:
                self.weights = {k: v.to(device, copy=True) for k, v in resume.best_model.items()}

    def end_epoch(self, epoch: int, values: dict[str, float], model: nn.Module) -> bool:
        """Record the epoch; True when early stopping ends the run after it."""
        improved = update_best(self.best, self.metric, epoch, values)
        if self.keep and improved is not self.best:
            self.weights = copy_weights(model)  # a device copy: no host sync
        self.best = improved
        if self.rule is not None:
            self.stop_state = update_stop(self.stop_state, self.rule, self.watched, epoch, values)
            if self.stop_state["bad_epochs"] >= self.rule.patience:
                reason = stop_reason(self.rule, self.watched, self.stop_state, epoch)
                self.early_stopped = {"epoch": epoch, "metric": self.watched, "reason": reason}
        return self.early_stopped is not None

    def finish(self, model: nn.Module) -> dict[str, Any] | None:
        """Load the selected epoch's weights into `model`; their record, or None (last epoch)."""
        record = selected_record(self.select, self.best, self.weights is not None)
        if record is not None and self.weights is not None:
            model.load_state_dict(self.weights)
        return record
