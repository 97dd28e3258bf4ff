"""API keys (design §3.5): compared in constant time, never logged, only digests kept."""

import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr


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
