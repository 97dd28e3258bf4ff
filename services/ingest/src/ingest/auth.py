"""API keys (SPEC §3.5): `Authorization: Bearer <key>`, compared in constant time, never logged."""

import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from ingest.errors import UnauthorizedError

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key from INGEST_API_KEYS (write API, when set) or READ_API_KEYS.",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _digest(key: str) -> bytes:
    # Comparing fixed-size digests keeps the time independent of the keys' lengths too.
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """A set of accepted keys; only their SHA-256 digests are kept."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        """Accept any of `keys`."""
        self._digests = tuple(_digest(key.get_secret_value()) for key in keys)

    def __bool__(self) -> bool:
        """Whether any key is configured."""
        return bool(self._digests)

    def accepts(self, presented: str) -> bool:
        """Whether `presented` is one of the keys; every key is compared, in constant time."""
        offered = _digest(presented)
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(offered, digest)
        return matched


def _check(keys: ApiKeys, credentials: HTTPAuthorizationCredentials | None) -> None:
    if credentials is None or not keys.accepts(credentials.credentials):
        raise UnauthorizedError


async def require_ingest_key(request: Request, credentials: BearerDep) -> None:
    """A key from INGEST_API_KEYS (mounted only when that is set: ingest is open otherwise)."""
    keys: ApiKeys = request.app.state.ingest_api_keys
    _check(keys, credentials)


async def require_read_key(request: Request, credentials: BearerDep) -> None:
    """The read API needs a key from READ_API_KEYS; with none configured it is closed."""
    keys: ApiKeys = request.app.state.read_api_keys
    _check(keys, credentials)
