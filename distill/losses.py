"""Distillation losses: one registry of named terms, combined as a named weighted sum.

Every term takes (student_logits (B, C), teacher_logits (B, C) | None, labels (B,) | None) and
returns a scalar on the logits' device without a host sync. Labels use -1 for unlabeled rows.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import DistillError


def _f32(t: torch.Tensor) -> torch.Tensor:
    # Checking the dtype first skips a dispatcher round trip per call in the fp32 case.
    return t if t.dtype == torch.float32 else t.float()


class LossTerm(nn.Module):
    """One named loss term. Subclasses set the class variables and implement forward()."""

    name: ClassVar[str]
    needs_labels: ClassVar[bool] = False
    needs_teacher: ClassVar[bool] = False
    # True only inside WeightedLoss.assume_all_labeled(True): no label is -1, so terms may skip
    # masking. A plain bool, decided once on the host, so reading it never syncs.
    all_labeled: bool = False

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        raise NotImplementedError


class KDLoss(LossTerm):
    """Soft-target distillation. Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a
    Neural Network", arXiv:1503.02531.

        L = T^2 * (1/B) * sum_b KL( softmax(t_b / T) || softmax(s_b / T) )
          = T^2 * (1/B) * sum_b sum_c p_bc * (log p_bc - log q_bc),
        p = softmax(t / T), q = softmax(s / T).

    The T^2 factor keeps the gradient scale independent of the temperature.
    """

    name = "kd"
    needs_teacher = True

    def __init__(self, temperature: float = 4.0):
        super().__init__()
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise DistillError(
                f"The 'kd' loss temperature must be a finite number > 0, got {temperature!r}."
            )
        self.temperature = float(temperature)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        assert teacher_logits is not None, "kd needs teacher logits"
        t = self.temperature
        log_q = F.log_softmax(_f32(student_logits) / t, dim=1)  # (B, C)
        log_p = F.log_softmax(_f32(teacher_logits) / t, dim=1)  # (B, C)
        kl = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
        return kl * (t * t)


class CELoss(LossTerm):
    """Cross-entropy with the ground-truth labels (standard supervised term, e.g. the
    "hard target" term of Hinton et al. 2015, arXiv:1503.02531).

        L = sum_{b: y_b >= 0} -log softmax(s_b)[y_b] / max(#{b: y_b >= 0}, 1)

    Rows with y_b = -1 are unlabeled (transfer set) and ignored; a batch without labels gives 0.
    """

    name = "ce"
    needs_labels = True

    def __init__(self) -> None:
        super().__init__()
        # Optional class weights w (C,) (distill.class_weights): the weighted mean
        # sum_b w_{y_b} * l_b / sum_b w_{y_b} over labeled rows. A buffer, so .to() moves it.
        self.class_weight: torch.Tensor | None
        self.register_buffer("class_weight", None, persistent=False)

    def set_class_weights(self, weights: torch.Tensor | None) -> None:
        self.class_weight = None if weights is None else weights.float()

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        assert labels is not None, "ce needs labels"
        w = self.class_weight
        if w is not None:
            if w.device != student_logits.device:
                w = w.to(student_logits.device)
            total = F.cross_entropy(
                _f32(student_logits), labels, weight=w, ignore_index=-1, reduction="sum"
            )
            # Weight of each labeled row; a -1 row indexes w[0] but is masked to 0.
            mass = (w[labels.clamp(min=0)] * (labels >= 0)).sum()
            return total / mass.clamp(min=torch.finfo(torch.float32).tiny)
        if self.all_labeled:  # the common fully-labeled set: no mask, ~35 us/step cheaper on CPU
            return F.cross_entropy(_f32(student_logits), labels)
        # ignore_index drops the -1 rows from the sum; dividing by max(count, 1) instead of
        # branching on the count makes an all-unlabeled batch exactly 0 without a host sync.
        total = F.cross_entropy(_f32(student_logits), labels, ignore_index=-1, reduction="sum")
        return total / (labels >= 0).sum().clamp(min=1)


class HardLoss(LossTerm):
    """Cross-entropy with the teacher's argmax as pseudo-label (hard-label distillation;
    Lee 2013, "Pseudo-Label", ICML WREPL; Touvron et al. 2021, DeiT, arXiv:2012.12877).

        L = (1/B) * sum_b -log softmax(s_b)[argmax_c t_bc]
    """

    name = "hard"
    needs_teacher = True

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        assert teacher_logits is not None, "hard needs teacher logits"
        return F.cross_entropy(_f32(student_logits), teacher_logits.argmax(dim=1))


class MSELogitsLoss(LossTerm):
    """Logit matching. Ba & Caruana 2014, "Do Deep Nets Really Need to be Deep?", NeurIPS.

    L = (1/(B*C)) * sum_{b,c} (s_bc - t_bc)^2
    """

    name = "mse_logits"
    needs_teacher = True

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        assert teacher_logits is not None, "mse_logits needs teacher logits"
        return F.mse_loss(_f32(student_logits), _f32(teacher_logits))


LOSSES: dict[str, type[LossTerm]] = {
    cls.name: cls for cls in (KDLoss, CELoss, HardLoss, MSELogitsLoss)
}

# Keyword parameters each term accepts besides "name" and "weight".
_PARAMS: dict[str, set[str]] = {
    "kd": {"temperature"},
    "ce": set(),
    "hard": set(),
    "mse_logits": set(),
}


class WeightedLoss(nn.Module):
    """Total = sum_i w_i * L_i over named terms; also returns each unweighted L_i."""

    def __init__(self, terms: list[tuple[str, float, LossTerm]]):
        super().__init__()
        self.terms = terms
        self.term_modules = nn.ModuleList([term for _, _, term in terms])
        # Zero-weight terms are kept for the record but never computed.
        self._active = [(key, float(w), term) for key, w, term in terms if w > 0]
        self.needs_labels = any(t.needs_labels for _, _, t in self._active)
        self.needs_teacher = any(t.needs_teacher for _, _, t in self._active)

    @property
    def active_names(self) -> list[str]:
        """Names of the terms that forward() computes and returns, in order."""
        return [key for key, _, _ in self._active]

    @contextlib.contextmanager
    def assume_all_labeled(self, flag: bool) -> Iterator[None]:
        """Within the block, terms may assume no label is -1 (train() knows it up front)."""
        before = [term.all_labeled for _, _, term in self.terms]
        for _, _, term in self.terms:
            term.all_labeled = flag
        try:
            yield
        finally:
            for (_, _, term), value in zip(self.terms, before, strict=True):
                term.all_labeled = value

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for key, weight, term in self._active:
            # forward() directly: nn.Module.__call__ costs ~2 us a term per step on CPU, which
            # shows on small students; terms are pure functions, so hooks on them are moot.
            value = term.forward(student_logits, teacher_logits, labels)  # ()
            parts[key] = value
            weighted = value if weight == 1.0 else weight * value
            total = weighted if total is None else total + weighted
        if total is None:
            total = student_logits.new_zeros((), dtype=torch.float32)
        return total, parts


def build_loss(terms: list[dict[str, Any]]) -> WeightedLoss:
    """Build a weighted loss from specs like [{"name": "kd", "weight": 0.9, "temperature": 4}]."""
    if not isinstance(terms, list) or not terms:
        raise DistillError(
            "The loss must be a non-empty list of terms, e.g. "
            '[{"name": "kd", "weight": 0.9}, {"name": "ce", "weight": 0.1}].'
        )
    built: list[tuple[str, float, LossTerm]] = []
    for spec in terms:
        if not isinstance(spec, dict) or "name" not in spec:
            raise DistillError(f'Each loss term must be an object with a "name", got {spec!r}.')
        name = spec["name"]
        if name not in LOSSES:
            raise DistillError(
                f"Unknown loss term {name!r}; valid loss terms are: {', '.join(sorted(LOSSES))}."
            )
        weight = spec.get("weight", 1.0)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise DistillError(
                f"The weight of loss term {name!r} must be a finite number >= 0, got {weight!r}."
            )
        kwargs = {k: v for k, v in spec.items() if k not in ("name", "weight")}
        unknown = sorted(set(kwargs) - _PARAMS[name])
        if unknown:
            valid = ", ".join(sorted(_PARAMS[name] | {"name", "weight"}))
            raise DistillError(
                f"Unknown key {unknown[0]!r} in loss term {name!r}; valid keys are: {valid}."
            )
        if any(key == name for key, _, _ in built):
            raise DistillError(
                f"The loss term {name!r} appears twice; give it once with the summed weight."
            )
        built.append((name, float(weight), LOSSES[name](**kwargs)))
    if all(w == 0 for _, w, _ in built):
        raise DistillError("All loss weights are 0; give at least one term a weight > 0.")
    return WeightedLoss(built)
