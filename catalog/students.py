"""The student families: each one's parameter schema (a pydantic model, its defaults in
the fields), the module paths of its feature layers, and its parameter count.

`FAMILIES` is the registry. The gateway validates `student.params` with the family's
`params` model (an unknown or out-of-range parameter is a 422 at submission) and counts
the student's parameters before the job is queued; the engine (distill/students.py)
builds the model from the same parsed parameters, and a test holds each count equal to
the built model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

# Layer widths stay below this: a bigger value is a typo, and the size limit refuses the
# student by its parameter count long before (STILLHOUSE_MAX_STUDENT_PARAMS).
MAX_WIDTH = 1 << 24
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]


class StudentParams(BaseModel):
    """Base of every family's parameters: unknown names are refused, and values are taken
    as JSON types without coercion (no "8" for 8, no true for 1, no 2.0 for a width)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class MLPParams(StudentParams):
    hidden: list[Width] = Field(
        default_factory=lambda: [64],
        max_length=32,
        description="Widths of the hidden layers, in order; [] is a linear model.",
    )
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer."
    )


class CNN1dParams(StudentParams):
    channels: int = Field(default=16, ge=1, le=4096, description="Channels of every conv layer.")
    layers: int = Field(default=2, ge=1, le=64, description="Conv -> BatchNorm -> ReLU blocks.")
    kernel_size: int = Field(default=3, ge=1, le=255, description="Kernel width of every conv.")


class CNN2dParams(StudentParams):
    channels: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=lambda: [16, 32],
        min_length=1,
        max_length=8,
        description=(
            "Channels of each residual stage, in order; every stage after the first halves "
            "the height and width (stride 2)."
        ),
    )
    blocks: int = Field(default=1, ge=1, le=16, description="Residual blocks per stage.")


def _needs_vocab(value: Any, info: ValidationInfo) -> Any:
    """embed_dim given without vocab_size: float sequences are not embedded."""
    if value is not None and info.data.get("vocab_size") is None:
        raise ValueError(
            "embed_dim applies to token ids only; set vocab_size too, or leave embed_dim out "
            "for (T, F) float sequences"
        )
    return value


class SequenceParams(StudentParams):
    """What the sequence families share: (T, F) float samples, or (T,) int64 token ids when
    `vocab_size` is set (ids in 0..vocab_size-1, embedded to `embed_dim`)."""

    vocab_size: int | None = Field(
        default=None,
        ge=2,
        le=10_000_000,
        description="Set for (T,) int64 token-id samples: ids run over 0..vocab_size-1.",
    )


class GRUParams(SequenceParams):
    hidden: int = Field(default=64, ge=1, le=16_384, description="Hidden units per direction.")
    layers: int = Field(default=1, ge=1, le=16, description="Stacked GRU layers.")
    bidirectional: bool = Field(default=False, description="Also read the sequence backwards.")
    embed_dim: int = Field(
        default=32, ge=1, le=16_384, description="Token embedding width (with vocab_size)."
    )

    @field_validator("embed_dim")
    @classmethod
    def _embedding(cls, value: int, info: ValidationInfo) -> int:
        return _needs_vocab(value, info)


class TransformerParams(SequenceParams):
    d_model: int = Field(default=64, ge=1, le=8192, description="Width of the encoder.")
    heads: int = Field(default=4, ge=1, le=256, description="Attention heads; divide d_model.")
    layers: int = Field(default=2, ge=1, le=48, description="Encoder blocks.")
    ff: int = Field(default=128, ge=1, le=65_536, description="Feed-forward hidden width.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout in every block.")
    embed_dim: int | None = Field(
        default=None,
        ge=1,
        le=16_384,
        description="Token embedding width (with vocab_size; null: d_model, else projected).",
    )
    max_len: int | None = Field(
        default=None,
        ge=1,
        le=65_536,
        description="Positions of the learned positional embedding (null: the samples' T).",
    )

    @field_validator("heads")
    @classmethod
    def _divides(cls, value: int, info: ValidationInfo) -> int:
        d_model = info.data.get("d_model")  # absent when d_model itself was refused
        if d_model is not None and d_model % value:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by heads ({value}); each head attends "
                "over d_model / heads dimensions"
            )
        return value

    @field_validator("embed_dim")
    @classmethod
    def _embedding(cls, value: int | None, info: ValidationInfo) -> int | None:
        return _needs_vocab(value, info)


