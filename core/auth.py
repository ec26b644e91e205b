"""API keys: 32 random bytes shown once, stored as a sha256 hash."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sh_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:10]
