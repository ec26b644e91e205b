"""Dependencies, named once as Annotated aliases so routes read as plain typed functions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core import repository
from core.auth import hash_key
from core.config import Settings
from core.storage import ArtifactStore
from service.errors import Unauthorized
from service.state import AppState, UnitOfWork


# Every dependency is `async def`: FastAPI runs a plain `def` one in its thread pool, a
# thread handoff that cost a status poll more than its Redis round trip.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.stillhouse
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


async def get_store(state: StateDep) -> ArtifactStore:
    return state.store


async def get_uow(state: StateDep) -> AsyncIterator[UnitOfWork]:
    async with state.sessions() as session:
        uow = UnitOfWork(session, state.celery, state.store, state.status)
        try:
            yield uow
        finally:
            await uow.release()  # a request that did not commit leaves no blob behind


# Requests that only read may trust the key cache (so may a predict, which writes nothing:
# ReadingTenantDep); every other one asks SQL, so a revoked key or a deleted tenant can
# change nothing from the moment it is gone.
CACHED_METHODS = frozenset({"GET", "HEAD"})


# Declared as the document's security scheme, so /docs has an "Authorize" box that sends the
# key (Swagger UI never sends an `Authorization` header declared as a plain parameter).
# auto_error=False: a missing or non-Bearer header is answered by our own 401 sentence.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key, sent as `Authorization: Bearer <key>`; "
    "`stillhouse keys create` makes one.",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def get_tenant_id(request: Request, credentials: BearerDep) -> str:
    # The state straight from the request, not through StateDep: each dependency FastAPI
    # solves costs a status poll a few percent.
    state: AppState = request.app.state.stillhouse
    return await _tenant_id(state, credentials, cached=request.method in CACHED_METHODS)


async def get_reading_tenant_id(state: StateDep, credentials: BearerDep) -> str:
    """For a POST that changes nothing (a predict): it may trust the key cache as a GET does."""
    return await _tenant_id(state, credentials, cached=True)


async def _tenant_id(
    state: AppState, credentials: HTTPAuthorizationCredentials | None, cached: bool
) -> str:
    key = credentials.credentials if credentials is not None else ""
    if not key.strip():
        raise Unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    key_hash = hash_key(key.strip())
    tenant_id = state.keys.get(key_hash) if cached else None
    if tenant_id is None:

        async def lookup() -> str | None:
            async with state.sessions() as session:
                found: str | None = await session.scalar(repository.tenant_id_for_key(key_hash))
                return found

        # Reads share the lookup of a key already on its way: when its entry expires under
        # 64 concurrent polls, one query runs instead of 64 queueing for the pool.
        tenant_id = await (state.keys.shared(key_hash, lookup) if cached else lookup())
        if tenant_id is None:
            state.keys.drop(key_hash)
            raise Unauthorized(
                "This API key is not valid (unknown, revoked, or its tenant was deleted); "
                "create one with 'stillhouse keys create'."
            )
        state.keys.put(key_hash, tenant_id)
    return tenant_id


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
UowDep = Annotated[UnitOfWork, Depends(get_uow)]
TenantDep = Annotated[str, Depends(get_tenant_id)]
ReadingTenantDep = Annotated[str, Depends(get_reading_tenant_id)]
