"""Idempotency keys: the statements that read and expire a stored first
response, and the fingerprint that tells a retry from a different request
sent with the same key. The gateway's side lives in service.idempotency."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Delete, Select, delete, select

from core.models import IdempotencyKey

MAX_KEY_LENGTH = 255
# Printable ASCII only: the key is echoed in logs and compared byte for byte,
# so control characters and encodings that could make two keys look alike are refused.
_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")


def is_valid_key(key: str) -> bool:
    return _KEY.fullmatch(key) is not None


def fingerprint(method: str, path: str, meaning: Mapping[str, Any]) -> str:
    """sha256 hex over what makes two requests the same request: sorted keys and
    fixed separators, so the same meaning always hashes the same."""
    payload = json.dumps(
        {"method": method.upper(), "path": path, "body": meaning},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def select_key(tenant_id: str, key: str) -> Select[Any]:
    return select(IdempotencyKey).where(
        IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key
    )


def delete_expired(tenant_id: str, key: str, created_before: datetime) -> Delete:
    """Remove this key's row only when it is older than `created_before`: a fresh
    row written meanwhile by a concurrent request is left alone."""
    return delete(IdempotencyKey).where(
        IdempotencyKey.tenant_id == tenant_id,
        IdempotencyKey.key == key,
        IdempotencyKey.created_at < created_before,
    )
