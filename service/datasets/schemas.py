from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from service.schemas import UtcDatetime


class DatasetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    status: str
    error: str | None
    format: str
    filename: str
    sha256: str
    size_bytes: int
    num_samples: int | None
    sample_shape: list[int] | None
    num_classes: int | None
    labeled: bool | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
