"""Validators that find several problems at once report them all, each at its own key.

pydantic turns a ``ValueError`` raised in a validator into one error at the validated
object; raising :class:`LocatedIssues` instead keeps every problem and its location, and
:mod:`mercury.config.errors` unpacks them into separate messages.
"""

from __future__ import annotations

from collections.abc import Sequence

Loc = tuple[str | int, ...]
"""A key path inside the configuration, such as ``("rules", "ct", "target")``."""


class LocatedIssues(ValueError):
    """Problems found by one validator, located relative to the object it validated."""

    def __init__(self, issues: Sequence[tuple[Loc, str]]) -> None:
        self.issues: list[tuple[Loc, str]] = list(issues)
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in issues))


def raise_if_any(issues: Sequence[tuple[Loc, str]]) -> None:
    """Raise :class:`LocatedIssues` when a validator found anything."""
    if issues:
        raise LocatedIssues(issues)