def _mlp_count(p: MLPParams, shape: Sequence[int], classes: int) -> int:
    """Linear(in, h) per hidden width, then Linear(last, classes); weights plus biases."""
    count, fan_in = 0, math.prod(shape)
    for width in [*p.hidden, classes]:
        count += fan_in * width + width
        fan_in = width
    return count


def _cnn1d_count(p: CNN1dParams, shape: Sequence[int], classes: int) -> int:
    """Per layer Conv1d(c_in, channels, k, bias=False) and BatchNorm1d (weight, bias; its
    running statistics are buffers), then Linear(channels, classes)."""
    count, c_in = 0, shape[0] if len(shape) == 2 else 1  # a flat sample is one channel
    for _ in range(p.layers):
        count += c_in * p.channels * p.kernel_size + 2 * p.channels
        c_in = p.channels
    return count + p.channels * classes + classes


def _conv_bn(c_in: int, c_out: int, k: int) -> int:
    """Conv2d(c_in, c_out, k, bias=False) then BatchNorm2d(c_out) (weight and bias)."""
    return c_in * c_out * k * k + 2 * c_out


def _cnn2d_count(p: CNN2dParams, shape: Sequence[int], classes: int) -> int:
    """Stem conv 3x3; per stage `blocks` basic residual blocks (two conv 3x3 + BN, and a
    1x1 conv + BN shortcut where the stride or the width changes); Linear head."""
    c_in = shape[0] if len(shape) == 3 else 1  # (H, W) is one channel
    count = _conv_bn(c_in, p.channels[0], 3)
    c_in = p.channels[0]
    for stage, c_out in enumerate(p.channels):
        for block in range(p.blocks):
            count += _conv_bn(c_in, c_out, 3) + _conv_bn(c_out, c_out, 3)
            if c_in != c_out or (stage > 0 and block == 0):
                count += _conv_bn(c_in, c_out, 1)
            c_in = c_out
    return count + c_in * classes + classes


def _gru_count(p: GRUParams, shape: Sequence[int], classes: int) -> int:
    """Embedding(vocab, embed_dim) for tokens; per layer and direction a GRU's three gates,
    W_ih (3H, in) + W_hh (3H, H) + two biases (3H); Linear(H * directions, classes)."""
    directions = 2 if p.bidirectional else 1
    count, fan_in = 0, shape[-1] if len(shape) == 2 else 1
    if p.vocab_size is not None:
        count, fan_in = p.vocab_size * p.embed_dim, p.embed_dim
    for _ in range(p.layers):
        count += directions * (3 * p.hidden * (fan_in + p.hidden) + 6 * p.hidden)
        fan_in = directions * p.hidden
    return count + fan_in * classes + classes


def _transformer_count(p: TransformerParams, shape: Sequence[int], classes: int) -> int:
    """Input: Linear(F, d) for floats, Embedding(vocab, e) (+ Linear(e, d) when e != d) for
    tokens; learned positions (max_len, d); per block LayerNorm, Linear(d, 3d) (q, k, v),
    Linear(d, d), LayerNorm, Linear(d, ff), Linear(ff, d); a final LayerNorm; Linear head."""
    d = p.d_model
    if p.vocab_size is None:
        features = shape[-1] if len(shape) == 2 else 1
        count = features * d + d
    else:
        embed = p.embed_dim or d
        count = p.vocab_size * embed + (embed * d + d if embed != d else 0)
    count += (p.max_len or shape[0]) * d
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * p.ff + p.ff) + (p.ff * d + d)
    return count + p.layers * block + 2 * d + d * classes + classes


