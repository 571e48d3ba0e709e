"""What the cleaner reports: the series it would remove, what it removed, what a scan did."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from mercury.clean.expiry import IndexExpiry
from mercury.clean.facts import SeriesInfo
from mercury.clean.outcome import Outcome

Reason = Literal["retention", "emergency"]


@dataclass(frozen=True)
class Candidate:
    """A series the cleaner would remove, and why."""

    info: SeriesInfo
    outcome: Outcome
    reason: Reason
    expires_at: datetime | None = None


@dataclass
class Cleaned:
    """What cleaning one series removed."""

    series_uid: str
    study_uid: str
    description: str
    outcome: str
    reason: Reason
    files: int = 0
    bytes: int = 0
    kept: int = 0
    folders: list[str] = field(default_factory=list)
    resumed: bool = False
    reopened: bool = False


@dataclass(frozen=True)
class EmergencyReport:
    threshold: float
    before: float
    after: float
    removed: int

    @property
    def relieved(self) -> bool:
        return self.after <= self.threshold


@dataclass
class CleanReport:
    cleaned: list[Cleaned] = field(default_factory=list)
    resumed: int = 0
    retention_ran: bool = False
    emergency: EmergencyReport | None = None
    index: IndexExpiry | None = None
    folders: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return sum(item.files for item in self.cleaned)

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.cleaned)


class Listener(Protocol):
    """Progress of a scan, for a progress bar."""

    def planned(self, what: str, total: int) -> None: ...
    def cleaned(self, item: Cleaned) -> None: ...


class Quiet:
    def planned(self, what: str, total: int) -> None:
        pass

    def cleaned(self, item: Cleaned) -> None:
        pass
