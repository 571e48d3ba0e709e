"""The web interface: server-rendered pages (Jinja2) with htmx for the live parts, on top
of the REST API's authentication, roles and configuration service. Every asset is served
by mercury itself (no build step, no network access needed in the browser).

:data:`router` holds the pages; :func:`static_files` serves /static.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)


def _router() -> APIRouter:
    from mercury.web.ui import (
        account,
        audit,
        configs,
        dashboard,
        images,
        modules,
        queues,
        rules,
        targets,
        users,
    )

    router = APIRouter(include_in_schema=False)
    for module in (
        account,
        audit,
        configs,
        dashboard,
        images,
        modules,
        queues,
        rules,
        targets,
        users,
    ):
        router.include_router(module.router)
    return router


router = _router()

__all__ = ["STATIC_DIR", "router", "static_files"]
