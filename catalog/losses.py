"""The loss terms a job may combine: each one's parameter schema (a pydantic model with
its own fields, its defaults in them), its paper, and what it needs.

A job's `losses` is a list of these, told apart by `name`; each term has a `weight` and
only its own parameters, so an unknown parameter is refused at submission with the list
of valid ones. The engine (distill/losses.py) builds each term from the same parsed
model, and a test keeps its registry and `LOSSES` the same set.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class LossParams(BaseModel):
    """Base of every term: `name`, `weight`, and the term's own parameters."""

    model_config = ConfigDict(extra="forbid")
    name: str
    weight: float = Field(default=1.0, ge=0.0, le=1e6, allow_inf_nan=False)

    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    needs_teacher: ClassVar[bool] = True

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


LOSSES: dict[str, type[LossParams]] = {
    cls.model_fields["name"].default: cls
    for cls in (KDParams, CEParams, HardParams, MSELogitsParams)
}
