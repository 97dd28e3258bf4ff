"""API keys (SPEC §3.5): `Authorization: Bearer <key>`, compared in constant time."""

import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ingest.dependencies import SettingsDep
from ingest.errors import UnauthorizedError

_read_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ReadApiKey",
    description="A key from READ_API_KEYS.",
)
ReadCredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_read_bearer)]


def key_matches(offered: str, keys: Sequence[str]) -> bool:
    """Whether `offered` is one of `keys`; every key is compared, each in constant time."""
    offered_bytes = offered.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(offered_bytes, key.encode())
    return matched


def require_read_key(settings: SettingsDep, credentials: ReadCredentialsDep) -> None:
    """Let the request through only with a READ_API_KEYS key; none configured: refuse all."""
    if credentials is None or not key_matches(credentials.credentials, settings.read_api_keys):
        raise UnauthorizedError


# Router-level dependency (it returns nothing): `APIRouter(dependencies=[ReadKeyRequired])`.
ReadKeyRequired = Depends(require_read_key)
