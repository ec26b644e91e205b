"""What every loss term gets and is: the step's outputs as one LossBatch, and LossTerm.

A term is a pure function of the batch, except for the parameters it may own (a learned
projection, FitNets' regressor): those are built by bind() from the shapes one 2-sample
forward pass measured, before the optimizer exists, so the optimizer trains them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn


def f32(t: torch.Tensor) -> torch.Tensor:
    """t in float32 (float64 kept, for gradcheck); checking the dtype first skips a dispatcher
    round trip when it already is."""
    return t if t.dtype == torch.float32 or t.dtype == torch.float64 else t.float()


@dataclass(slots=True)
class LossBatch:
    """One step's inputs to the loss terms. Labels use -1 for unlabeled rows."""

    student_logits: torch.Tensor  # (B, C)
    teacher_logits: torch.Tensor | None = None  # (B, C)
    labels: torch.Tensor | None = None  # (B,)
    # Outputs of student modules by module path, kept by forward hooks: (B, ...) each.
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    # The teacher's named intermediate tensors for the batch's rows: (B, ...) each.
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)


class LossTerm(nn.Module):
    """One named loss term. Subclasses set the class variables and implement forward()."""

    name: ClassVar[str]
    needs_labels: ClassVar[bool] = False
    needs_teacher: ClassVar[bool] = False
    # The student module path and teacher tensor name the term reads; None: not read (or,
    # for rkd, the logits). Set by the constructor of the terms that read features.
    student_layer: str | None = None
    teacher_tensor: str | None = None
    # True only inside WeightedLoss.assume_all_labeled(True): no label is -1, so terms may skip
    # masking. A plain bool, decided once on the host, so reading it never syncs.
    all_labeled: bool = False

    def bind(
        self,
        student_shape: Sequence[int] | None,
        teacher_shape: Sequence[int] | None,
        classes: int,
    ) -> None:
        """Build the term's own parameters and check the shapes it reads (per sample, without
        the batch dim; None for a feature the term does not read). Raise DistillError with a
        sentence when they do not fit. The default owns nothing and checks nothing."""

    def forward(self, batch: LossBatch) -> torch.Tensor:
        raise NotImplementedError
