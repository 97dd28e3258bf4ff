"""Who the client is for the rate limit (design §8).

The socket peer, or what a trusted proxy says it forwarded; an IPv4 address, or the IPv6
/64 it belongs to (both prefixes configurable). Never a header an untrusted peer sent.
"""

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from starlette.requests import HTTPConnection

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
FORWARDED_FOR = "x-forwarded-for"
UNKNOWN_PEER = "unknown"
# Peers whose parsed key is kept (the cache is simply emptied when full).
PEER_KEYS_KEPT = 10_000


def parse_address(text: str) -> IPAddress | None:
    """An IP address from `text` as proxies write it (ports and brackets allowed), or None."""
    text = text.strip()
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # 203.0.113.7:51234
        text = text.split(":", 1)[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:203.0.113.7 is 203.0.113.7
    return address


class ClientIdentity:
    """The rate-limit key of a request; never trusts a header an untrusted peer sent."""

    def __init__(
        self, trusted_proxies: Sequence[IPNetwork], ipv4_prefix: int = 32, ipv6_prefix: int = 64
    ) -> None:
        """Honour `X-Forwarded-For` only from `trusted_proxies`; group addresses by prefix."""
        self.trusted_proxies = tuple(trusted_proxies)
        self.ipv4_prefix = ipv4_prefix
        self.ipv6_prefix = ipv6_prefix
        # Without trusted proxies the key is the peer's alone: parsed once per peer.
        self._peer_keys: dict[str, str] = {}

    def is_trusted(self, address: IPAddress) -> bool:
        """Whether `address` is one of our proxies."""
        return any(address in network for network in self.trusted_proxies)

    def client_address(self, connection: HTTPConnection) -> IPAddress | None:
        """The socket peer, or the right-most forwarded address that is not a trusted proxy.

        Proxies append the address they received from, so only the entries added by our
        own proxies are trustworthy: walking from the right, the first address outside
        the trusted networks is the client. Anything unparseable on the way means the
        header cannot be believed, and the peer is used instead.
        """
        peer = parse_address(connection.client.host if connection.client else "")
        if peer is None or not self.trusted_proxies or not self.is_trusted(peer):
            return peer
        forwarded = ",".join(connection.headers.getlist(FORWARDED_FOR)).split(",")
        client = peer
        for hop in reversed([item.strip() for item in forwarded if item.strip()]):
            address = parse_address(hop)
            if address is None:
                return peer
            client = address
            if not self.is_trusted(address):
                break
        return client

    def key_of(self, address: IPAddress) -> str:
        """An IPv4 address (or its network), or the IPv6 network it belongs to."""
        prefix = self.ipv4_prefix if address.version == 4 else self.ipv6_prefix
        if prefix == address.max_prefixlen:
            return str(address)
        return str(ip_network(f"{address}/{prefix}", strict=False))

    async def __call__(self, connection: HTTPConnection) -> str:
        """fastapi-limiter identifier: the client's rate-limit key."""
        if not self.trusted_proxies and connection.client is not None:
            key = self._peer_keys.get(connection.client.host)
            if key is None:
                key = self._key(connection)
                if len(self._peer_keys) >= PEER_KEYS_KEPT:
                    self._peer_keys.clear()
                self._peer_keys[connection.client.host] = key
            return key
        return self._key(connection)

    def _key(self, connection: HTTPConnection) -> str:
        address = self.client_address(connection)
        if address is None:
            return connection.client.host if connection.client else UNKNOWN_PEER
        return self.key_of(address)
