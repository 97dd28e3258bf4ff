"""Settings pieces both services compose into their own settings class (design §9)."""

from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import Field, PositiveInt, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from activity_contract.topology import QueueType
from activity_contract.tracking_plan import (
    Enforcement,
    PlanError,
    TrackingPlan,
    UnplannedPolicy,
    load_plan_events,
)

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
# Past this, a message that keeps failing would be retried for days rather than
# dead-lettered (RabbitMQ itself takes up to 2^63 - 1, and fails start-up beyond).
MAX_DELIVERY_LIMIT = 1000
# MongoDB keeps a TTL index's `expireAfterSeconds` in 32 bits: 24,855 days (about 68
# years) is the most whose seconds fit.
MAX_RETENTION_DAYS = (2**31 - 1) // 86_400
# MongoDB refuses database names of 64 bytes or more.
MAX_DATABASE_NAME_BYTES = 63


class BrokerSettings(ServiceSettings):
    """RabbitMQ connection and queue topology."""

    rabbitmq_url: str = Field(default="amqp://guest:guest@localhost:5672/", pattern=r"^amqps?://")
    queue_type: QueueType = QueueType.QUORUM
    queue_delivery_limit: PositiveInt = Field(default=5, le=MAX_DELIVERY_LIMIT)


class MongoSettings(ServiceSettings):
    """MongoDB connection; `mongodb_url` unset means the embedded local server."""

    mongodb_url: str | None = Field(default=None, pattern=r"^mongodb(\+srv)?://")
    mongodb_database: str = Field(default="event_tracker", min_length=1, pattern=r"^[^/\\. \"$]+$")
    retention_days: int = Field(default=0, ge=0)

    @field_validator("mongodb_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("mongodb_database")
    @classmethod
    def _name_fits_mongodb(cls, value: str) -> str:
        if len(value.encode()) > MAX_DATABASE_NAME_BYTES:
            raise ValueError(
                f"at most {MAX_DATABASE_NAME_BYTES} bytes: MongoDB refuses longer database names"
            )
        return value

    @field_validator("retention_days")
    @classmethod
    def _retention_fits_the_ttl_index(cls, value: int) -> int:
        if value > MAX_RETENTION_DAYS:
            raise ValueError(
                f"at most {MAX_RETENTION_DAYS} days (about 68 years): MongoDB's TTL index holds"
                " the seconds in 32 bits; 0 keeps events forever"
            )
        return value


class LoggingSettings(ServiceSettings):
    """Log level and format; traces (OpenTelemetry, off by default)."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["console", "json"] = "console"
    # `otlp`: spans go to OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/HTTP), read by the exporter.
    otel_traces_exporter: Literal["none", "otlp"] = "none"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _normalise_case(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if value.lower() not in ("console", "json") else value.lower()


class ConfigurationError(SystemExit):
    """Invalid configuration: stops the process with a message naming each variable."""


class TrackingPlanSettings(ServiceSettings):
    """The tracking plan both services enforce (docs/tracking-plan.md); none by default."""

    tracking_plan_dir: Path | None = Field(
        default=None,
        description="Folder of the plan's files, one per event type; empty: no plan.",
    )
    tracking_plan_enforcement: Enforcement = Field(
        default=Enforcement.ENFORCE,
        description="A planned event that breaks its schema: refused (enforce), recorded "
        "(warn) or not checked (off); a plan file may set its own.",
    )
    tracking_plan_unplanned: UnplannedPolicy = Field(
        default=UnplannedPolicy.ALLOW,
        description="An event of a type the plan does not list: allow, warn or refuse.",
    )

    @field_validator("tracking_plan_dir", mode="before")
    @classmethod
    def _empty_is_no_plan(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tracking_plan_enforcement", "tracking_plan_unplanned", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    def tracking_plan(self) -> TrackingPlan | None:
        """The plan, loaded and compiled; None without one; a refusal naming the cause."""
        if self.tracking_plan_dir is None:
            return None
        try:
            events = load_plan_events(self.tracking_plan_dir)
        except PlanError as error:
            raise ConfigurationError(f"invalid configuration: TRACKING_PLAN_DIR: {error}") from None
        return TrackingPlan(events, self.tracking_plan_enforcement, self.tracking_plan_unplanned)


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
