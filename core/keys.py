"""Tenants and API keys: create, list, revoke (the `stillhouse keys` command, `make run`)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from core import repository
from core.auth import display_prefix, generate_key, hash_key
from core.config import Settings
from core.db import make_engine, make_sessionmaker
from core.models import ApiKey, Tenant, utcnow

# A chosen key must be as hard to guess as it is to type: 24 characters of a
# random alphabet is well past brute force; generated keys have 46.
MIN_KEY_LENGTH = 24
DEV_TENANT = "default"


class KeyRefused(ValueError):
    """A key command that cannot be done as asked; the message is the sentence to show."""


class NoSuchKey(LookupError):
    """No key matched; the message is the sentence to show."""


@dataclass(frozen=True)
class CreatedKey:
    key: str  # shown once, never stored
    tenant: str


@dataclass(frozen=True)
class KeyInfo:
    prefix: str
    name: str
    tenant: str
    created_at: datetime
    revoked_at: datetime | None


def issue_key(
    settings: Settings, tenant: str | None = None, name: str = "", key: str | None = None
) -> CreatedKey:
    """Store a key for `tenant` (created when missing), or for a new tenant with a
    generated name when `tenant` is None, so keys never share a tenant by accident."""
    if key is not None and len(key) < MIN_KEY_LENGTH:
        raise KeyRefused(
            f"A chosen key must be at least {MIN_KEY_LENGTH} characters long (this one has "
            f"{len(key)}); leave out --key to get a generated one."
        )
    key = key or generate_key()
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            row = None if tenant is None else session.scalar(repository.tenant_by_name(tenant))
            if row is None:
                row = Tenant(name=tenant or _new_tenant_name(session))
                session.add(row)
                session.flush()
            owner = session.scalar(select(ApiKey.tenant_id).where(ApiKey.key_hash == hash_key(key)))
            if owner is None:
                session.add(
                    ApiKey(
                        tenant_id=row.id,
                        key_hash=hash_key(key),
                        prefix=display_prefix(key),
                        name=name,
                    )
                )
            elif owner != row.id:
                raise KeyRefused("That key already belongs to another tenant; choose another.")
            return CreatedKey(key=key, tenant=row.name)
    finally:
        engine.dispose()


def create_key(
    settings: Settings, tenant: str | None = None, name: str = "", key: str | None = None
) -> str:
    return issue_key(settings, tenant, name, key).key


def _new_tenant_name(session: Session) -> str:
    while True:
        candidate = f"tenant-{secrets.token_hex(4)}"
        if session.scalar(repository.tenant_by_name(candidate)) is None:
            return candidate


def _key_rows(tenant: str | None = None) -> Select[ApiKey, str]:
    query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant is not None:
        query = query.where(Tenant.name == tenant)
    return query.order_by(ApiKey.created_at, ApiKey.id)


def _info(row: ApiKey, tenant: str) -> KeyInfo:
    return KeyInfo(row.prefix, row.name, tenant, row.created_at, row.revoked_at)


def list_keys(settings: Settings, tenant: str | None = None) -> list[KeyInfo]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_sessionmaker(engine)() as session:
            return [_info(row, name) for row, name in session.execute(_key_rows(tenant))]
    finally:
        engine.dispose()


def revoke_key(settings: Settings, prefix_or_key: str) -> tuple[KeyInfo, bool]:
    """Revoke the one live key that is `prefix_or_key` or starts with it (its
    shown prefix); return it and whether this call revoked it (False: it was
    already revoked). Refuses a prefix that matches more than one live key."""
    text = prefix_or_key.strip()
    if not text:
        raise NoSuchKey("Give a key or the prefix that 'stillhouse keys list' shows.")
    by_key = ApiKey.key_hash == hash_key(text)
    by_prefix = ApiKey.prefix.startswith(text, autoescape=True)
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            rows = list(session.execute(_key_rows().where(by_key)))
            if not rows and display_prefix(text) == text:  # no longer than a shown prefix
                rows = list(session.execute(_key_rows().where(by_prefix)))
            live = [(row, name) for row, name in rows if row.revoked_at is None]
            if not rows:
                raise NoSuchKey(f"No API key matches '{text}'; see 'stillhouse keys list'.")
            if len(live) > 1:
                shown = ", ".join(row.prefix for row, _ in live)
                raise KeyRefused(
                    f"'{text}' matches {len(live)} live keys ({shown}); give a longer prefix "
                    "or the whole key."
                )
            if not live:
                return _info(*rows[0]), False  # revoking again changes nothing
            row, tenant = live[0]
            # Conditional, so two revokes of one key record the first time only.
            done = session.execute(
                update(ApiKey)
                .where(ApiKey.id == row.id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            session.refresh(row)
            return _info(row, tenant), done.rowcount == 1  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def ensure_dev_key(settings: Settings) -> str:
    """STILLHOUSE_API_KEY if set, else the key saved by an earlier run, else a new one."""
    given = os.environ.get("STILLHOUSE_API_KEY")
    saved = settings.data_dir / "api-key"
    key = given or (saved.read_text().strip() if saved.exists() else None)
    key = create_key(settings, DEV_TENANT, "dev", key)
    if not given:
        saved.write_text(key + "\n")
        saved.chmod(0o600)
    return key
