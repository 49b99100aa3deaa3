"""API keys: scopes, the token format, and how secrets are hashed and compared."""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "ntf"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_TOKEN = re.compile(rf"{TOKEN_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_\-]{{43}})")


class Scope(enum.StrEnum):
    """What a key may do."""

    SEND = "send"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key, without its secret; times are epoch milliseconds."""

    name: str
    key_id: str
    scopes: frozenset[Scope]
    created_at_ms: int
    last_used_at_ms: int | None
    revoked_at_ms: int | None

    @property
    def is_active(self) -> bool:
        """Whether the key still authenticates."""
        return self.revoked_at_ms is None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key as created: the token is shown once and only its hash is kept."""

    key_id: str
    token: str
    secret_hash: bytes


def check_name(name: str) -> str:
    """Return the key name, or raise ValueError saying what a name may be."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            "a key name is 1 to 64 letters, digits, '.', '_' or '-', starting "
            f"with a letter or digit; got {name!r}"
        )
    return name


def new_key() -> NewKey:
    """Make a random token ``ntf_<key id>_<secret>`` and the hash of its secret."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, f"{TOKEN_PREFIX}_{key_id}_{secret}", hash_secret(secret))


def parse_token(token: str) -> tuple[str, str] | None:
    """Split a token into (key id, secret), or None if it is not one of ours."""
    match = _TOKEN.fullmatch(token)
    return (match[1], match[2]) if match else None


def hash_secret(secret: str) -> bytes:
    """Hash a secret for storage.

    The secret is 256 random bits, so a fast hash is enough: there is no
    password to guess, and a slow one would cost every request.
    """
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    """Compare in constant time, so timing does not reveal how much matched."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)
