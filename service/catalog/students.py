"""GET /v1/students: the student families a job may ask for, from catalog.students."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from catalog.students import FAMILIES, Family
from service.deps import TenantDep
from service.errors import responses

router = APIRouter(tags=["catalog"])


class StudentFamilyPublic(BaseModel):
    name: str = Field(description="The value of a job's student.architecture.")
    description: str
    inputs: str = Field(
        description='What a sample is: "float" features, or "float or tokens" ((T,) int64 '
        "token ids when vocab_size is set)."
    )
    params_schema: dict[str, Any] = Field(
        description="JSON schema of student.params; unknown names are refused."
    )
    defaults: dict[str, Any] = Field(description="The value of every parameter left out.")
    feature_layers: list[str] = Field(
        description="Module paths a feature loss may read (student_layer); the first is the "
        "default."
    )

    @classmethod
    def of(cls, family: Family) -> StudentFamilyPublic:
        return cls(
            name=family.name,
            description=family.description,
            inputs=family.inputs,
            params_schema=family.params.model_json_schema(),
            defaults=family.params().model_dump(mode="json"),
            feature_layers=list(family.feature_layers),
        )


class StudentFamilyList(BaseModel):
    items: list[StudentFamilyPublic]


@router.get("/v1/students", response_model=StudentFamilyList, responses=responses(401, 503))
async def list_students(tenant_id: TenantDep) -> StudentFamilyList:
    """The student families, each with its parameter schema, defaults and feature layers."""
    return StudentFamilyList(items=[StudentFamilyPublic.of(f) for f in FAMILIES.values()])
