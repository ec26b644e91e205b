"""The learning-rate schedule: linear warm-up, then constant or cosine, stepped once per epoch.

Epoch e (1-based) of E trains at lr_e = lr * f(e), with W = warmup_epochs (0 <= W < E):

    warm-up, e <= W:    f(e) = e / (W + 1)                      (lr/(W+1), 2 lr/(W+1), ...)
    constant, e > W:    f(e) = 1
    cosine,   e > W:    f(e) = (1 + cos(pi * (e - 1 - W) / (E - W))) / 2

so the cosine starts at the full lr on the first epoch after the warm-up and would reach 0 one
epoch past the last (SGDR without restarts: Loshchilov & Hutter 2017, arXiv:1608.03983; warm-up
as in Goyal et al. 2017, arXiv:1706.02677, here per epoch rather than per step). With W = 0 the
cosine is CosineAnnealingLR(T_max=E), which the schedule then uses unchanged.

The factor is a picklable callable object, not a closure, so LambdaLR's state_dict carries its
settings: a checkpoint records (epochs, warmup, kind) and a resume with other ones is refused.
"""

from __future__ import annotations

import math

import torch

from distill.errors import DistillError

LR_SCHEDULES = ("constant", "cosine")


class WarmupFactor:
    """f(i) for LambdaLR, i = the number of scheduler steps so far = e - 1 (see the module)."""

    def __init__(self, epochs: int, warmup: int, kind: str) -> None:
        self.epochs, self.warmup, self.kind = epochs, warmup, kind

    def __call__(self, i: int) -> float:
        if i < self.warmup:
            return (i + 1) / (self.warmup + 1)
        if self.kind == "constant":
            return 1.0
        return (1.0 + math.cos(math.pi * (i - self.warmup) / (self.epochs - self.warmup))) / 2.0


def lr_factor(epoch: int, epochs: int, warmup: int, kind: str) -> float:
    """f(e) of the module docstring for the 1-based epoch e: lr_e / lr."""
    return WarmupFactor(epochs, warmup, kind)(epoch - 1)


def check_schedule(kind: str, warmup: object, epochs: int) -> None:
    """The schedule's settings, each failure a sentence."""
    if kind not in LR_SCHEDULES:
        raise DistillError(
            f"Unknown lr_schedule {kind!r}; valid schedules are: {', '.join(LR_SCHEDULES)}."
        )
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise DistillError(f"warmup_epochs must be an integer >= 0, got {warmup!r}.")
    if warmup >= epochs:
        raise DistillError(
            f"warmup_epochs ({warmup}) must be less than epochs ({epochs}); shorten the warm-up "
            "or train for more epochs."
        )


def make_scheduler(
    optimizer: torch.optim.Optimizer, epochs: int, warmup: int, kind: str
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """None for a constant LR without warm-up; else a scheduler stepped once per epoch."""
    if warmup == 0:
        if kind == "cosine":  # as before warm-up existed, so older checkpoints still resume
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupFactor(epochs, warmup, kind))
