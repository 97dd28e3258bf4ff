"""Who the client is (SPEC §8): the socket peer, or what a trusted proxy says it forwarded."""

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.requests import HTTPConnection

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

FORWARDED_FOR = "x-forwarded-for"
UNKNOWN_PEER = "unknown"


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
    """Finds the client address of a request; never trusts a header an untrusted peer sent."""

    def __init__(self, trusted_proxies: Sequence[IPNetwork]) -> None:
        """Honour `X-Forwarded-For` only from peers inside `trusted_proxies`."""
        self.trusted_proxies = tuple(trusted_proxies)

    def is_trusted(self, address: IPAddress) -> bool:
        """Whether `address` is one of our proxies."""
        return any(address in network for network in self.trusted_proxies)

    def client_address(self, connection: HTTPConnection) -> str:
        """The socket peer, or the right-most forwarded address that is not a trusted proxy.

        Proxies append the address they received from, so only the entries added by our
        own proxies are trustworthy: walking from the right, the first address outside
        the trusted networks is the client. Anything unparseable on the way means the
        header cannot be believed, and the peer is used instead.
        """
        peer_text = connection.client.host if connection.client else ""
        peer = parse_address(peer_text)
        if peer is None:
            return peer_text or UNKNOWN_PEER
        if not self.trusted_proxies or not self.is_trusted(peer):
            return str(peer)
        forwarded = ",".join(connection.headers.getlist(FORWARDED_FOR)).split(",")
        hops = [hop for hop in (item.strip() for item in forwarded) if hop]
        client = peer
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                return str(peer)
            client = address
            if not self.is_trusted(address):
                break
        return str(client)

    async def __call__(self, connection: HTTPConnection) -> str:
        """fastapi-limiter identifier: the client address is the rate-limit key."""
        return self.client_address(connection)
