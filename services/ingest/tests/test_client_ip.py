import pytest
from starlette.requests import Request

from ingest.client_ip import ClientIdentity, parse_address
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


def identity(trusted: str = "") -> ClientIdentity:
    return ClientIdentity(IngestSettings(trusted_proxies=trusted).trusted_proxies)


def test_peer_is_the_client_without_trusted_proxies() -> None:
    assert identity().client_address(request("203.0.113.5")) == "203.0.113.5"


def test_spoofed_header_from_an_untrusted_peer_changes_nothing() -> None:
    spoofed = request("203.0.113.5", ["1.2.3.4", "5.6.7.8, 9.9.9.9"])
    assert identity().client_address(spoofed) == "203.0.113.5"
    assert identity("10.0.0.0/8").client_address(spoofed) == "203.0.113.5"


def test_right_most_untrusted_address_behind_a_trusted_proxy() -> None:
    # The client put 1.2.3.4 there itself; our proxy appended the real peer 203.0.113.7.
    via_proxy = request("10.0.0.2", ["1.2.3.4, 203.0.113.7"])
    assert identity("10.0.0.0/8").client_address(via_proxy) == "203.0.113.7"


def test_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    via_two = request("10.0.0.2", ["1.2.3.4, 203.0.113.7", "192.168.1.1"])
    assert identity("10.0.0.0/8,192.168.0.0/16").client_address(via_two) == "203.0.113.7"


def test_only_trusted_hops_gives_the_left_most() -> None:
    internal = request("10.0.0.2", ["10.1.1.1, 10.2.2.2"])
    assert identity("10.0.0.0/8").client_address(internal) == "10.1.1.1"


@pytest.mark.parametrize("header", ["garbage", "203.0.113.7, not-an-ip", "", " , "])
def test_garbage_from_a_trusted_proxy_falls_back_to_the_peer(header: str) -> None:
    assert identity("10.0.0.0/8").client_address(request("10.0.0.2", [header])) == "10.0.0.2"


def test_missing_header_from_a_trusted_proxy_is_the_peer() -> None:
    assert identity("10.0.0.0/8").client_address(request("10.0.0.2")) == "10.0.0.2"


def test_ipv6_peer_and_forwarded_addresses() -> None:
    trusted = identity("fd00::/8")
    assert trusted.client_address(request("2001:db8::1")) == "2001:db8::1"
    via = request("fd00::2", ["2001:db8:0:0::42"])
    assert trusted.client_address(via) == "2001:db8::42"
    assert trusted.client_address(request("fd00::2", ["[2001:db8::7]:443"])) == "2001:db8::7"


def test_ipv4_mapped_and_ported_addresses_are_normalised() -> None:
    assert parse_address("::ffff:203.0.113.9") is not None
    assert str(parse_address("::ffff:203.0.113.9")) == "203.0.113.9"
    assert str(parse_address("203.0.113.9:8080")) == "203.0.113.9"
    assert parse_address("example.com") is None


def test_unparseable_or_missing_peer_does_not_fail() -> None:
    assert identity("10.0.0.0/8").client_address(request("testclient")) == "testclient"
    assert identity().client_address(request(None)) == "unknown"
