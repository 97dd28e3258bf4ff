"""Typed dependencies that hand route functions the app's running parts."""

from typing import Annotated

from fastapi import Depends, Request

from ingest.publishing import ActivityPublisher
from ingest.settings import IngestSettings


def get_publisher(request: Request) -> ActivityPublisher:
    """The app's publisher."""
    publisher: ActivityPublisher = request.app.state.publisher
    return publisher


def get_settings(request: Request) -> IngestSettings:
    """The app's settings."""
    settings: IngestSettings = request.app.state.settings
    return settings


PublisherDep = Annotated[ActivityPublisher, Depends(get_publisher)]
SettingsDep = Annotated[IngestSettings, Depends(get_settings)]
