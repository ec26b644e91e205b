from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

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
    # What the upload said: {"label_column"} (CSV / Parquet), {"image_size": [H, W],
    # "channels"} (image zip); None for .npz.
    options: dict[str, Any] | None = None
    # The canonical x's dtype once inspected: float32, or int64 for integer x (token ids).
    x_dtype: str | None = None
    # An image zip's class folder names, by class id.
    classes: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_arrays(cls, value: Any) -> Any:
        arrays = getattr(value, "arrays", None)
        if isinstance(arrays, dict):
            fields = {
                name: getattr(value, name) for name in cls.model_fields if hasattr(value, name)
            }
            return {**fields, "x_dtype": arrays.get("x_dtype"), "classes": arrays.get("classes")}
        return value

    created_at: UtcDatetime
    updated_at: UtcDatetime
