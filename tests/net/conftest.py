from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.net.netsupport import RecordingHandler, ServerThread, make_image_files


@pytest.fixture
def handler() -> RecordingHandler:
    return RecordingHandler()


@pytest.fixture
def server(handler: RecordingHandler) -> Iterator[ServerThread]:
    with ServerThread(handler) as running:
        yield running


@pytest.fixture
def make_server() -> Iterator[Callable[..., ServerThread]]:
    """Start servers with non-default options; all are closed at teardown."""
    started: list[ServerThread] = []

    def make(handler: RecordingHandler, **options: Any) -> ServerThread:
        running = ServerThread(handler, **options).__enter__()
        started.append(running)
        return running

    yield make
    for running in reversed(started):
        running.__exit__(None, None, None)


@pytest.fixture(scope="session")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return list(make_image_files(tmp_path_factory.mktemp("small"), 5))
