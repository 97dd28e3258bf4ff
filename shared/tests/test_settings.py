"""Settings pieces: defaults, parsing and fail-fast messages that name the variable."""

from pathlib import Path

import pytest

from activity_contract.settings import (
    BrokerSettings,
    ConfigurationError,
    LoggingSettings,
    MongoSettings,
    load_settings,
)
from activity_contract.topology import QueueType

pytestmark = pytest.mark.usefixtures("no_dotenv")


def test_defaults_match_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RABBITMQ_URL", "QUEUE_TYPE", "QUEUE_DELIVERY_LIMIT", "MONGODB_URL"):
        monkeypatch.delenv(name, raising=False)
    broker = BrokerSettings(_env_file=None)
    assert broker.rabbitmq_url == "amqp://guest:guest@localhost:5672/"
    assert broker.queue_type is QueueType.QUORUM
    assert broker.queue_delivery_limit == 5
    mongo = MongoSettings(_env_file=None)
    assert mongo.mongodb_url is None
    assert mongo.mongodb_database == "event_tracker"
    assert mongo.retention_days == 0


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_TYPE", "quorum")
    monkeypatch.setenv("QUEUE_DELIVERY_LIMIT", "9")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    broker = BrokerSettings(_env_file=None)
    assert (broker.queue_type, broker.queue_delivery_limit) == (QueueType.QUORUM, 9)
    logging_settings = LoggingSettings(_env_file=None)
    assert (logging_settings.log_level, logging_settings.log_format) == ("DEBUG", "json")


def test_invalid_value_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_DELIVERY_LIMIT", "zero")
    with pytest.raises(ConfigurationError, match="QUEUE_DELIVERY_LIMIT"):
        load_settings(BrokerSettings)
    monkeypatch.setenv("QUEUE_DELIVERY_LIMIT", "5")
    monkeypatch.setenv("RABBITMQ_URL", "http://nope")
    with pytest.raises(ConfigurationError, match="RABBITMQ_URL"):
        load_settings(BrokerSettings)


def test_a_classic_queue_is_refused_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """Classic queues have no delivery limit: nothing would end a requeue loop."""
    monkeypatch.setenv("QUEUE_TYPE", "classic")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(BrokerSettings)
    assert str(caught.value) == "invalid configuration: QUEUE_TYPE: Input should be 'quorum'"


def test_unrelated_dotenv_lines_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QUEUE_DELIVERY_LIMIT", raising=False)
    (tmp_path / ".env").write_text("SOMETHING_ELSE=1\nQUEUE_DELIVERY_LIMIT=9\n")
    assert BrokerSettings().queue_delivery_limit == 9


def test_empty_mongodb_url_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_URL", "")
    assert MongoSettings(_env_file=None).mongodb_url is None


def test_retention_fits_the_ttl_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """MongoDB keeps expireAfterSeconds in 32 bits: 24,855 days is the most that fits."""
    monkeypatch.setenv("RETENTION_DAYS", "24855")
    assert load_settings(MongoSettings).retention_days * 86_400 <= 2**31 - 1
    monkeypatch.setenv("RETENTION_DAYS", "24856")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(MongoSettings)
    message = str(caught.value)
    assert message.startswith("invalid configuration: RETENTION_DAYS:")
    assert "at most 24855 days" in message
    assert "TTL index" in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        # x-delivery-limit past 2^63 - 1 failed start-up in the AMQP encoder.
        ("QUEUE_DELIVERY_LIMIT", "1001"),
        ("QUEUE_DELIVERY_LIMIT", str(2**63)),
        # MongoDB refuses database names of 64 bytes or more at the first write.
        ("MONGODB_DATABASE", "d" * 64),
        ("MONGODB_DATABASE", "é" * 32),
    ],
)
def test_values_a_dependency_would_refuse_are_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=f"invalid configuration: {variable}:"):
        load_settings(BrokerSettings if variable.startswith("QUEUE") else MongoSettings)


def test_the_bounds_themselves_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_DELIVERY_LIMIT", "1000")
    monkeypatch.setenv("MONGODB_DATABASE", "d" * 63)
    assert load_settings(BrokerSettings).queue_delivery_limit == 1000
    assert load_settings(MongoSettings).mongodb_database == "d" * 63
