"""The `Idempotency-Key` header on create endpoints: a retry of a request
that already succeeded gets the first response again instead of a second resource.

An endpoint asks `replay()` before it creates anything, and ends with
`commit()` in place of `uow.commit()`:

    replayed = await idem.replay(uow, meaning)
    if replayed is not None:
        return replayed
    ...create the row, enqueue its task...
    return await idem.commit(uow, Public.model_validate(row), status.HTTP_201_CREATED)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core import idempotency
from core.models import IdempotencyKey, utcnow
from service.deps import SettingsDep, TenantDep
from service.errors import IdempotencyKeyReused, Unprocessable
from service.state import UnitOfWork
from service.uploads import StoredFile

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
HEADER_DESCRIPTION = (
    "A client-chosen key, 1 to 255 printable ASCII characters (a UUID is a good choice). "
    "A retry with the same key and the same request returns the first response, with "
    "`Idempotent-Replayed: true`, and creates nothing; the same key with a different request "
    "is refused with 422 `idempotency_key_reused`. Keys are per tenant and kept for "
    "`STILLHOUSE_IDEMPOTENCY_TTL_S` seconds (24 hours by default)."
)

Public = TypeVar("Public", bound=BaseModel)


@dataclass
class Idempotency:
    """One request's key (None without the header) and what it is checked against."""

    tenant_id: str
    key: str | None
    method: str
    path: str
    ttl_s: float
    # Set by replay(), stored by commit(): the two must hash the same request.
    fingerprint: str | None = field(default=None)

    async def replay(self, uow: UnitOfWork, meaning: dict[str, Any]) -> JSONResponse | None:
        """The first response when this key already served this request; None to go on
        and create. Raises IdempotencyKeyReused when the key served another request."""
        if self.key is None:
            return None
        self.fingerprint = idempotency.fingerprint(self.method, self.path, meaning)
        row = await self._live_row(uow.session, self.key)
        return None if row is None else self._answer(row)

    async def commit(
        self, uow: UnitOfWork, public: Public, status_code: int
    ) -> Public | JSONResponse:
        """Commit the request's transaction, with the key's row in it when there is a key,
        so the created resource and its stored response are durable together or not at all."""
        if self.key is None:
            await uow.commit()
            return public
        assert self.fingerprint is not None, "call replay() before commit()"
        body = public.model_dump(mode="json")
        uow.session.add(
            IdempotencyKey(
                tenant_id=self.tenant_id,
                key=self.key,
                fingerprint=self.fingerprint,
                status_code=status_code,
                response=body,
            )
        )
        try:
            await uow.commit()
        except IntegrityError:
            # A concurrent request with this key committed first (its primary key row
            # is there now): drop our resource and answer as a retry would. The task
            # message was never sent: the unit of work sends only after a commit.
            await uow.session.rollback()
            row = await uow.session.scalar(idempotency.select_key(self.tenant_id, self.key))
            if row is None:
                raise
            return self._answer(row)
        # The stored body itself, so the first answer and every replay are the same JSON.
        return JSONResponse(body, status_code=status_code)

    async def _live_row(self, session: AsyncSession, key: str) -> IdempotencyKey | None:
        # Expiry is decided in SQL (no naive/aware datetime mix across databases); the
        # delete joins this request's transaction, so it lasts only if the new row does.
        cutoff = utcnow() - timedelta(seconds=self.ttl_s)
        await session.execute(idempotency.delete_expired(self.tenant_id, key, cutoff))
        row: IdempotencyKey | None = await session.scalar(
            idempotency.select_key(self.tenant_id, key)
        )
        return row

    def _answer(self, row: IdempotencyKey) -> JSONResponse:
        if row.fingerprint != self.fingerprint:
            raise IdempotencyKeyReused(
                f"The Idempotency-Key '{row.key}' was already used for a different request; "
                "send this request with a new key."
            )
        return JSONResponse(
            row.response, status_code=row.status_code, headers={REPLAYED_HEADER: "true"}
        )


def get_idempotency(
    request: Request,
    tenant_id: TenantDep,
    settings: SettingsDep,
    key: Annotated[str | None, Header(alias=HEADER, description=HEADER_DESCRIPTION)] = None,
) -> Idempotency:
    if key is not None and not idempotency.is_valid_key(key):
        raise Unprocessable(
            f"The {HEADER} header must be 1 to {idempotency.MAX_KEY_LENGTH} printable ASCII "
            "characters; use a new random key such as a UUID."
        )
    return Idempotency(
        tenant_id=tenant_id,
        key=key,
        method=request.method,
        path=request.url.path,
        ttl_s=settings.idempotency_ttl_s,
    )


def upload_meaning(name: str | None, spec: str | None, stored: StoredFile) -> dict[str, Any]:
    """What makes two uploads the same: the form fields and the file, by its content hash."""
    return {"name": name, "spec": spec, "filename": stored.filename, "sha256": stored.sha256}


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
