"""Ingest settings (SPEC §9), composed from the contract's pieces."""

from pydantic import Field, PositiveFloat, field_validator

from activity_contract.settings import (
    BrokerSettings,
    CommaSeparated,
    LoggingSettings,
    MongoSettings,
    split_commas,
)


class IngestSettings(BrokerSettings, MongoSettings, LoggingSettings):
    """Everything the ingest service reads from its environment."""

    ingest_host: str = "0.0.0.0"  # noqa: S104 - a service listens on all interfaces
    ingest_port: int = Field(default=8000, ge=0, le=65535)
    publish_timeout_seconds: PositiveFloat = 5.0
    redis_url: str = Field(default="redis://localhost:6379/0", pattern=r"^(redis|rediss|unix)://")
    rate_limit: str = "100/minute"
    trusted_proxies: CommaSeparated = Field(default_factory=list)
    read_api_keys: CommaSeparated = Field(default_factory=list)
    ingest_api_keys: CommaSeparated = Field(default_factory=list)

    _split = field_validator("trusted_proxies", "read_api_keys", "ingest_api_keys", mode="before")(
        split_commas
    )
