"""What the processor may hold is bounded in bytes: prefetch x the largest message."""

import pytest
from pydantic import ValidationError

from activity_contract.settings import ConfigurationError, load_settings
from activity_contract.topology import MAX_MESSAGE_BYTES
from processor.settings import MIB, ProcessorSettings


def test_the_defaults_fit_the_budget() -> None:
    settings = ProcessorSettings(_env_file=None)
    held = settings.processor_prefetch * MAX_MESSAGE_BYTES
    assert held <= settings.processor_max_bytes_in_flight


def test_a_prefetch_over_the_budget_is_refused_naming_both_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROCESSOR_PREFETCH", "1000")
    with pytest.raises(ConfigurationError) as refused:
        load_settings(ProcessorSettings)
    message = str(refused.value)
    assert "PROCESSOR_PREFETCH (1000)" in message
    assert "PROCESSOR_MAX_BYTES_IN_FLIGHT (512 MiB)" in message


def test_a_larger_budget_admits_a_larger_prefetch() -> None:
    settings = ProcessorSettings(
        _env_file=None, processor_prefetch=1000, processor_max_bytes_in_flight=2000 * MIB
    )
    assert settings.processor_prefetch == 1000
    with pytest.raises(ValidationError):
        ProcessorSettings(_env_file=None, processor_max_bytes_in_flight=MAX_MESSAGE_BYTES - 1)
