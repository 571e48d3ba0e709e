"""Fixtures of the notification tests: an index on both databases, a webhook receiver
and an SMTP server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from mercury.store.db import make_engine, upgrade
from tests.notify.support import Index, SmtpServer, WebhookReceiver


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def index(engine: Engine) -> Iterator[Index]:
    index = Index(engine)
    index.store_series()
    try:
        yield index
    finally:
        index.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.controller.start()
    try:
        yield server
    finally:
        server.controller.stop()
