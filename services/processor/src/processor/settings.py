"""Processor settings, composed from the contract's pieces."""

from typing import Self

from pydantic import Field, PositiveFloat, PositiveInt, model_validator

from activity_contract.settings import (
    BrokerSettings,
    LoggingSettings,
    MongoSettings,
    TrackingPlanSettings,
)
from activity_contract.topology import MAX_MESSAGE_BYTES

MIB = 1024 * 1024


class ProcessorSettings(BrokerSettings, MongoSettings, LoggingSettings, TrackingPlanSettings):
    """Everything the processor reads from its environment."""

    processor_host: str = "0.0.0.0"  # noqa: S104 - a service listens on all interfaces
    processor_port: int = Field(default=8001, ge=0, le=65535)
    processor_batch_size: PositiveInt = Field(default=500, le=10_000)
    processor_batch_wait_ms: PositiveInt = 50
    processor_prefetch: PositiveInt = Field(default=250, le=65_535)
    # How long a failing database write is retried in-process before its message is
    # requeued (which counts toward QUEUE_DELIVERY_LIMIT).
    processor_write_retry_seconds: PositiveFloat = Field(default=60.0, le=3600)
    processor_max_bytes_in_flight: PositiveInt = Field(default=512 * MIB, ge=MAX_MESSAGE_BYTES)

    @model_validator(mode="after")
    def _prefetch_fits_the_byte_budget(self) -> Self:
        # Every message in hand may be as large as the contract allows, and during a
        # database outage every one of them is held until it is written or requeued.
        held = self.processor_prefetch * MAX_MESSAGE_BYTES
        if held > self.processor_max_bytes_in_flight:
            raise ValueError(
                f"PROCESSOR_PREFETCH ({self.processor_prefetch}) x the largest message "
                f"({MAX_MESSAGE_BYTES // MIB} MiB) = {held // MIB} MiB exceeds "
                f"PROCESSOR_MAX_BYTES_IN_FLIGHT ({self.processor_max_bytes_in_flight // MIB} MiB)"
                f": lower the prefetch or raise the budget"
            )
        return self