def _cnn1d_shape(p: CNN1dParams, shape: Sequence[int]) -> str | None:
    if len(shape) > 2:
        return (
            f"The student architecture 'cnn1d' takes samples of shape (L,) or (C, L), got "
            f"{tuple(shape)}; flatten the samples or use 'mlp' or 'cnn2d'."
        )
    return None


def _cnn2d_shape(p: CNN2dParams, shape: Sequence[int]) -> str | None:
    if len(shape) not in (2, 3):
        return (
            f"The student architecture 'cnn2d' takes image samples of shape (H, W) or "
            f"(C, H, W), got {tuple(shape)}; upload the images unflattened (an image-folder "
            "zip or an npz of (N, C, H, W)) or use 'mlp' or 'cnn1d'."
        )
    return None


def _sequence_shape(name: str, p: SequenceParams, shape: Sequence[int]) -> str | None:
    """(T, F) float sequences ((T,) is read as one feature per step), or (T,) token ids."""
    if p.vocab_size is not None and len(shape) != 1:
        return (
            f"The student architecture '{name}' with vocab_size reads (T,) token ids, got "
            f"samples of shape {tuple(shape)}; upload one int64 id per position or leave "
            "vocab_size out for (T, F) float sequences."
        )
    if len(shape) > 2:
        return (
            f"The student architecture '{name}' takes sequences of shape (T, F) or (T,), got "
            f"{tuple(shape)}; reshape each sample to (steps, features) or use 'cnn2d'."
        )
    return None


def _transformer_shape(p: TransformerParams, shape: Sequence[int]) -> str | None:
    refused = _sequence_shape("transformer", p, shape)
    if refused is None and p.max_len is not None and shape[0] > p.max_len:
        return (
            f"The samples hold {shape[0]} positions but the transformer's max_len is "
            f"{p.max_len}; raise max_len to at least {shape[0]} or leave it out."
        )
    return refused


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    params: type[StudentParams]
    # Module paths (model.get_submodule) whose outputs a feature loss may read; the first
    # is the default `student_layer` of a feature loss.
    feature_layers: tuple[str, ...]
    # (params, sample shape without the batch dim, classes) -> parameter count.
    count: Callable[[Any, Sequence[int], int], int]
    # (params, sample shape) -> a sentence when the family cannot take such samples, else None.
    check_shape: Callable[[Any, Sequence[int]], str | None] = lambda params, shape: None
    # What a sample is: "float" features, or "float or tokens" (int64 ids with vocab_size).
    inputs: str = "float"


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            name="mlp",
            description="Flatten -> [Linear -> ReLU -> Dropout] per hidden width -> Linear.",
            params=MLPParams,
            # "hidden": the last hidden activation (B, hidden[-1]) (the flat input for []).
            feature_layers=("hidden",),
            count=_mlp_count,
        ),
        Family(
            name="cnn1d",
            description=(
                "[Conv1d -> BatchNorm -> ReLU] x layers -> global average pool -> Linear, "
                "for (L,) or (C, L) signals."
            ),
            params=CNN1dParams,
            feature_layers=("features",),  # (B, channels, L)
            count=_cnn1d_count,
            check_shape=_cnn1d_shape,
        ),
        Family(
            name="cnn2d",
            description=(
                "Conv 3x3 stem -> residual stages of basic blocks (He et al. 2016), each "
                "stage after the first at stride 2 -> global average pool -> Linear, for "
                "(C, H, W) images ((H, W) is one channel)."
            ),
            params=CNN2dParams,
            # "features": the last stage's map (B, channels[-1], H', W'); "features.0": the
            # stem's (B, channels[0], H, W).
            feature_layers=("features", "features.0"),
            count=_cnn2d_count,
            check_shape=_cnn2d_shape,
        ),
        Family(
            name="gru",
            description=(
                "[Embedding ->] GRU (Cho et al. 2014) -> the last step's hidden state (both "
                "directions' when bidirectional) -> Linear, for (T, F) sequences or (T,) "
                "int64 token ids."
            ),
            params=GRUParams,
            # "features": the pooled state (B, hidden * directions); "sequence": every
            # step's output (B, T, hidden * directions).
            feature_layers=("features", "sequence"),
            count=_gru_count,
            check_shape=lambda p, shape: _sequence_shape("gru", p, shape),
            inputs="float or tokens",
        ),
        Family(
            name="transformer",
            description=(
                "[Embedding or Linear] + learned positions -> pre-norm encoder blocks "
                "(Vaswani et al. 2017) -> LayerNorm -> mean over positions -> Linear, for "
                "(T, F) sequences or (T,) int64 token ids."
            ),
            params=TransformerParams,
            # "features": the pooled encoding (B, d_model); "sequence": the normalized
            # encoder output (B, T, d_model).
            feature_layers=("features", "sequence"),
            count=_transformer_count,
            check_shape=_transformer_shape,
            inputs="float or tokens",
        ),
    )
}
ARCHITECTURES = tuple(FAMILIES)


