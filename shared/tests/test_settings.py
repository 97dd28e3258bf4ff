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
