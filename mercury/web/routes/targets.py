"""GET /api/targets; POST /api/targets/{name}/hold and /release (operator)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from mercury.store import target_state
from mercury.web import rows, schemas
from mercury.web.audit import actor
from mercury.web.auth import Operator, Viewer
from mercury.web.context import Context, Db
from mercury.web.params import TargetName
from mercury.web.problems import Problem, responses

router = APIRouter(prefix="/targets", tags=["targets"], responses=responses(401, 403, 422))


@router.get("", summary="Targets with circuit state and hold")
def list_targets(_user: Viewer, db: Db, context: Context) -> list[schemas.TargetInfo]:
    """Every configured target: type, circuit (closed = up, open = down), consecutive
    failures, last error, and whether it is held by hand."""
    states = target_state.all_states(db)
    return [
        rows.target_info(name, target.target_type, states.get(name))
        for name, target in context.config.targets.items()
    ]


def _known(context: Context, name: str) -> str:
    targets = context.config.targets
    if name not in targets:
        raise Problem(404, f"no target named {name} in the configuration")
    return targets[name].target_type


@router.post(
    "/{name}/hold", summary="Stop sending to a target (operator)", responses=responses(404)
)
def hold_target(
    name: TargetName,
    user: Operator,
    db: Db,
    context: Context,
    body: Annotated[schemas.HoldRequest | None, Body()] = None,
) -> schemas.TargetAction:
    """Its jobs wait, keeping their retries, until released. Journaled as ``target.held``
    with ``by: web:<user>``."""
    kind = _known(context, name)
    reason = body.reason if body else ""
    changed = target_state.hold(db, name, now=context.clock(), by=actor(user.name), reason=reason)
    db.commit()
    return schemas.TargetAction(
        target=rows.target_info(name, kind, target_state.all_states(db).get(name)), changed=changed
    )


@router.post(
    "/{name}/release",
    summary="Resume sending to a held target (operator)",
    responses=responses(404),
)
def release_target(
    name: TargetName, user: Operator, db: Db, context: Context
) -> schemas.TargetAction:
    """Journaled as ``target.released`` with ``by: web:<user>``."""
    kind = _known(context, name)
    changed = target_state.release(db, name, now=context.clock(), by=actor(user.name))
    db.commit()
    return schemas.TargetAction(
        target=rows.target_info(name, kind, target_state.all_states(db).get(name)), changed=changed
    )
