"""Typed dependencies that hand route functions the app's running parts."""

from typing import Annotated

from fastapi import Depends, Request

from ingest.errors import DatabaseUnavailableError
from ingest.metrics import IngestMetrics
from ingest.publishing import ActivityPublisher
from ingest.reads import ActivityReader
from ingest.settings import IngestSettings


async def get_publisher(request: Request) -> ActivityPublisher:
    """The app's publisher."""
    publisher: ActivityPublisher = request.app.state.publisher
    return publisher


async def get_settings(request: Request) -> IngestSettings:
    """The app's settings."""
    settings: IngestSettings = request.app.state.settings
    return settings


def get_reader(request: Request) -> ActivityReader:
    """The app's MongoDB reader; 503 when MONGODB_URL is not configured."""
    reader: ActivityReader | None = request.app.state.reader
    if reader is None:
        raise DatabaseUnavailableError("The read API has no database configured (MONGODB_URL).")
    return reader


def get_metrics(request: Request) -> IngestMetrics:
    """The app's metrics."""
    metrics: IngestMetrics = request.app.state.metrics
    return metrics


MetricsDep = Annotated[IngestMetrics, Depends(get_metrics)]
PublisherDep = Annotated[ActivityPublisher, Depends(get_publisher)]
ReaderDep = Annotated[ActivityReader, Depends(get_reader)]
SettingsDep = Annotated[IngestSettings, Depends(get_settings)]
