"""Distillation losses: one registry of named terms, combined as a named weighted sum.

Every term takes one LossBatch (distill.loss_base: student logits (B, C), teacher logits
(B, C) | None, labels (B,) | None with -1 for unlabeled rows, and the features captured for
the step) and returns a scalar on the logits' device without a host sync. The parameter
schemas live in catalog.losses; build_loss() parses each term with them, so the gateway and
the engine accept the same names and parameters.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from catalog.losses import LOSSES as SCHEMAS
from distill.errors import DistillError
from distill.feature_losses import AttentionLoss, HintLoss, RKDLoss
from distill.loss_base import LossBatch, LossTerm, f32

_f32 = f32
__all__ = ["LOSSES", "LossBatch", "LossTerm", "WeightedLoss", "build_loss"]


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

    def forward(self, batch: LossBatch) -> torch.Tensor:
        student_logits, teacher_logits = batch.student_logits, batch.teacher_logits
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

    def forward(self, batch: LossBatch) -> torch.Tensor:
        student_logits, labels = batch.student_logits, batch.labels
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

    def forward(self, batch: LossBatch) -> torch.Tensor:
        student_logits, teacher_logits = batch.student_logits, batch.teacher_logits
        assert teacher_logits is not None, "hard needs teacher logits"
        return F.cross_entropy(_f32(student_logits), teacher_logits.argmax(dim=1))


class MSELogitsLoss(LossTerm):
    """Logit matching. Ba & Caruana 2014, "Do Deep Nets Really Need to be Deep?", NeurIPS.

    L = (1/(B*C)) * sum_{b,c} (s_bc - t_bc)^2
    """

    name = "mse_logits"
    needs_teacher = True

    def forward(self, batch: LossBatch) -> torch.Tensor:
        student_logits, teacher_logits = batch.student_logits, batch.teacher_logits
        assert teacher_logits is not None, "mse_logits needs teacher logits"
        return F.mse_loss(_f32(student_logits), _f32(teacher_logits))


class DKDLoss(LossTerm):
    """Decoupled KD. Zhao, Cui, Song, Qiu, Liang 2022, "Decoupled Knowledge Distillation",
    CVPR, arXiv:2203.08679. With g the target class, p = softmax(t / T), q = softmax(s / T):

        b^T = [p_g, 1 - p_g],  b^S = [q_g, 1 - q_g]                    (target vs the rest)
        TCKD = KL(b^T || b^S)
        p^ = softmax over the classes c != g of t / T,  q^ likewise of s / T
        NCKD = KL(p^ || q^)                                  (among the non-target classes)
        L = T^2 * (1/B) * sum_b (alpha * TCKD_b + beta * NCKD_b)

    g is the row's label; on an unlabeled row (-1, a transfer set) it is the teacher's
    argmax, so dkd needs no labels. log(1 - p_g) is taken as logsumexp over c != g minus
    logsumexp over all c, which stays finite when p_g rounds to 1. Needs C >= 2.
    """

    name = "dkd"
    needs_teacher = True

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> None:
        super().__init__()
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)

    def bind(
        self, student_shape: Sequence[int] | None, teacher_shape: Sequence[int] | None, classes: int
    ) -> None:
        if classes < 2:
            raise DistillError(
                "The 'dkd' loss needs at least 2 classes (it splits the target class from the "
                "others); use 'kd' or 'mse_logits' for a single output."
            )

    def forward(self, batch: LossBatch) -> torch.Tensor:
        t_logits, labels = batch.teacher_logits, batch.labels
        assert t_logits is not None, "dkd needs teacher logits"
        zs = f32(batch.student_logits) / self.temperature  # (B, C)
        zt = f32(t_logits) / self.temperature  # (B, C)
        g = zt.argmax(dim=1)  # (B,)
        if labels is not None:
            g = labels if self.all_labeled else torch.where(labels >= 0, labels, g)
        target = F.one_hot(g, zs.shape[1]).bool()  # (B, C)
        tckd, nckd = _split_kl(zt, zs, target)  # (B,), (B,)
        t2 = self.temperature * self.temperature
        return (self.alpha * tckd + self.beta * nckd).mean() * t2


def _split_kl(
    zt: torch.Tensor, zs: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row TCKD and NCKD (both (B,)) of teacher and student logits already divided by T."""
    lse_t, lse_s = zt.logsumexp(dim=1), zs.logsumexp(dim=1)  # (B,)
    nt_t = zt.masked_fill(target, float("-inf"))  # (B, C), target class removed
    nt_s = zs.masked_fill(target, float("-inf"))
    lse_nt_t, lse_nt_s = nt_t.logsumexp(dim=1), nt_s.logsumexp(dim=1)  # (B,)
    # Binary distributions [p_g, 1 - p_g] in log space: (B, 2).
    lb_t = torch.stack([(zt * target).sum(dim=1) - lse_t, lse_nt_t - lse_t], dim=1)
    lb_s = torch.stack([(zs * target).sum(dim=1) - lse_s, lse_nt_s - lse_s], dim=1)
    tckd = (lb_t.exp() * (lb_t - lb_s)).sum(dim=1)  # (B,)
    log_pt = nt_t - lse_nt_t.unsqueeze(1)  # (B, C), -inf at the target
    log_ps = nt_s - lse_nt_s.unsqueeze(1)
    inner = log_pt.exp() * (log_pt - log_ps)  # NaN at the target (0 * (-inf + inf))
    nckd = inner.masked_fill(target, 0.0).sum(dim=1)  # (B,)
    return tckd, nckd