def parse_params(architecture: str, params: dict[str, Any]) -> StudentParams:
    """The family's parsed parameters; raises ValueError (unknown family) or pydantic's
    ValidationError (bad parameters)."""
    family = FAMILIES.get(architecture)
    if family is None:
        raise ValueError(
            f"unknown student architecture '{architecture}'; valid: {', '.join(ARCHITECTURES)}"
        )
    return family.params.model_validate(params)


def shape_problem(
    architecture: str, params: StudentParams, sample_shape: Sequence[int]
) -> str | None:
    """The family's sentence when it cannot take samples of `sample_shape`, else None."""
    return FAMILIES[architecture].check_shape(params, [int(d) for d in sample_shape])


def unknown_param_sentence(architecture: str, name: str) -> str:
    """An unknown parameter, with the valid ones named."""
    valid = ", ".join(FAMILIES[architecture].params.model_fields)
    return f"unknown parameter '{name}' for student '{architecture}'; valid parameters: {valid}"


def check_student_params(architecture: str, params: dict[str, Any]) -> StudentParams:
    """Parse `params` with the family's schema. On a bad parameter, raises pydantic's
    ValidationError located at that parameter (raised inside a validator of the job spec,
    its locations nest under student.params); an unknown name's message lists the valid
    ones."""
    family = FAMILIES[architecture]
    try:
        return family.params.model_validate(params)
    except ValidationError as exc:
        details: list[InitErrorDetails] = []
        for error in exc.errors():
            if error["type"] == "extra_forbidden":
                name = ".".join(str(p) for p in error["loc"])
                message = (
                    unknown_param_sentence(architecture, name).replace("{", "(").replace("}", ")")
                )
                kind: Any = PydanticCustomError("unknown_parameter", message)
            else:
                kind = PydanticCustomError(
                    error["type"], error["msg"].replace("{", "(").replace("}", ")")
                )
            details.append({"type": kind, "loc": error["loc"], "input": error.get("input")})
        raise ValidationError.from_exception_data(family.params.__name__, details) from None


def param_count(
    architecture: str, params: dict[str, Any], sample_shape: Sequence[int], num_classes: int
) -> int | None:
    """The student's parameter count for samples of `sample_shape` and `num_classes`
    outputs, computed without building it; None when the params or the shape are not a
    model the family builds (the job is then refused or failed with the family's sentence)."""
    family = FAMILIES.get(architecture)
    if family is None or not isinstance(params, dict):
        return None
    try:
        parsed = family.params.model_validate(params)
    except ValidationError:
        return None
    shape = [int(d) for d in sample_shape]
    if not shape or any(d < 1 for d in shape) or num_classes < 1:
        return None
    if family.check_shape(parsed, shape):
        return None
    return family.count(parsed, shape, num_classes)
