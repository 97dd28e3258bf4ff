"""Ingest settings (design §9), composed from the contract's pieces."""

import re
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    IPvAnyNetwork,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
)
from pydantic_settings import NoDecode

from activity_contract.settings import (
    BrokerSettings,
    LoggingSettings,
    MongoSettings,
    TrackingPlanSettings,
    split_commas,
)

_PERIODS = {"second": 1, "minute": 60, "hour": 3600}
# The widest networks TRUSTED_PROXIES takes, per IP version: those of the largest private
# ranges (10.0.0.0/8, fc00::/7). Proxies live in networks of one's own; a wider network
# holds the public Internet, whose clients could then choose their own rate-limit key
# by writing X-Forwarded-For.
WIDEST_TRUSTED_PREFIX = {4: 8, 6: 7}
_RATE_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour)\s*$", re.IGNORECASE)


class RateLimitRule(BaseModel, frozen=True):
    """At most `limit` requests per `period_seconds` (a sliding window)."""

    limit: PositiveInt
    period_seconds: PositiveInt

    def __str__(self) -> str:
        """The rule as written in `RATE_LIMIT`, e.g. `100/minute`."""
        unit = {seconds: name for name, seconds in _PERIODS.items()}[self.period_seconds]
        return f"{self.limit}/{unit}"


def parse_rate_limit(value: object) -> object:
    """Turn `N/second`, `N/minute` or `N/hour` into a `RateLimitRule`; other types pass."""
    if not isinstance(value, str):
        return value
    match = _RATE_LIMIT.match(value)
    if match is None:
        raise ValueError("expected N/second, N/minute or N/hour with N >= 1, e.g. 100/minute")
    return RateLimitRule(limit=int(match.group(1)), period_seconds=_PERIODS[match.group(2).lower()])


RateLimitSetting = Annotated[RateLimitRule, NoDecode, BeforeValidator(parse_rate_limit)]
NetworkList = Annotated[list[IPvAnyNetwork], NoDecode]
SecretList = Annotated[list[SecretStr], NoDecode]


class IngestSettings(BrokerSettings, MongoSettings, LoggingSettings, TrackingPlanSettings):
    """Everything the ingest service reads from its environment."""

    ingest_host: str = "0.0.0.0"  # noqa: S104 - a service listens on all interfaces
    ingest_port: int = Field(default=8000, ge=0, le=65535)
    ingest_workers: PositiveInt = Field(default=1, le=64)
    ingest_max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Bytes of a request line and its headers; past it, 431 and the connection "
        "is closed.",
    )
    ingest_max_headers: int = Field(
        default=100, ge=10, le=1000, description="Header lines of one request; more is 431."
    )
    ingest_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300.0,
        description="A connection's first request, and each later one from its first byte, "
        "must have sent its headers within this, else the connection is closed.",
    )
    ingest_body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600.0,
        description="A request's body must be complete within this of its headers, else the "
        "connection is closed.",
    )
    ingest_max_connections: int = Field(
        default=4096,
        ge=1,
        le=1_000_000,
        description="Open connections per worker process; one more is closed at once.",
    )
    publish_timeout_seconds: PositiveFloat = 5.0
    redis_url: str = Field(default="redis://localhost:6379/0", pattern=r"^(redis|rediss|unix)://")
    redis_timeout_seconds: PositiveFloat = Field(
        default=0.5, le=5.0, description="Bound on one rate-limit round trip to Redis."
    )
    rate_limit: RateLimitSetting = Field(default="100/minute", validate_default=True)
    read_rate_limit: RateLimitSetting = Field(default="100/minute", validate_default=True)
    rate_limit_key_prefix: str = Field(default="event-tracker:rate-limit:", min_length=1)
    rate_limit_ipv4_prefix: int = Field(default=32, ge=8, le=32)
    rate_limit_ipv6_prefix: int = Field(default=64, ge=16, le=128)
    trusted_proxies: NetworkList = Field(default_factory=list)
    read_api_keys: SecretList = Field(default_factory=list)
    ingest_api_keys: SecretList = Field(default_factory=list)
    admin_api_keys: SecretList = Field(default_factory=list)

    _split = field_validator(
        "trusted_proxies", "read_api_keys", "ingest_api_keys", "admin_api_keys", mode="before"
    )(split_commas)

    @field_validator("trusted_proxies")
    @classmethod
    def _no_catch_all_proxies(cls, networks: list[IPvAnyNetwork]) -> list[IPvAnyNetwork]:
        for network in networks:
            widest = WIDEST_TRUSTED_PREFIX[network.version]
            if network.prefixlen < widest:
                raise ValueError(
                    f"{network} is wider than /{widest}: it trusts clients, not only proxies,"
                    " and each could pick its own rate-limit key with X-Forwarded-For; list"
                    " your proxies' networks"
                )
        return networks
