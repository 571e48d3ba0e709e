"""GET /api/health: is this mercury working (no authentication, for load balancers)."""

from __future__ import annotations

import shutil

from fastapi import APIRouter, Response
from sqlalchemy import text

from mercury import __version__
from mercury.config.models import MercuryConfig
from mercury.web.context import Context
from mercury.web.schemas import DatabaseHealth, Health, SpoolHealth

router = APIRouter(tags=["health"])


def _database(context: Context) -> DatabaseHealth:
    try:
        with context.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DatabaseHealth(reachable=False, error=first[:300])
    return DatabaseHealth(reachable=True)


def _spool(config: MercuryConfig) -> SpoolHealth:
    """Free space of the spool's disk (a statvfs; no file of the spool is read)."""
    storage = config.storage
    reserve = storage.reserve_mb * 2**20
    try:
        free = shutil.disk_usage(storage.spool).free
    except OSError as exc:
        return SpoolHealth(
            path=str(storage.spool),
            free_bytes=None,
            reserve_bytes=reserve,
            ok=False,
            error=exc.strerror or str(exc),
        )
    return SpoolHealth(
        path=str(storage.spool), free_bytes=free, reserve_bytes=reserve, ok=free >= reserve
    )


@router.get(
    "/health",
    summary="Health: database, spool free space, services",
    responses={503: {"model": Health, "description": "The database is unreachable."}},
)
def health(context: Context, response: Response) -> Health:
    config = context.config
    database = _database(context)
    spool = _spool(config)
    services = dict(context.services)
    healthy = database.reachable and spool.ok and all(s == "running" for s in services.values())
    if not database.reachable:
        response.status_code = 503
    return Health(
        status="ok" if healthy else "degraded",
        version=__version__,
        appliance_name=config.appliance_name,
        database=database,
        spool=spool,
        services=services,
    )
