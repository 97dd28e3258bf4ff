"""Run the processor: `python -m processor` (or `event-tracker-processor`)."""

import uvicorn

from activity_contract.logs import configure_logging
from activity_contract.settings import load_settings
from activity_contract.startup import StartupFailureLine
from processor.app import GRACEFUL_TIMEOUT_SECONDS, create_app
from processor.settings import ProcessorSettings


def main() -> None:
    """Consume until SIGTERM or Ctrl-C; serve health and docs on PROCESSOR_HOST:PORT."""
    settings = load_settings(ProcessorSettings)
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        StartupFailureLine(create_app(settings)),
        host=settings.processor_host,
        port=settings.processor_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(GRACEFUL_TIMEOUT_SECONDS),
    )


if __name__ == "__main__":
    main()
