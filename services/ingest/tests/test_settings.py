import pytest

from activity_contract.settings import ConfigurationError, load_settings
from ingest.settings import IngestSettings, RateLimitRule

pytestmark = pytest.mark.usefixtures("no_dotenv")


def test_defaults_follow_the_spec() -> None:
    settings = IngestSettings()
    assert settings.rate_limit == RateLimitRule(limit=100, period_seconds=60)
    assert str(settings.rate_limit) == "100/minute"
    assert settings.trusted_proxies == []
    assert settings.ingest_api_keys == []
    assert settings.read_api_keys == []
    assert 0 < settings.redis_timeout_seconds <= 1


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [("5/second", 5, 1), ("100/minute", 100, 60), (" 7 / HOUR ", 7, 3600)],
)
def test_rate_limit_forms(
    monkeypatch: pytest.MonkeyPatch, text: str, limit: int, period: int
) -> None:
    monkeypatch.setenv("RATE_LIMIT", text)
    rule = load_settings(IngestSettings).rate_limit
    assert (rule.limit, rule.period_seconds) == (limit, period)


@pytest.mark.parametrize("text", ["100", "0/minute", "-1/minute", "10/day", "ten/minute", ""])
def test_invalid_rate_limit_names_the_variable(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("RATE_LIMIT", text)
    with pytest.raises(ConfigurationError, match="RATE_LIMIT"):
        load_settings(IngestSettings)


def test_trusted_proxies_are_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 172.17.0.1 ,fd00::/8")
    networks = [str(network) for network in load_settings(IngestSettings).trusted_proxies]
    assert networks == ["10.0.0.0/8", "172.17.0.1/32", "fd00::/8"]


@pytest.mark.parametrize("text", ["10.0.0.0/33", "nginx", "10.0.0.1/8"])
def test_invalid_trusted_proxies_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", text)
    with pytest.raises(ConfigurationError, match="TRUSTED_PROXIES"):
        load_settings(IngestSettings)


@pytest.mark.parametrize(
    "text", ["0.0.0.0/0", "::/0", "10.0.0.0/8,0.0.0.0/1", "128.0.0.0/7", "2000::/3"]
)
def test_catch_all_trusted_proxies_are_refused_saying_why(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    """Trusting every address lets each client choose its own rate-limit key."""
    monkeypatch.setenv("TRUSTED_PROXIES", text)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(IngestSettings)
    message = str(caught.value)
    assert message.startswith("invalid configuration: TRUSTED_PROXIES:")
    assert "is wider than" in message
    assert "X-Forwarded-For" in message


def test_the_widest_private_ranges_can_be_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8,fc00::/7")
    networks = [str(network) for network in load_settings(IngestSettings).trusted_proxies]
    assert networks == ["10.0.0.0/8", "fc00::/7"]


def test_api_keys_never_appear_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_API_KEYS", "ingest-secret-1,ingest-secret-2")
    monkeypatch.setenv("READ_API_KEYS", "read-secret")
    settings = load_settings(IngestSettings)
    assert [key.get_secret_value() for key in settings.ingest_api_keys] == [
        "ingest-secret-1",
        "ingest-secret-2",
    ]
    assert "secret" not in repr(settings)
    assert "secret" not in str(settings)


def test_connection_limits_default_to_the_documented_values() -> None:
    settings = IngestSettings()
    assert settings.ingest_max_header_bytes == 32 * 1024
    assert settings.ingest_max_headers == 100
    assert settings.ingest_header_timeout_seconds == 10
    assert settings.ingest_body_timeout_seconds == 30
    assert settings.ingest_max_connections == 4096


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("INGEST_MAX_HEADER_BYTES", "1023"),
        ("INGEST_MAX_HEADER_BYTES", str(1024 * 1024 + 1)),
        ("INGEST_MAX_HEADERS", "9"),
        ("INGEST_MAX_HEADERS", "1001"),
        ("INGEST_HEADER_TIMEOUT_SECONDS", "0"),
        ("INGEST_HEADER_TIMEOUT_SECONDS", "301"),
        ("INGEST_BODY_TIMEOUT_SECONDS", "-1"),
        ("INGEST_BODY_TIMEOUT_SECONDS", "3601"),
        ("INGEST_MAX_CONNECTIONS", "0"),
        ("INGEST_MAX_CONNECTIONS", "1000001"),
        ("INGEST_MAX_CONNECTIONS", "many"),
    ],
)
def test_connection_limits_out_of_range_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(ConfigurationError, match=variable):
        load_settings(IngestSettings)


def test_connection_limits_accept_short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_HEADER_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("INGEST_BODY_TIMEOUT_SECONDS", "1")
    settings = load_settings(IngestSettings)
    assert settings.ingest_header_timeout_seconds == 0.5
    assert settings.ingest_body_timeout_seconds == 1
