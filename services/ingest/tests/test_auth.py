"""Key comparison for the read API (no network)."""

from ingest.auth import key_matches


def test_a_configured_key_matches() -> None:
    assert key_matches("k2", ["k1", "k2"])


def test_other_keys_and_prefixes_do_not_match() -> None:
    assert not key_matches("k", ["k1", "k2"])
    assert not key_matches("k1 ", ["k1"])
    assert not key_matches("", ["k1"])


def test_no_configured_key_matches_nothing() -> None:
    assert not key_matches("anything", [])
