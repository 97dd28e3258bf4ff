"""Who the client is for the rate limit (design §8): peer, trusted proxies, address prefixes."""

import pytest
from starlette.requests import Request

from ingest.client_identity import ClientIdentity, parse_address
from ingest.settings import IngestSettings


def request(peer: str | None, forwarded: list[str] | None = None) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded or []]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/activities",
        "headers": headers,
        "client": (peer, 50000) if peer is not None else None,
    }
    return Request(scope)


def identity(trusted: str = "", **prefixes: int) -> ClientIdentity:
    settings = IngestSettings(_env_file=None, trusted_proxies=trusted)
    return ClientIdentity(settings.trusted_proxies, **prefixes)


async def test_peer_is_the_client_without_trusted_proxies() -> None:
    assert await identity()(request("203.0.113.5")) == "203.0.113.5"


async def test_spoofed_header_from_an_untrusted_peer_changes_nothing() -> None:
    spoofed = request("203.0.113.5", ["1.2.3.4", "5.6.7.8, 9.9.9.9"])
    assert await identity()(spoofed) == "203.0.113.5"
    assert await identity("10.0.0.0/8")(spoofed) == "203.0.113.5"


async def test_right_most_untrusted_address_behind_a_trusted_proxy() -> None:
    # The client put 1.2.3.4 there itself; our proxy appended the real peer 203.0.113.7.
    via_proxy = request("10.0.0.2", ["1.2.3.4, 203.0.113.7"])
    assert await identity("10.0.0.0/8")(via_proxy) == "203.0.113.7"


async def test_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    via_two = request("10.0.0.2", ["1.2.3.4, 203.0.113.7", "192.168.1.1"])
    assert await identity("10.0.0.0/8,192.168.0.0/16")(via_two) == "203.0.113.7"


async def test_only_trusted_hops_gives_the_left_most() -> None:
    internal = request("10.0.0.2", ["10.1.1.1, 10.2.2.2"])
    assert await identity("10.0.0.0/8")(internal) == "10.1.1.1"


@pytest.mark.parametrize("header", ["garbage", "203.0.113.7, not-an-ip", "", " , "])
async def test_garbage_from_a_trusted_proxy_falls_back_to_the_peer(header: str) -> None:
    assert await identity("10.0.0.0/8")(request("10.0.0.2", [header])) == "10.0.0.2"


async def test_missing_header_from_a_trusted_proxy_is_the_peer() -> None:
    assert await identity("10.0.0.0/8")(request("10.0.0.2")) == "10.0.0.2"


async def test_ipv6_clients_are_keyed_by_their_64_network() -> None:
    """One client owns a whole /64: every address in it shares one budget."""
    keys = {await identity()(request(f"2001:db8:1:2::{host:x}")) for host in (1, 0xBEEF, 0xFFFF)}
    assert keys == {"2001:db8:1:2::/64"}
    assert await identity()(request("2001:db8:1:3::1")) == "2001:db8:1:3::/64"


async def test_prefixes_are_configurable() -> None:
    per_address = identity(ipv6_prefix=128)
    assert await per_address(request("2001:db8::1")) == "2001:db8::1"
    per_48 = identity(ipv6_prefix=48)
    assert await per_48(request("2001:db8:1:2::1")) == "2001:db8:1::/48"
    per_24 = identity(ipv4_prefix=24)
    assert await per_24(request("203.0.113.77")) == "203.0.113.0/24"
    settings = IngestSettings(_env_file=None, rate_limit_ipv6_prefix=56, rate_limit_ipv4_prefix=32)
    assert (settings.rate_limit_ipv6_prefix, settings.rate_limit_ipv4_prefix) == (56, 32)


async def test_forwarded_ipv6_addresses_are_keyed_by_network_too() -> None:
    trusted = identity("fd00::/8")
    assert await trusted(request("fd00::2", ["2001:db8:0:0::42"])) == "2001:db8::/64"
    assert await trusted(request("fd00::2", ["[2001:db8:5::7]:443"])) == "2001:db8:5::/64"


def test_ipv4_mapped_and_ported_addresses_are_normalised() -> None:
    assert parse_address("::ffff:203.0.113.9") is not None
    assert str(parse_address("::ffff:203.0.113.9")) == "203.0.113.9"
    assert str(parse_address("203.0.113.9:8080")) == "203.0.113.9"
    assert parse_address("example.com") is None


async def test_unparseable_or_missing_peer_does_not_fail() -> None:
    assert await identity("10.0.0.0/8")(request("testclient")) == "testclient"
    assert await identity()(request(None)) == "unknown"
