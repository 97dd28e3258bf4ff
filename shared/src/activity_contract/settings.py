"""Settings pieces both services compose into their own settings class (design §9)."""

from typing import Annotated, Literal, TypeVar

from pydantic import Field, PositiveInt, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from activity_contract.topology import QueueType

CommaSeparated = Annotated[list[str], NoDecode]


def split_commas(value: object) -> object:
    """Turn `a, b,,c` into `["a", "b", "c"]`; lists pass through."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class ServiceSettings(BaseSettings):
    """Base: environment variables and an optional `.env` file; unrelated lines ignored."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)


# aio-pika waits this long after each (re)connection before it can reconnect again; its
# 5 s default kept a service on 503s for up to 5 s after a dropped connection.
BROKER_RECONNECT_SECONDS = 1.0


class BrokerSettings(ServiceSettings):
    """RabbitMQ connection and queue topology."""

    rabbitmq_url: str = Field(default="amqp://guest:guest@localhost:5672/", pattern=r"^amqps?://")
    queue_type: QueueType = QueueType.QUORUM
    queue_delivery_limit: PositiveInt = 5


class MongoSettings(ServiceSettings):
    """MongoDB connection; `mongodb_url` unset means the embedded local server."""

    mongodb_url: str | None = Field(default=None, pattern=r"^mongodb(\+srv)?://")
    mongodb_database: str = Field(default="event_tracker", min_length=1, pattern=r"^[^/\\. \"$]+$")
    retention_days: int = Field(default=0, ge=0)

    @field_validator("mongodb_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value


class LoggingSettings(ServiceSettings):
    """Log level and format."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _normalise_case(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if value.lower() not in ("console", "json") else value.lower()


class ConfigurationError(SystemExit):
    """Invalid configuration: stops the process with a message naming each variable."""


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(settings_class: type[SettingsT]) -> SettingsT:
    """Read settings from the environment, failing fast with the variables' names."""
    try:
        return settings_class()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']).upper()}: {issue['msg']}"
            if issue["loc"]
            else issue["msg"]  # a rule across variables names them itself
            for issue in error.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None
