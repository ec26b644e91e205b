"""Training checkpoints: everything train() needs to go on as if it had never stopped.

A resumed run ends bit-identical to an uninterrupted one on CPU because train() draws each
epoch's data order from (seed, epoch) alone, and the state here holds the rest: weights,
optimizer moments, the LR schedule's position and the global RNG that dropout draws from.
Files are read with torch.load(weights_only=True): a checkpoint is data, never code.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from distill.errors import DistillError

# Bumped when the file layout changes, so an old file fails with a sentence, not a KeyError.
CHECKPOINT_FORMAT = 1


@dataclass
class TrainState:
    epoch: int  # epochs completed so far (1-based count; 0 = none)
    step: int  # optimizer steps done so far
    model: dict[str, torch.Tensor]  # state_dict, CPU copies
    optimizer: dict[str, Any]  # optimizer.state_dict(), tensors on CPU
    scheduler: dict[str, Any] | None  # lr_scheduler.state_dict(); None for a constant LR
    rng: dict[str, Any]  # {"cpu": ByteTensor, "cuda": [ByteTensor, ...] when CUDA is in use}
    best: dict[str, Any] | None  # {"epoch": int, "metric": str, "value": float}
    # The best epoch's weights (CPU copies) when the run selects them; None otherwise.
    best_model: dict[str, torch.Tensor] | None = None
    # Early stopping's {"best": float | None, "epoch": int | None, "bad_epochs": int}.
    early_stop: dict[str, Any] | None = None
    # The loss terms' own parameters (FitNets projections), state_dict CPU copies; None or
    # {} when the loss owns none. Files written before feature losses have no entry.
    loss: dict[str, torch.Tensor] | None = None


def _to_cpu(obj: Any) -> Any:
    """A deep copy with every tensor on the CPU.

    copy=True also copies tensors already on the CPU: the optimizer updates its moments in
    place, so a mere reference would drift with the training that goes on after the snapshot.
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj  # numbers, strings, bools, None: immutable


def rng_state() -> dict[str, Any]:
    """The global RNG states (dropout draws from them); CUDA only once CUDA is initialised,
    since asking for its state would initialise it."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore rng_state(); CUDA states for more devices than this machine has are dropped."""
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def snapshot(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    epoch: int,
    step: int,
    best: dict[str, Any] | None,
    *,
    best_model: dict[str, torch.Tensor] | None = None,
    early_stop: dict[str, Any] | None = None,
    loss: nn.Module | None = None,
) -> TrainState:
    """The training state now, copied so that later training leaves it unchanged.

    Take it between epochs, after the epoch's work: the RNG state then is the one the next
    epoch starts from. Copying device tensors to the CPU syncs, once per checkpoint.
    """
    return TrainState(
        epoch=epoch,
        step=step,
        model=_to_cpu(model.state_dict()),
        optimizer=_to_cpu(optimizer.state_dict()),
        scheduler=_to_cpu(scheduler.state_dict()) if scheduler is not None else None,
        rng=_to_cpu(rng_state()),
        best=dict(best) if best is not None else None,
        best_model=_to_cpu(best_model) if best_model is not None else None,
        early_stop=dict(early_stop) if early_stop is not None else None,
        loss=_to_cpu(loss.state_dict()) if loss is not None else None,
    )


def check_resume(state: TrainState, epochs: int) -> int:
    """The epochs `state` has completed, which a run of `epochs` epochs can go on from."""
    if not 0 <= state.epoch <= epochs:
        raise DistillError(
            f"The checkpoint has {state.epoch} epochs done but the run has {epochs} epochs; "
            "resume with the job's original epoch count."
        )
    return state.epoch


