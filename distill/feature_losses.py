"""Feature-level loss terms: FitNets hints, attention transfer, relational KD.

Each reads a student module's output (kept by distill.features' forward hooks, addressed by
module path) and a teacher's named intermediate tensor (cached beside its logits), both
(B, ...) with the batch first. Shapes below leave out nothing: (B, C, *S) is channels then
any number of spatial (or time) dims S.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import DistillError
from distill.loss_base import LossBatch, LossTerm, f32

_POOLS = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
_CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _pool_to(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """x (B, C, *S) average-pooled to (B, C, *size); as is when S already is `size`."""
    if tuple(x.shape[2:]) == size:
        return x
    return _POOLS[len(size)](x, size)  # type: ignore[arg-type]


def _shape(shape: Sequence[int] | None, what: str, term: str) -> tuple[int, ...]:
    if shape is None:
        raise DistillError(f"The '{term}' loss has no {what} to read; name one in its parameters.")
    return tuple(int(d) for d in shape)


class HintLoss(LossTerm):
    """FitNets hint. Romero, Ballas, Kahou, Chassang, Gatta, Bengio 2015, "FitNets: Hints for
    Thin Deep Nets", ICLR, arXiv:1412.6550.

        L = (1/(B*D)) * sum_b || r(s_b) - t_b ||_2^2,   D = elements of one t_b

    s_b is the student layer's output, t_b the teacher tensor, and r a learned regressor
    trained with the student (FitNets trains it in a first stage; here, jointly with the
    other terms). When both are (C, *S) with the same number of spatial dims (1 to 3), r is
    a 1x1 convolution C_s -> C_t (the paper's convolutional regressor) followed by an
    adaptive average pool to the teacher's spatial size; otherwise both are flattened and r
    is a linear map D_s -> D_t.
    """

    name = "hint"
    needs_teacher = True

    def __init__(self, teacher_tensor: str, student_layer: str) -> None:
        super().__init__()
        self.teacher_tensor, self.student_layer = teacher_tensor, student_layer
        self._tensor, self._layer = teacher_tensor, student_layer  # typed str for forward()
        self.regressor: nn.Module = nn.Identity()
        self._size: tuple[int, ...] = ()
        self._flat = True

    def bind(
        self, student_shape: Sequence[int] | None, teacher_shape: Sequence[int] | None, classes: int
    ) -> None:
        s = _shape(student_shape, "student layer", self.name)
        t = _shape(teacher_shape, "teacher tensor", self.name)
        spatial = len(t) - 1
        self._flat = not (len(s) == len(t) and 1 <= spatial <= 3)
        if self._flat:
            self.regressor = nn.Linear(math.prod(s), math.prod(t))
        else:
            self.regressor = _CONVS[spatial](s[0], t[0], kernel_size=1)
            self._size = t[1:]

    def forward(self, batch: LossBatch) -> torch.Tensor:
        s = f32(batch.student_features[self._layer])  # (B, C_s, *S_s) or (B, ...)
        t = f32(batch.teacher_features[self._tensor])  # (B, C_t, *S_t) or (B, ...)
        if self._flat:
            return F.mse_loss(self.regressor(s.flatten(1)), t.flatten(1))  # (B, D_t)
        return F.mse_loss(_pool_to(self.regressor(s), self._size), t)  # (B, C_t, *S_t)


def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """(B, C, *S) -> (B, *S): mean_c |f_c|^p, the spatial attention of Zagoruyko & Komodakis."""
    return f.abs().pow(p).mean(dim=1) if p != 2.0 else f.pow(2).mean(dim=1)


class AttentionLoss(LossTerm):
    """Attention transfer. Zagoruyko & Komodakis 2017, "Paying More Attention to Attention:
    Improving the Performance of Convolutional Neural Networks via Attention Transfer", ICLR,
    arXiv:1612.03928.

        Q = vec( mean_c |F_c|^p )          (B, prod S), the spatial attention map
        a = Q / ||Q||_2                    (per sample)
        L = (1/(B*J)) * sum_{b,j} (a^S_bj - a^T_bj)^2

    This is the authors' code's form, `(at(x) - at(y)).pow(2).mean()`, of the paper's
    beta/2 * sum_j || a^S_j - a^T_j ||_p with p = 2 (scaled by a constant). F is (B, C, *S);
    the channel count may differ between student and teacher. When the spatial sizes
    differ, the student's map is average-pooled to the teacher's.
    """

    name = "attention"
    needs_teacher = True

    def __init__(self, teacher_tensor: str, student_layer: str, p: float = 2.0) -> None:
        super().__init__()
        self.teacher_tensor, self.student_layer, self.p = teacher_tensor, student_layer, float(p)
        self._tensor, self._layer = teacher_tensor, student_layer  # typed str for forward()
        self._size: tuple[int, ...] = ()

    def bind(
        self, student_shape: Sequence[int] | None, teacher_shape: Sequence[int] | None, classes: int
    ) -> None:
        s = _shape(student_shape, "student layer", self.name)
        t = _shape(teacher_shape, "teacher tensor", self.name)
        if len(s) < 2 or len(t) < 2 or len(s) != len(t) or len(t) > 4:
            raise DistillError(
                f"The 'attention' loss needs (C, ...) maps with 1 to 3 spatial dims on both "
                f"sides, but student layer {self.student_layer!r} gives {list(s)} and teacher "
                f"tensor {self.teacher_tensor!r} gives {list(t)} per sample; pick a "
                "convolutional layer and tensor, or use 'hint'."
            )
        self._size = t[1:]

    def forward(self, batch: LossBatch) -> torch.Tensor:
        s = f32(batch.student_features[self._layer])  # (B, C_s, *S_s)
        t = f32(batch.teacher_features[self._tensor])  # (B, C_t, *S_t)
        qs = _pool_to(attention_map(s, self.p).unsqueeze(1), self._size)  # (B, 1, *S_t)
        a_s = F.normalize(qs.flatten(1), dim=1)  # (B, J)
        a_t = F.normalize(attention_map(t, self.p).flatten(1), dim=1)  # (B, J)
        return (a_s - a_t).pow(2).mean()


def _distances(e: torch.Tensor, off: torch.Tensor, pairs: int) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances divided by their mean over the pairs i != j."""
    sq = e.pow(2).sum(dim=1)  # (B,)
    d2 = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2.0 * (e @ e.t())).clamp(min=1e-12)  # (B, B)
    d = d2.sqrt() * off  # (B, B), 0 on the diagonal
    return d / (d.sum() / pairs).clamp(min=1e-12)


