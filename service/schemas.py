"""Schema pieces every resource uses: UTC timestamps, cursor pages, and the
parameter types whose rules belong in the OpenAPI document (ids, cursors, names)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Form, Path, Query
from pydantic import AfterValidator, BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from core import repository
from core.spec import ID_PATTERN, TEXT_PATTERN
from service.errors import Unprocessable, explain_pattern


def as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every one we store is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]

# A cursor is "<created_at in microseconds since 1970>_<id>" of the last row seen: a
# format a regular expression can state, so every cursor the schema allows is one the
# server can read (17 digits stay below the year 9999).
CURSOR_PATTERN = r"^[0-9]{1,17}_" + ID_PATTERN.removeprefix("^")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

explain_pattern(ID_PATTERN, "is not an id this API returned (ids are lowercase UUIDs)")
explain_pattern(TEXT_PATTERN, "must not contain control characters such as NUL")
explain_pattern(
    CURSOR_PATTERN, "is not a cursor this API returned; pass next_cursor from the previous page"
)

# A path id that is not well formed is answered 404 without a query (see service.errors).
IdPath = Annotated[
    str,
    Path(
        pattern=ID_PATTERN,
        description="The resource's id (a UUID).",
        examples=["3f1c9a52-8d0e-4b7a-9c61-2e5d4f7a8b90"],
    ),
]
LimitQuery = Annotated[int, Query(ge=1, le=200, description="Items per page.")]
CursorQuery = Annotated[
    str | None,
    Query(pattern=CURSOR_PATTERN, description="`next_cursor` from the previous page."),
]
NameForm = Annotated[
    str | None,
    Form(
        min_length=1,
        max_length=200,
        pattern=TEXT_PATTERN,
        description="Defaults to the file name without its suffix.",
    ),
]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return f"{(as_utc(created_at) - _EPOCH) // _MICROSECOND}_{row_id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise Unprocessable(
            "The cursor is not one this API returned; pass next_cursor from the previous page."
        )
    micros, row_id = cursor.split("_", 1)
    return _EPOCH + int(micros) * _MICROSECOND, row_id


async def paginate(
    session: AsyncSession,
    entity: Any,
    tenant_id: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    after = decode_cursor(cursor) if cursor else None
    rows = await session.scalars(repository.page(entity, tenant_id, limit + 1, after))
    return trim_page(list(rows), limit)


def trim_page(rows: list[T], limit: int) -> tuple[list[T], str | None]:
    """The first `limit` of `limit + 1` rows read, and the cursor after them when there are
    more."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)  # type: ignore[attr-defined]
