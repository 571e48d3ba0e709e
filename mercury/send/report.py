"""What a send reports: per-file results, progress, the overall outcome, and timeouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pynetdicom.status import GENERAL_STATUS, STORAGE_SERVICE_CLASS_STATUS

from mercury.dicom.net.dimse import status_category
from mercury.send.files import Skipped

NOT_SENT = "not sent: the association failed before this file"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait: TCP connect, association setup and release, each C-STORE
    response (from the last byte of the request sent), and a stalled connection (the peer
    not reading what we send)."""

    connect: float = 10.0
    acse: float = 30.0
    dimse: float = 60.0
    network: float = 120.0


Outcome = Literal["success", "warning", "failure"]


@dataclass(frozen=True, slots=True)
class FileResult:
    """What happened to one file: the peer's status (None if it was not sent) and why."""

    path: Path
    sop_instance_uid: str
    size: int
    status: int | None
    comment: str = ""

    @property
    def outcome(self) -> Outcome:
        """success, warning (stored, with a remark) or failure (not stored)."""
        if self.status is None:
            return "failure"
        category = status_category(self.status)
        if category == "Success":
            return "success"
        return "warning" if category == "Warning" else "failure"


@dataclass(frozen=True, slots=True)
class SendProgress:
    """Counts so far, passed to the progress callback before the first file and after each."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    last: FileResult | None


@dataclass(slots=True)
class SendReport:
    """The outcome of a send: one result per file, skipped paths, an association error."""

    results: list[FileResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    error: str | None = None
    elapsed: float = 0.0
    associations: int = 0

    def _with(self, outcome: Outcome) -> list[FileResult]:
        return [result for result in self.results if result.outcome == outcome]

    @property
    def succeeded(self) -> list[FileResult]:
        return self._with("success")

    @property
    def warnings(self) -> list[FileResult]:
        return self._with("warning")

    @property
    def failed(self) -> list[FileResult]:
        return self._with("failure")

    @property
    def bytes_sent(self) -> int:
        return sum(result.size for result in self.results if result.outcome != "failure")

    @property
    def ok(self) -> bool:
        """True if the association worked and every file was stored."""
        return self.error is None and not self.failed


def describe_status(status: int) -> str:
    """A C-STORE status as text: '0xA700 Refused: Out of Resources'."""
    entry = STORAGE_SERVICE_CLASS_STATUS.get(status) or GENERAL_STATUS.get(status)
    if entry is None:
        ranges = (
            (0xA700, 0xA7FF, "Refused: Out of Resources"),
            (0xA900, 0xA9FF, "Error: Data Set Does Not Match SOP Class"),
            (0xC000, 0xCFFF, "Error: Cannot Understand"),
        )
        text = next((name for low, high, name in ranges if low <= status <= high), "Unknown")
    else:
        text = entry[1] or entry[0]
    return f"0x{status:04X} {text}"
