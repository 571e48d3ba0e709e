"""What one attempt at one target amounted to, and what the job does next: pure functions,
so the retry rules are tested without a network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mercury.dispatch.base import InstanceResult

# DIMSE failure statuses that sending again cannot cure: refused SOP class, not authorised,
# data set does not match the SOP class (A9xx), cannot understand (Cxxx). Out of resources
# (A7xx) and processing failure (0110) are worth another try.
_PERMANENT_CODES = frozenset({0x0122, 0x0124})

# Failures without a status code that no retry cures; senders and the dispatcher word
# their messages with these phrases.
PERMANENT_PHRASES = ("not accepted", "cannot be converted", "no longer stored", "missing from")


def is_permanent(result: InstanceResult) -> bool:
    """Whether a failed instance would fail again however often it is sent."""
    if result.status != "failed":
        return False
    code = result.code
    if code is None:
        return any(phrase in result.message for phrase in PERMANENT_PHRASES)
    return code in _PERMANENT_CODES or 0xA900 <= code <= 0xA9FF or 0xC000 <= code <= 0xCFFF


AttemptOutcome = Literal["delivered", "partial", "rejected", "unreachable", "broken", "deferred"]


@dataclass(frozen=True)
class TargetAttempt:
    """One target's part of one attempt."""

    target: str
    outcome: AttemptOutcome
    sent: int = 0
    warnings: int = 0
    failed: int = 0
    permanent_failures: int = 0
    error: str | None = None

    @property
    def done(self) -> bool:
        """Nothing left that another attempt could deliver to this target."""
        return self.outcome == "delivered" or (
            self.outcome in ("partial", "rejected") and self.failed == self.permanent_failures
        )


def summarise(target: str, results: Sequence[InstanceResult], error: str | None) -> TargetAttempt:
    """Fold per-instance results (and the exception, if the shipment broke off) into one."""
    sent = sum(1 for r in results if r.status == "sent")
    warnings = sum(1 for r in results if r.status == "warning")
    failures = [r for r in results if r.status == "failed"]
    permanent = sum(1 for r in failures if is_permanent(r))
    if error is not None:
        return TargetAttempt(target, "broken", sent, warnings, len(failures), permanent, error)
    if not failures:
        return TargetAttempt(target, "delivered", sent, warnings)
    first = failures[0]
    reason = f"{len(failures)} instance(s) failed, first {first.sop_instance_uid}: " + (
        f"{first.message} (status 0x{first.code:04X})" if first.code is not None else first.message
    )
    kind: AttemptOutcome = "rejected" if sent + warnings == 0 else "partial"
    return TargetAttempt(target, kind, sent, warnings, len(failures), permanent, reason)


JobVerdict = Literal["succeeded", "failed", "retry", "wait"]


def verdict(attempts: Sequence[TargetAttempt], *, gives_up: bool) -> JobVerdict:
    """The job's next state after this attempt.

    succeeded: every target got everything it can get (permanent per-instance failures are
    recorded, and make the job failed so someone looks at them); wait: only targets that
    are held or down remain, so the attempt does not count; retry or failed otherwise.
    """
    pending = [a for a in attempts if not a.done]
    if not pending:
        return "failed" if any(a.permanent_failures for a in attempts) else "succeeded"
    if all(a.outcome == "deferred" for a in pending):
        return "wait"
    return "failed" if gives_up else "retry"
