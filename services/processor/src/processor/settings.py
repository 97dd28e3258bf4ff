"""Processor settings (SPEC §9), composed from the contract's pieces."""

from pydantic import Field, PositiveInt

from activity_contract.settings import BrokerSettings, LoggingSettings, MongoSettings


class ProcessorSettings(BrokerSettings, MongoSettings, LoggingSettings):
    """Everything the processor reads from its environment."""

    processor_host: str = "0.0.0.0"  # noqa: S104 - a service listens on all interfaces
    processor_port: int = Field(default=8001, ge=0, le=65535)
    processor_batch_size: PositiveInt = Field(default=500, le=10_000)
    processor_batch_wait_ms: PositiveInt = 50
    processor_prefetch: PositiveInt = Field(default=1000, le=65_535)
