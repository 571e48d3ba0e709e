"""The FastAPI application: the REST API under /api, metrics at /metrics, the API reference
at /api/docs (self-contained) and its OpenAPI spec at /api/openapi.json."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request, Response
from sqlalchemy import Engine

from mercury import __version__
from mercury.config.models import MercuryConfig
from mercury.store.db import make_engine, upgrade
from mercury.store.models import utcnow
from mercury.web import docs, metrics, problems, ui
from mercury.web.apply import record_file
from mercury.web.configfile import ConfigFile
from mercury.web.context import WebContext
from mercury.web.routes import config as config_routes
from mercury.web.routes import (
    events,
    health,
    jobs,
    series,
    session,
    studies,
    targets,
    users,
)

DESCRIPTION = (
    "mercury's REST API: series, studies, jobs, targets, the journal and the configuration. "
    "Authenticate with `Authorization: Bearer TOKEN` (`mercury tokens create`) or the session "
    "cookie of POST /api/login (then send X-CSRF-Token with changes). Roles: viewer reads, "
    "operator also retries and cancels jobs, holds targets and completes studies, admin also "
    "applies configurations and manages users. See docs/api.md."
)


def create_app(
    config_path: Path,
    *,
    engine: Engine | None = None,
    config: MercuryConfig | None = None,
    services: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """The web application for the configuration file at ``config_path``.

    ``engine``: the index to use (`mercury serve` shares its own); by default one is opened
    (and migrated) from the configuration and closed with the app. ``services``: a live view
    of the services running next to the web service, for /api/health.
    """
    config_file = ConfigFile(config_path, config)
    owns_engine = engine is None
    if engine is None:
        engine = make_engine(config_file.current().storage.database)
        upgrade(engine)
    context = WebContext(
        engine=engine,
        config_file=config_file,
        clock=clock,
        services=services if services is not None else {},
        owns_engine=owns_engine,
    )
    record_file(context)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if context.owns_engine:
            context.engine.dispose()

    app = FastAPI(
        title="mercury",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.mercury = context
    app.state.metrics = metrics.make_registry(context)
    problems.install(app)
    api = APIRouter(prefix="/api")
    for module in (health, session, series, studies, jobs, targets, events, config_routes, users):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(metrics.router)
    app.include_router(docs.router)
    app.include_router(ui.router)
    app.mount("/static", ui.static_files(), name="static")
    app.middleware("http")(_headers)
    return app


async def _headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.url.path.startswith("/api/") and request.url.path != "/api/docs":
        response.headers.setdefault("Cache-Control", "no-store")
    return response
