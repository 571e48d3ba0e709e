"""COMPLETED at routing: notification rules (unless their completion trigger is off) and
route rules with an address and the trigger on; processing rules get theirs from the
processor (see the end-to-end test)."""

from __future__ import annotations

from typing import Any

import pytest

from mercury.config.rules import Rule
from mercury.route.planner import plan_jobs

HOOK = {"notification_webhook": "http://x/hook"}


def notify_jobs(**rule: Any) -> list[dict[str, Any]]:
    specs = plan_jobs(
        [("r", Rule(**rule))], scope="series", study_uid="1.2", series_uid="1.2.3", instances=["i"]
    )
    return [dict(spec.details) for spec in specs if spec.kind == "notify"]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"action": "notification"}, 1),
        ({"action": "notification", "notification_trigger_completion": False}, 0),
        ({"action": "route", "target": "pacs", **HOOK}, 1),
        ({"action": "route", "target": "pacs", "notification_email": "a@x.org"}, 1),
        ({"action": "route", "target": "pacs"}, 0),
        (
            {"action": "route", "target": "pacs", "notification_trigger_completion": False, **HOOK},
            0,
        ),
        ({"action": "process", "processing_module": "m", **HOOK}, 0),
        ({"action": "both", "processing_module": "m", "target": "pacs", **HOOK}, 0),
    ],
)
def test_completion_at_routing(rule: dict[str, Any], expected: int) -> None:
    assert notify_jobs(**rule) == [{"event": "completed"}] * expected
