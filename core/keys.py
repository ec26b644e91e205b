"""Creating tenants and API keys (the `stillhouse keys` command, `make run`)."""

from __future__ import annotations

from sqlalchemy import select

from core import repository
from core.auth import display_prefix, generate_key, hash_key
from core.config import Settings
from core.db import make_engine, make_sessionmaker
from core.models import ApiKey, Tenant


def create_key(settings: Settings, tenant: str, name: str = "", key: str | None = None) -> str:
    key = key or generate_key()
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            row = session.scalar(repository.tenant_by_name(tenant))
            if row is None:
                row = Tenant(name=tenant)
                session.add(row)
                session.flush()
            exists = session.scalar(
                select(ApiKey.tenant_id).where(ApiKey.key_hash == hash_key(key))
            )
            if exists is None:
                session.add(
                    ApiKey(
                        tenant_id=row.id,
                        key_hash=hash_key(key),
                        prefix=display_prefix(key),
                        name=name,
                    )
                )
            elif exists != row.id:
                raise ValueError("that key already belongs to another tenant")
    finally:
        engine.dispose()
    return key


def ensure_dev_key(settings: Settings) -> str:
    """STILLHOUSE_API_KEY if set, else the key saved by an earlier run, else a new one."""
    import os

    given = os.environ.get("STILLHOUSE_API_KEY")
    saved = settings.data_dir / "api-key"
    key = given or (saved.read_text().strip() if saved.exists() else None)
    key = create_key(settings, "default", "dev", key)
    if not given:
        saved.write_text(key + "\n")
        saved.chmod(0o600)
    return key
