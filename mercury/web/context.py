"""What every request handler reaches through the app: the index, the configuration file,
the clock and the services running next to the web service."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from mercury.config.models import MercuryConfig
from mercury.web.configfile import ConfigFile


@dataclass
class WebContext:
    engine: Engine
    config_file: ConfigFile
    clock: Callable[[], datetime]
    services: Mapping[str, str] = field(default_factory=dict)
    owns_engine: bool = False
    apply_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def config(self) -> MercuryConfig:
        return self.config_file.current()


def get_context(request: Request) -> WebContext:
    context = request.app.state.mercury
    assert isinstance(context, WebContext)
    return context


def get_db(context: Annotated[WebContext, Depends(get_context)]) -> Iterator[Session]:
    with context.sessions() as session:
        yield session


Context = Annotated[WebContext, Depends(get_context)]
Db = Annotated[Session, Depends(get_db)]
