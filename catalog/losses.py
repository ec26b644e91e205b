"""The loss terms a job may combine: each one's parameter schema (a pydantic model with
its own fields, its defaults in them), its paper, and what it needs.

A job's `losses` is a list of these, told apart by `name`; each term has a `weight` and
only its own parameters, so an unknown parameter is refused at submission with the list
of valid ones. The engine (distill/losses.py) builds each term from the same parsed
model, and a test keeps its registry and `LOSSES` the same set.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

# A tensor name or module path: printable, at most 256 characters.
Name = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


class LossParams(BaseModel):
    """Base of every term: `name`, `weight`, and the term's own parameters."""

    model_config = ConfigDict(extra="forbid")
    name: str
    weight: float = Field(default=1.0, ge=0.0, le=1e6, allow_inf_nan=False)

    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    needs_teacher: ClassVar[bool] = True
    # Reads intermediate tensors: the student's through forward hooks, the teacher's as
    # extra ONNX graph outputs cached beside its logits (cached teacher outputs only).
    needs_tensors: ClassVar[bool] = False

    @property
    def uses_tensors(self) -> bool:
        """Whether this term reads intermediate tensors (a teacher tensor, a student layer)."""
        return self.needs_tensors

    def engine_dict(self) -> dict[str, Any]:
        """The term as distill.losses.build_loss takes it."""
        return self.model_dump()


class KDParams(LossParams):
    name: Literal["kd"] = "kd"
    temperature: float = Field(default=4.0, gt=0.0, le=1e3, allow_inf_nan=False)

    paper: ClassVar[str] = "Hinton, Vinyals, Dean 2015, arXiv:1503.02531"
    summary: ClassVar[str] = "KL divergence between temperature-softened teacher and student."


class CEParams(LossParams):
    name: Literal["ce"] = "ce"

    paper: ClassVar[str] = "Hinton, Vinyals, Dean 2015 (the hard-target term)"
    summary: ClassVar[str] = "Cross-entropy with the ground-truth labels; unlabeled rows skipped."
    needs_labels: ClassVar[bool] = True
    needs_teacher: ClassVar[bool] = False


class HardParams(LossParams):
    name: Literal["hard"] = "hard"

    paper: ClassVar[str] = "Lee 2013, Pseudo-Label; Touvron et al. 2021, DeiT, arXiv:2012.12877"
    summary: ClassVar[str] = "Cross-entropy with the teacher's argmax as the label."


class MSELogitsParams(LossParams):
    name: Literal["mse_logits"] = "mse_logits"

    paper: ClassVar[str] = "Ba & Caruana 2014, Do Deep Nets Really Need to be Deep?"
    summary: ClassVar[str] = "Mean squared error between student and teacher logits."


class HintParams(LossParams):
    name: Literal["hint"] = "hint"
    teacher_tensor: Name = Field(
        description="The teacher's intermediate tensor (one of GET /v1/models/{id} `tensors`).",
    )
    student_layer: Name | None = Field(
        default=None,
        description="Module path in the student whose output is hinted; null: the family's "
        "first feature layer.",
    )

    paper: ClassVar[str] = "Romero et al. 2015, FitNets: Hints for Thin Deep Nets, arXiv:1412.6550"
    summary: ClassVar[str] = (
        "Mean squared error between a teacher tensor and a learned projection of a student "
        "layer's output."
    )
    needs_tensors: ClassVar[bool] = True


class AttentionParams(LossParams):
    name: Literal["attention"] = "attention"
    teacher_tensor: Name = Field(
        description="The teacher's intermediate tensor, (B, C, ...) with spatial dims.",
    )
    student_layer: Name | None = Field(
        default=None,
        description="Module path in the student, (B, C, ...) with spatial dims; null: the "
        "family's first feature layer.",
    )
    p: float = Field(default=2.0, gt=0.0, le=8.0, allow_inf_nan=False)

    paper: ClassVar[str] = (
        "Zagoruyko & Komodakis 2017, Paying More Attention to Attention, arXiv:1612.03928"
    )
    summary: ClassVar[str] = (
        "Squared distance between the L2-normalized spatial attention maps mean_c |F_c|^p of "
        "a student layer and a teacher tensor."
    )
    needs_tensors: ClassVar[bool] = True


