"""The student zoo: small architectures built by name from a JSON-able params dict."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from distill.errors import DistillError


def _check_keys(architecture: str, params: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise DistillError(
            f"Unknown parameter {unknown[0]!r} for student architecture {architecture!r}; "
            f"valid parameters are: {', '.join(sorted(allowed))}."
        )


def _positive_int(architecture: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DistillError(
            f"The parameter {key!r} of student architecture {architecture!r} must be a positive "
            f"integer, got {value!r}."
        )
    return value


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU -> Dropout?] * len(hidden) -> Linear."""

    def __init__(self, in_features: int, hidden: list[int], num_classes: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B, C)
        return self.net(x)


class CNN1d(nn.Module):
    """[Conv1d -> BatchNorm1d -> ReLU] * layers -> global average pool -> Linear.

    A flat sample of length L is read as one channel (1, L); a 2-D sample (C, L) as is.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        channels: int,
        layers: int,
        kernel_size: int,
        num_classes: int,
    ):
        super().__init__()
        # Flat samples (incl. images flattened by the user) become a single-channel signal.
        self.in_shape = (1, math.prod(input_shape)) if len(input_shape) != 2 else input_shape
        blocks: list[nn.Module] = []
        c_in = self.in_shape[0]
        for _ in range(layers):
            blocks += [
                nn.Conv1d(c_in, channels, kernel_size, padding=kernel_size // 2, bias=False),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
            ]
            c_in = channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B, C)
        x = x.reshape(x.shape[0], *self.in_shape)  # (B, C_in, L)
        h = self.features(x)  # (B, channels, L')
        return self.head(h.mean(dim=2))  # (B, channels) -> (B, num_classes)


def _build_mlp(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    _check_keys("mlp", params, {"hidden", "dropout"})
    hidden = params.get("hidden", [64])
    if not isinstance(hidden, list | tuple):
        raise DistillError(
            f"The parameter 'hidden' of student architecture 'mlp' must be a list of layer "
            f"widths, got {hidden!r}."
        )
    hidden = [_positive_int("mlp", "hidden", h) for h in hidden]
    dropout = params.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise DistillError(
            f"The parameter 'dropout' of student architecture 'mlp' must be a number in [0, 1), "
            f"got {dropout!r}."
        )
    return MLP(math.prod(input_shape), hidden, num_classes, float(dropout))


def _build_cnn1d(
    params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    _check_keys("cnn1d", params, {"channels", "layers", "kernel_size"})
    channels = _positive_int("cnn1d", "channels", params.get("channels", 16))
    layers = _positive_int("cnn1d", "layers", params.get("layers", 2))
    kernel_size = _positive_int("cnn1d", "kernel_size", params.get("kernel_size", 3))
    if len(input_shape) > 2:
        raise DistillError(
            f"The student architecture 'cnn1d' takes samples of shape (L,) or (C, L), got "
            f"{tuple(input_shape)}; flatten the samples or use 'mlp'."
        )
    return CNN1d(tuple(input_shape), channels, layers, kernel_size, num_classes)


Builder = Callable[[dict[str, Any], tuple[int, ...], int], nn.Module]

STUDENTS: dict[str, Builder] = {
    "mlp": _build_mlp,
    "cnn1d": _build_cnn1d,
}


def build_student(
    architecture: str, params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Build a zoo student for samples of `input_shape` (no batch dim) and `num_classes` outputs."""
    if architecture not in STUDENTS:
        raise DistillError(
            f"Unknown student architecture {architecture!r}; valid architectures are: "
            f"{', '.join(sorted(STUDENTS))}."
        )
    if not isinstance(params, dict):
        raise DistillError(f"Student params must be a JSON object (dict), got {params!r}.")
    try:
        shape = tuple(operator.index(d) for d in input_shape)
    except TypeError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise DistillError(
            f"The student input shape must be a non-empty list of positive integers (one "
            f"sample, no batch dimension), got {list(shape)}."
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise DistillError(
            f"The number of classes must be a positive integer, got {num_classes!r}."
        )
    return STUDENTS[architecture](params, shape, num_classes)


def count_params(model: nn.Module) -> int:
    """Number of trainable and frozen parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
