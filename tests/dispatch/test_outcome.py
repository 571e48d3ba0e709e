"""How per-instance results become an attempt's outcome and the job's next state."""

from __future__ import annotations

import pytest

from mercury.dispatch.base import InstanceResult
from mercury.dispatch.outcome import TargetAttempt, is_permanent, summarise, verdict


def r(uid: str, status: str = "sent", code: int | None = None, message: str = "") -> InstanceResult:
    return InstanceResult(uid, status, code, message)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("result", "permanent"),
    [
        (r("1", "failed", 0x0122), True),  # SOP class not supported
        (r("1", "failed", 0xA900), True),  # data set does not match SOP class
        (r("1", "failed", 0xC123), True),  # cannot understand
        (r("1", "failed", 0xA700), False),  # out of resources: try again later
        (r("1", "failed", 0x0110), False),  # processing failure
        (r("1", "failed", None, "SOP class not accepted by peer"), True),
        (r("1", "failed", None, "connection reset"), False),
        (r("1", "warning", 0xB000), False),
    ],
)
def test_permanent_failures(result: InstanceResult, permanent: bool) -> None:
    assert is_permanent(result) is permanent


def test_all_sent_is_delivered() -> None:
    attempt = summarise("pacs", [r("1"), r("2", "warning", 0xB000)], None)
    assert (attempt.outcome, attempt.sent, attempt.warnings, attempt.done) == (
        "delivered",
        1,
        1,
        True,
    )


def test_partial_with_transient_failure_is_not_done() -> None:
    attempt = summarise("pacs", [r("1"), r("2", "failed", 0xA700, "Out of resources")], None)
    assert attempt.outcome == "partial"
    assert not attempt.done
    assert "2" in (attempt.error or "")
    assert "0xA700" in (attempt.error or "")


def test_only_permanent_failures_left_is_done_but_the_job_fails() -> None:
    attempt = summarise("pacs", [r("1"), r("2", "failed", 0x0122, "refused")], None)
    assert attempt.done
    assert verdict([attempt], gives_up=False) == "failed"


def test_broken_transfer_keeps_what_arrived() -> None:
    attempt = summarise("pacs", [r("1")], "association aborted")
    assert (attempt.outcome, attempt.sent, attempt.done) == ("broken", 1, False)


def test_verdicts() -> None:
    done = TargetAttempt("a", "delivered", 3)
    down = TargetAttempt("b", "deferred", error="held")
    broken = TargetAttempt("c", "broken", error="timeout")
    assert verdict([done], gives_up=False) == "succeeded"
    assert verdict([done, down], gives_up=False) == "wait"
    assert verdict([done, broken], gives_up=False) == "retry"
    assert verdict([done, broken], gives_up=True) == "failed"
    assert verdict([], gives_up=False) == "succeeded"