LOSSES: dict[str, type[LossTerm]] = {
    cls.name: cls
    for cls in (KDLoss, CELoss, HardLoss, MSELogitsLoss, HintLoss, AttentionLoss, RKDLoss, DKDLoss)
}


class WeightedLoss(nn.Module):
    """Total = sum_i w_i * L_i over named terms; also returns each unweighted L_i.

    Terms that read features name them: `student_layers` (module paths the training loop
    hooks) and `teacher_tensors` (names of the cached teacher tensors). bind() builds the
    terms' own parameters (projections) from the measured shapes; train() then gives
    `parameters()` to the optimizer beside the student's and checkpoints `state_dict()`.
    """

    def __init__(self, terms: list[tuple[str, float, LossTerm]]):
        super().__init__()
        self.terms = terms
        self.term_modules = nn.ModuleList([term for _, _, term in terms])
        # Zero-weight terms are kept for the record but never computed.
        self._active = [(key, float(w), term) for key, w, term in terms if w > 0]
        self.needs_labels = any(t.needs_labels for _, _, t in self._active)
        self.needs_teacher = any(t.needs_teacher for _, _, t in self._active)
        layers = [t.student_layer for _, _, t in self._active if t.student_layer is not None]
        tensors = [t.teacher_tensor for _, _, t in self._active if t.teacher_tensor is not None]
        self.student_layers: tuple[str, ...] = tuple(dict.fromkeys(layers))
        self.teacher_tensors: tuple[str, ...] = tuple(dict.fromkeys(tensors))

    @property
    def active_names(self) -> list[str]:
        """Names of the terms that forward() computes and returns, in order."""
        return [key for key, _, _ in self._active]

    def bind(
        self,
        student_shapes: Mapping[str, Sequence[int]],
        teacher_shapes: Mapping[str, Sequence[int]],
        classes: int,
    ) -> None:
        """Let every active term build its parameters from per-sample shapes (no batch dim)."""
        for _, _, term in self._active:
            term.bind(
                student_shapes.get(term.student_layer) if term.student_layer else None,
                teacher_shapes.get(term.teacher_tensor) if term.teacher_tensor else None,
                classes,
            )

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
        student_features: dict[str, torch.Tensor] | None = None,
        teacher_features: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = LossBatch(
            student_logits, teacher_logits, labels, student_features or {}, teacher_features or {}
        )
        parts: dict[str, torch.Tensor] = {}
        total: torch.Tensor | None = None
        for key, weight, term in self._active:
            # forward() directly: nn.Module.__call__ costs ~2 us a term per step on CPU, which
            # shows on small students; hooks on loss terms are moot.
            value = term.forward(batch)  # ()
            parts[key] = value
            weighted = value if weight == 1.0 else weight * value
            total = weighted if total is None else total + weighted
        if total is None:
            total = student_logits.new_zeros((), dtype=torch.float32)
        return total, parts


def _parse(spec: dict[str, Any]) -> tuple[str, float, dict[str, Any]]:
    """(name, weight, the term's own parameters) from the catalog's schema, or a sentence."""
    name = spec["name"]
    if name not in SCHEMAS:
        raise DistillError(
            f"Unknown loss term {name!r}; valid loss terms are: {', '.join(sorted(SCHEMAS))}."
        )
    fields = SCHEMAS[name].model_fields
    unknown = sorted(set(spec) - set(fields))
    if unknown:
        raise DistillError(
            f"Unknown key {unknown[0]!r} in loss term {name!r}; valid keys are: "
            f"{', '.join(sorted(fields))}."
        )
    try:
        parsed = SCHEMAS[name].model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "term"
        raise DistillError(
            f"The {where} of loss term {name!r} is invalid ({first['msg']}), got "
            f"{first.get('input')!r}; see GET /v1/losses for its parameters."
        ) from exc
    params = parsed.model_dump(exclude={"name", "weight"})
    return name, parsed.weight, params


def build_loss(terms: list[dict[str, Any]], default_layer: str | None = None) -> WeightedLoss:
    """Build a weighted loss from specs like [{"name": "kd", "weight": 0.9, "temperature": 4}].

    `default_layer` is the student module path a feature term reads when its student_layer
    is null (the zoo family's first feature layer); rkd's null means the logits instead."""
    if not isinstance(terms, list) or not terms:
        raise DistillError(
            "The loss must be a non-empty list of terms, e.g. "
            '[{"name": "kd", "weight": 0.9}, {"name": "ce", "weight": 0.1}].'
        )
    built: list[tuple[str, float, LossTerm]] = []
    for spec in terms:
        if not isinstance(spec, dict) or "name" not in spec:
            raise DistillError(f'Each loss term must be an object with a "name", got {spec!r}.')
        name, weight, params = _parse(spec)
        if any(key == name for key, _, _ in built):
            raise DistillError(
                f"The loss term {name!r} appears twice; give it once with the summed weight."
            )
        if name in ("hint", "attention") and params["student_layer"] is None:
            if default_layer is None:
                raise DistillError(
                    f"The loss term {name!r} needs a student_layer (a module path of the "
                    "student, e.g. 'features'); this student has no default feature layer."
                )
            params["student_layer"] = default_layer
        built.append((name, float(weight), LOSSES[name](**params)))
    if all(w == 0 for _, w, _ in built):
        raise DistillError("All loss weights are 0; give at least one term a weight > 0.")
    return WeightedLoss(built)
