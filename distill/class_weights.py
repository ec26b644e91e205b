"""Class weights for the label loss (`ce`), against class imbalance.

"balanced" gives class c the weight w_c = n / (C * n_c) (King & Zeng 2001; scikit-learn's
compute_class_weight("balanced")), n the labeled training rows, n_c those of class c and C the
output width; a class with no training row gets 1.0 (no row of it enters the loss anyway).
A list gives w_0 .. w_{C-1} as is. The `ce` term then takes the weighted mean

    L = sum_{b: y_b >= 0} -w_{y_b} log softmax(s_b)[y_b] / sum_{b: y_b >= 0} w_{y_b}

(torch's cross_entropy(weight=w) with reduction "mean"), so the loss scale stays that of an
unweighted cross-entropy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from distill.errors import DistillError
from distill.losses import CELoss, WeightedLoss


def class_weights(
    spec: str | Sequence[float] | None, labels: np.ndarray | None, num_classes: int
) -> np.ndarray | None:
    """The weights (C,) float32 for `spec` ("balanced", a list, or None), from the training
    labels (N,) (-1 = unlabeled); a sentence for a list of the wrong length or bad values."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec != "balanced":
            raise DistillError(
                f"class_weights must be 'balanced', a list of {num_classes} numbers or null, "
                f"got {spec!r}."
            )
        if labels is None or not (labels >= 0).any():
            raise DistillError(
                "class_weights 'balanced' counts the training labels but the train set has "
                "none; give the weights as a list or drop class_weights."
            )
        y = labels[labels >= 0].astype(np.int64)  # (n,)
        counts = np.bincount(y, minlength=num_classes)[:num_classes].astype(np.float64)  # (C,)
        safe = np.where(counts > 0, counts, 1.0)
        weights = np.where(counts > 0, len(y) / (num_classes * safe), 1.0)
        return weights.astype(np.float32)
    values = list(spec)
    if len(values) != num_classes:
        raise DistillError(
            f"class_weights has {len(values)} entries but the teacher has {num_classes} "
            f"classes; give one weight per class."
        )
    if any(
        isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0
        for w in values
    ):
        raise DistillError("Each class weight must be a finite number >= 0.")
    if not any(w > 0 for w in values):
        raise DistillError("All class weights are 0; give at least one class a weight > 0.")
    return np.asarray(values, dtype=np.float32)


def apply_class_weights(
    loss: WeightedLoss, weights: np.ndarray | None, device: torch.device | str = "cpu"
) -> None:
    """Give every `ce` term of `loss` the weights (C,) on `device`; None makes them unweighted."""
    tensor = None if weights is None else torch.from_numpy(weights).to(device)
    for _, _, term in loss.terms:
        if isinstance(term, CELoss):
            term.set_class_weights(tensor)