# Optimizer group keys that say how torch runs the update rather than what it computes, and
# the LR, which the schedule moves (its start is compared as "initial lr").
_RUNTIME_KEYS = frozenset({"params", "lr", "foreach", "fused", "capturable", "differentiable"})
# LR scheduler keys that hold its position, not its settings.
_POSITION_KEYS = frozenset(
    {"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "_is_initial"}
)


def _first_difference(
    saved: dict[str, Any], fresh: dict[str, Any], skip: frozenset[str]
) -> str | None:
    """The first setting that differs. A key only one side has is passed over while the other
    side's keys are a subset (a newer torch adds some); when each side has keys the other
    lacks, it is another optimizer (Adam's betas vs SGD's momentum) and one of them is named."""
    only_saved, only_fresh = set(saved) - set(fresh) - skip, set(fresh) - set(saved) - skip
    if only_saved and only_fresh:
        return min(only_saved | only_fresh)
    for key in sorted((set(saved) & set(fresh)) - skip):
        if saved[key] != fresh[key]:
            return key
    return None


def _show(settings: dict[str, Any], key: str) -> str:
    return repr(settings[key]) if key in settings else "no such setting"


def _check_fits(
    state: TrainState,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
) -> None:
    """torch would load another optimizer's or schedule's state silently and then train with
    the checkpoint's settings, not the config's; a resume with a changed config fails here."""
    saved_groups = state.optimizer.get("param_groups", [])
    fresh_groups = optimizer.state_dict()["param_groups"]
    if len(saved_groups) != len(fresh_groups):
        raise DistillError(
            "The checkpoint's optimizer state does not fit this student; resume with the same "
            "student and config."
        )
    for saved, fresh in zip(saved_groups, fresh_groups, strict=True):
        saved = {**saved, "initial lr": saved.get("initial_lr", saved.get("lr"))}
        fresh = {**fresh, "initial lr": fresh.get("initial_lr", fresh.get("lr"))}
        key = _first_difference(saved, fresh, _RUNTIME_KEYS)
        if key is not None:
            raise DistillError(
                f"The checkpoint's optimizer has {key} = {_show(saved, key)}, this run's has "
                f"{_show(fresh, key)}; resume with the job's original optimizer, lr and "
                "weight_decay."
            )
    if (state.scheduler is None) != (scheduler is None):
        raise DistillError(
            "The checkpoint was taken with another lr_schedule than this run's; resume with the "
            "job's original config."
        )
    if scheduler is not None and state.scheduler is not None:
        fresh = scheduler.state_dict()
        key = _first_difference(state.scheduler, fresh, _POSITION_KEYS)
        if key is not None:
            raise DistillError(
                f"The checkpoint's LR schedule has {key} = {_show(state.scheduler, key)}, this "
                f"run's has {_show(fresh, key)}; resume with the job's original epochs and lr."
            )


def restore(
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    loss: nn.Module | None = None,
) -> None:
    """Load `state` into the model and, given an optimizer, into it, the LR schedule, the
    loss terms' own parameters (`loss`, before the optimizer's moments) and the global RNGs. Call it last before training goes on: anything drawing random numbers
    afterwards would shift dropout away from the uninterrupted run."""
    if optimizer is not None:
        _check_fits(state, optimizer, scheduler)
    try:
        model.load_state_dict(state.model, strict=True)
    except RuntimeError as exc:
        raise DistillError(
            f"The checkpoint's weights do not fit this student ({str(exc).strip()[:200]}); "
            "resume with the same student architecture and params."
        ) from exc
    if optimizer is None:
        return
    if loss is not None:
        try:
            loss.load_state_dict(state.loss or {}, strict=True)
        except RuntimeError as exc:
            raise DistillError(
                f"The checkpoint's loss projections do not fit this loss "
                f"({str(exc).strip()[:200]}); resume with the job's original loss terms."
            ) from exc
    try:
        # Copies: on the CPU torch would adopt the state's tensors and update them in place,
        # changing the caller's TrainState as training goes on.
        optimizer.load_state_dict(_to_cpu(state.optimizer))
        set_rng_state(state.rng)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise DistillError(
            f"The checkpoint's optimizer or RNG state cannot be loaded ({exc}); the file is "
            "damaged or from another run, start the training again."
        ) from exc
    if scheduler is not None and state.scheduler is not None:
        scheduler.load_state_dict(_to_cpu(state.scheduler))


def save_checkpoint(state: TrainState, path: str | os.PathLike) -> None:
    """Write `state` with torch.save, via a temporary file and a rename, so a crash while
    writing leaves the previous checkpoint in place rather than half a file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    # Not dataclasses.asdict: it deep-copies every tensor once more on the way.
    raw = {f.name: getattr(state, f.name) for f in fields(state)}
    try:
        torch.save({"format": CHECKPOINT_FORMAT, **raw}, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _check_int(raw: dict[str, Any], key: str) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DistillError(
            f"The checkpoint's {key!r} is {value!r}, not a count >= 0; the file is damaged, "
            "start the training again."
        )
    return value


def _check_best(best: Any) -> dict[str, Any] | None:
    if best is None:
        return None
    if (
        not isinstance(best, dict)
        or set(best) != {"epoch", "metric", "value"}
        or not isinstance(best["epoch"], int)
        or not isinstance(best["metric"], str)
        or not isinstance(best["value"], float)
        or not math.isfinite(best["value"])
    ):
        raise DistillError(
            f"The checkpoint's best-so-far record {best!r} is not "
            "{'epoch', 'metric', 'value'}; the file is damaged, start the training again."
        )
    return best


def _check_loss(loss: Any) -> dict[str, torch.Tensor] | None:
    if loss is not None and not (
        isinstance(loss, dict) and all(isinstance(v, torch.Tensor) for v in loss.values())
    ):
        raise DistillError(
            "The checkpoint's 'loss' entry is not a state dict; the file is damaged, start the "
            "training again."
        )
    return loss


def load_checkpoint(path: str | os.PathLike) -> TrainState:
    """Read a save_checkpoint() file onto the CPU; a damaged or foreign file is a DistillError."""
    try:
        raw = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file (zip, pickle, EOF, IO)
        raise DistillError(
            f"The checkpoint file could not be read ({str(exc).strip()[:200]}); it is damaged "
            "or not a Stillhouse checkpoint, start the training again."
        ) from exc
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise DistillError(
            "The file is not a Stillhouse checkpoint of format "
            f"{CHECKPOINT_FORMAT}; it was written by another program or version, start the "
            "training again."
        )
    # best_model, early_stop and loss came later: a file without them resumes without them.
    optional = {"best_model", "early_stop", "loss"}
    missing = [f.name for f in fields(TrainState) if f.name not in raw and f.name not in optional]
    if missing:
        raise DistillError(
            f"The checkpoint has no {missing[0]!r} entry; the file is damaged, start the "
            "training again."
        )
    for key, kind in (("model", dict), ("optimizer", dict), ("rng", dict)):
        if not isinstance(raw[key], kind):
            raise DistillError(
                f"The checkpoint's {key!r} entry is a {type(raw[key]).__name__}, not a "
                "state dict; the file is damaged, start the training again."
            )
    if not isinstance(raw["rng"].get("cpu"), torch.Tensor):
        raise DistillError(
            "The checkpoint has no CPU RNG state; the file is damaged, start the training again."
        )
    if raw["scheduler"] is not None and not isinstance(raw["scheduler"], dict):
        raise DistillError(
            "The checkpoint's 'scheduler' entry is not a state dict; the file is damaged, start "
            "the training again."
        )
    return TrainState(
        epoch=_check_int(raw, "epoch"),
        step=_check_int(raw, "step"),
        model=raw["model"],
        optimizer=raw["optimizer"],
        scheduler=raw["scheduler"],
        rng=raw["rng"],
        best=_check_best(raw["best"]),
        best_model=_check_best_model(raw.get("best_model")),
        early_stop=_check_early_stop(raw.get("early_stop")),
        loss=_check_loss(raw.get("loss")),
    )


def _check_best_model(value: Any) -> dict[str, torch.Tensor] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, torch.Tensor) for v in value.values()):
        raise DistillError(
            "The checkpoint's best-epoch weights are not a state dict; the file is damaged, "
            "start the training again."
        )
    return value


def _check_early_stop(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"best", "epoch", "bad_epochs"}
        or not isinstance(value["bad_epochs"], int)
        or value["bad_epochs"] < 0
        or not (value["best"] is None or isinstance(value["best"], float))
    ):
        raise DistillError(
            f"The checkpoint's early-stopping record {value!r} is not "
            "{'best', 'epoch', 'bad_epochs'}; the file is damaged, start the training again."
        )
    return value
