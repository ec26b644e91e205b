"""Schema pieces every resource uses: UTC timestamps and cursor pages."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from core import repository
from service.errors import Unprocessable


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every one we store is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, row_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), row_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise Unprocessable(
            "The cursor is not one this API returned; pass next_cursor from the previous page."
        ) from exc


async def paginate(
    session: AsyncSession,
    entity: Any,
    tenant_id: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    after = decode_cursor(cursor) if cursor else None
    rows = list(await session.scalars(repository.page(entity, tenant_id, limit + 1, after)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    return rows, next_cursor
