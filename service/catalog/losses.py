"""The loss registry: which terms a job may combine, with their parameters and papers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from catalog.losses import describe
from service.deps import TenantDep
from service.errors import responses

router = APIRouter(tags=["catalog"])


class LossInfo(BaseModel):
    name: str
    paper: str
    summary: str
    params_schema: dict[str, Any]
    defaults: dict[str, Any]
    needs_labels: bool
    needs_teacher: bool
    needs_tensors: bool


class LossList(BaseModel):
    items: list[LossInfo]


@router.get("/v1/losses", response_model=LossList, responses=responses(401, 503))
async def list_losses(tenant: TenantDep) -> LossList:
    """Every loss term a job's `losses` may name, with its parameter schema and defaults."""
    return LossList(items=[LossInfo(**item) for item in describe()])