def _angles(e: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B, B): cos of the angle at e_j between e_i and e_k, [j, i, k]."""
    u = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # (B, B, D): e_i - e_j at [j, i]
    return torch.bmm(u, u.transpose(1, 2))  # (B, B, B)


class RKDLoss(LossTerm):
    """Relational KD. Park, Kim, Lu, Cho 2019, "Relational Knowledge Distillation", CVPR,
    arXiv:1904.05068. It matches how samples relate, not where they are, so the student's
    and the teacher's widths may differ.

        psi_D(i, j) = ||e_i - e_j||_2 / mu,  mu = mean over pairs i != j of ||e_i - e_j||_2
        L_D = (1/(B(B-1))) * sum_{i != j} huber(psi_D^S(i, j) - psi_D^T(i, j))
        psi_A(i, j, k) = < (e_i - e_j)/||e_i - e_j||, (e_k - e_j)/||e_k - e_j|| >
        L_A = (1/B^3) * sum_{i,j,k} huber(psi_A^S(i, j, k) - psi_A^T(i, j, k))
        L = distance_weight * L_D + angle_weight * L_A

    huber is smooth L1 with threshold 1 (the paper's choice); degenerate triplets (i = j or
    k = j) are 0 on both sides, as in the authors' code. e is the flattened (B, D) output of
    `student_layer` and the teacher tensor; by default the logits on both sides, which every
    teacher has, so rkd works without naming a tensor. Cost: O(B^2 D + B^3) per step.
    """

    name = "rkd"
    needs_teacher = True

    def __init__(
        self,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        teacher_tensor: str | None = None,
        student_layer: str | None = None,
    ) -> None:
        super().__init__()
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)
        self.teacher_tensor, self.student_layer = teacher_tensor, student_layer

    def forward(self, batch: LossBatch) -> torch.Tensor:
        s = (
            batch.student_logits
            if self.student_layer is None
            else (batch.student_features[self.student_layer])
        )
        t = (
            batch.teacher_logits
            if self.teacher_tensor is None
            else (batch.teacher_features[self.teacher_tensor])
        )
        assert t is not None, "rkd needs the teacher"
        s, t = f32(s).flatten(1), f32(t).flatten(1).detach()  # (B, D_s), (B, D_t)
        b = s.shape[0]
        off = 1.0 - torch.eye(b, device=s.device, dtype=s.dtype)  # (B, B)
        pairs = max(b * (b - 1), 1)
        loss = s.new_zeros(())
        if self.distance_weight > 0:
            with torch.no_grad():
                dt = _distances(t, off, pairs)
            diff = F.smooth_l1_loss(_distances(s, off, pairs), dt, reduction="none") * off
            loss = loss + self.distance_weight * diff.sum() / pairs
        if self.angle_weight > 0:
            with torch.no_grad():
                at = _angles(t)
            loss = loss + self.angle_weight * F.smooth_l1_loss(_angles(s), at)
        return loss
