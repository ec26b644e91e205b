"""The student zoo: small architectures built by name from a JSON-able params dict, parsed
with the family's schema in catalog/students.py (the gateway validates with the same one)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from catalog.students import StudentParams, parse_params, shape_problem, unknown_param_sentence
from distill.errors import DistillError
from distill.student_nets import CNN2d, GRUNet, TransformerNet


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU -> Dropout?] * len(hidden) -> Linear."""

    token_input = False

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
        # The feature layer: the last hidden activation (B, hidden[-1]). An Identity beside
        # `net`, not in it, so the state-dict keys (net.1.weight, ...) stay those of saved
        # models.
        self.hidden = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B, C)
        *body, head = self.net
        for layer in body:
            x = layer(x)
        return head(self.hidden(x))  # (B, hidden[-1]) -> (B, C)


class CNN1d(nn.Module):
    """[Conv1d -> BatchNorm1d -> ReLU] * layers -> global average pool -> Linear.

    A flat sample of length L is read as one channel (1, L); a 2-D sample (C, L) as is.
    """

    token_input = False

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


Builder = Callable[[Any, tuple[int, ...], int], nn.Module]

STUDENTS: dict[str, Builder] = {
    "mlp": lambda p, shape, classes: MLP(math.prod(shape), p.hidden, classes, p.dropout),
    "cnn1d": lambda p, shape, classes: CNN1d(shape, p.channels, p.layers, p.kernel_size, classes),
    "cnn2d": CNN2d,
    "gru": GRUNet,
    "transformer": TransformerNet,
}


def _params_sentence(architecture: str, exc: ValidationError) -> str:
    """pydantic's first error as one sentence, naming the parameter."""
    error = exc.errors()[0]
    # ("hidden", 0) reads as hidden[0]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])[1:]
    if error.get("type") == "extra_forbidden":
        sentence = unknown_param_sentence(architecture, field)
        return sentence[0].upper() + sentence[1:] + "."
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    if not field:
        return f"The parameters of student architecture {architecture!r} are invalid: {message}."
    return (
        f"The parameter {field!r} of student architecture {architecture!r} is invalid: {message}."
    )


def parse_student_params(architecture: str, params: dict[str, Any]) -> StudentParams:
    """The family's parsed parameters, or a DistillError sentence for a bad one."""
    if architecture not in STUDENTS:
        raise DistillError(
            f"Unknown student architecture {architecture!r}; valid architectures are: "
            f"{', '.join(sorted(STUDENTS))}."
        )
    if not isinstance(params, dict):
        raise DistillError(f"Student params must be a JSON object (dict), got {params!r}.")
    try:
        return parse_params(architecture, params)
    except ValidationError as exc:
        raise DistillError(_params_sentence(architecture, exc)) from exc


def build_student(
    architecture: str, params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Build a zoo student for samples of `input_shape` (no batch dim) and `num_classes` outputs."""
    parsed = parse_student_params(architecture, params)
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
    problem = shape_problem(architecture, parsed, shape)
    if problem is not None:
        raise DistillError(problem)
    return STUDENTS[architecture](parsed, shape, num_classes)


def input_dtype(model: nn.Module) -> torch.dtype:
    """What the model's input is: int64 token ids for a student built with vocab_size
    (its first layer an Embedding), else float32."""
    return torch.int64 if getattr(model, "token_input", False) else torch.float32


def example_input(model: nn.Module, n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """`n` seeded sample rows (n, *shape) the model takes: standard normal floats, or
    token ids drawn uniformly from 0..vocab_size-1 for a token student."""
    generator = torch.Generator().manual_seed(seed)
    if getattr(model, "token_input", False):
        vocab = next(m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding))
        return torch.randint(0, vocab, (n, *shape), generator=generator)
    return torch.randn(n, *shape, generator=generator)


def check_token_ids(model: nn.Module, x: Any, what: str, chunk: int = 1 << 20) -> None:
    """Token ids must be integers in 0..vocab_size-1: an id out of range would index past
    the embedding (a device-side assert on CUDA). Reads x in chunks (it may be mapped)."""
    if not getattr(model, "token_input", False):
        return
    vocab = next(m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding))
    if x.dtype.kind not in "iu":
        raise DistillError(
            f"The student reads token ids (vocab_size {vocab}) but the {what} inputs are "
            f"{x.dtype}; upload integer ids, or leave vocab_size out for float sequences."
        )
    per_row = max(1, math.prod(x.shape[1:]))
    rows = max(1, chunk // per_row)
    for start in range(0, len(x), rows):
        part = np.asarray(x[start : start + rows])  # (b, ...): an array or a mapped file's rows
        if part.size and (int(part.min()) < 0 or int(part.max()) >= vocab):
            raise DistillError(
                f"The {what} inputs hold token ids in [{int(part.min())}, {int(part.max())}] "
                f"but the student's vocab_size is {vocab}; set vocab_size above the largest id."
            )


def count_params(model: nn.Module) -> int:
    """Number of trainable and frozen parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