class RKDParams(LossParams):
    name: Literal["rkd"] = "rkd"
    distance_weight: float = Field(default=25.0, ge=0.0, le=1e6, allow_inf_nan=False)
    angle_weight: float = Field(default=50.0, ge=0.0, le=1e6, allow_inf_nan=False)
    teacher_tensor: Name | None = Field(
        default=None,
        description="The teacher's tensor whose sample-to-sample relations are matched; "
        "null: the teacher's logits.",
    )
    student_layer: Name | None = Field(
        default=None,
        description="Module path in the student; null: the student's logits.",
    )

    paper: ClassVar[str] = (
        "Park, Kim, Lu, Cho 2019, Relational Knowledge Distillation, arXiv:1904.05068"
    )
    summary: ClassVar[str] = (
        "Matches the pairwise distances and triplet angles between the samples of a batch; "
        "by default on the logits (no tensor needed), or on a named tensor and layer."
    )

    @property
    def uses_tensors(self) -> bool:
        return self.teacher_tensor is not None or self.student_layer is not None


class DKDParams(LossParams):
    name: Literal["dkd"] = "dkd"
    alpha: float = Field(default=1.0, ge=0.0, le=1e3, allow_inf_nan=False)
    beta: float = Field(default=8.0, ge=0.0, le=1e3, allow_inf_nan=False)
    temperature: float = Field(default=4.0, gt=0.0, le=1e3, allow_inf_nan=False)

    paper: ClassVar[str] = (
        "Zhao, Cui, Song, Qiu, Liang 2022, Decoupled Knowledge Distillation, arXiv:2203.08679"
    )
    summary: ClassVar[str] = (
        "alpha * TCKD (target vs rest) + beta * NCKD (among the non-target classes); the "
        "target is the label, or the teacher's argmax on unlabeled rows."
    )


LOSSES: dict[str, type[LossParams]] = {
    cls.model_fields["name"].default: cls
    for cls in (
        KDParams,
        CEParams,
        HardParams,
        MSELogitsParams,
        HintParams,
        AttentionParams,
        RKDParams,
        DKDParams,
    )
}


def loss_name_of(value: Any) -> str | None:
    """The discriminator of a loss term: its `name`."""
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    return name if isinstance(name, str) else None


LossSpec = Annotated[
    Annotated[KDParams, Tag("kd")]
    | Annotated[CEParams, Tag("ce")]
    | Annotated[HardParams, Tag("hard")]
    | Annotated[MSELogitsParams, Tag("mse_logits")]
    | Annotated[HintParams, Tag("hint")]
    | Annotated[AttentionParams, Tag("attention")]
    | Annotated[RKDParams, Tag("rkd")]
    | Annotated[DKDParams, Tag("dkd")],
    Discriminator(loss_name_of),
]
"""One loss term as a job gives it, parsed by the model its `name` picks."""


def check_term(raw: Any) -> None:
    """Raise ValueError with a sentence for an unknown loss name or parameter, before the
    union parses the term (pydantic's own messages name neither the valid names nor the
    term's valid parameters)."""
    if not isinstance(raw, dict):
        return  # pydantic says it is not an object
    name = raw.get("name")
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    fields = LOSSES[name].model_fields
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(
            f"loss {name!r} takes no parameter {unknown[0]!r}; valid: {', '.join(fields)}"
        )


def describe() -> list[dict[str, Any]]:
    """The registry as GET /v1/losses lists it."""
    items = []
    for name, cls in LOSSES.items():
        schema = cls.model_json_schema()
        defaults = {
            key: field.default
            for key, field in cls.model_fields.items()
            if key != "name" and not field.is_required()
        }
        items.append(
            {
                "name": name,
                "paper": cls.paper,
                "summary": cls.summary,
                "params_schema": schema,
                "defaults": defaults,
                "needs_labels": cls.needs_labels,
                "needs_teacher": cls.needs_teacher,
                "needs_tensors": cls.needs_tensors,
            }
        )
    return items
