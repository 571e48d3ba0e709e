"""The one small interface every target type implements, and the values it trades in.

A sender is built once per target from its configuration. The dispatcher hands it a
:class:`Shipment` (one job's instances for one target) and gets back a :class:`SendReport`
with a result per instance; it never needs to know what kind of target it talks to.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

InstanceStatus = Literal["sent", "warning", "failed"]


@dataclass(frozen=True, slots=True)
class OutgoingInstance:
    """One stored instance to send; ``path`` is its file in the spool."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    series_uid: str
    study_uid: str
    path: Path
    size: int

    @property
    def export_name(self) -> str:
        """File name for folder-like targets: mercure's ``<SeriesUID>#<SOPInstanceUID>.dcm``.

        Both UIDs passed the UID grammar check before they were stored, so the name is safe.
        """
        return f"{self.series_uid}#{self.sop_instance_uid}.dcm"


@dataclass(frozen=True, slots=True)
class Origin:
    """How the job's images reached us: for ``pass_sender_aet``, ``pass_receiver_aet`` and
    the ``sender`` host of DICOM targets."""

    calling_ae: str
    called_ae: str
    peer_host: str


@dataclass(frozen=True)
class Shipment:
    """One job's instances for one target. ``cancel`` is set when the dispatcher lost the
    job's lease or is shutting down: stop at the next instance boundary."""

    job_id: str
    target: str
    instances: Sequence[OutgoingInstance]
    origin: Origin
    attempt: int = 1
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class InstanceResult:
    """What happened to one instance. ``code`` is the DIMSE or HTTP status when there is one."""

    sop_instance_uid: str
    status: InstanceStatus
    code: int | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class CommitmentResult:
    """The peer's storage commitment answer for one instance."""

    sop_instance_uid: str
    committed: bool
    reason: str = ""


@dataclass
class SendReport:
    """Everything a sender learned while sending one shipment."""

    results: list[InstanceResult] = field(default_factory=list)
    commitments: list[CommitmentResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Things worth journaling, such as 'decompressed 3 instances for this peer'."""

    @property
    def failed(self) -> list[InstanceResult]:
        return [result for result in self.results if result.status == "failed"]


class DispatchError(Exception):
    """A shipment could not be completed. ``results`` holds what was learned before the
    failure, so instances that did arrive are recorded as such."""

    def __init__(self, message: str, results: Sequence[InstanceResult] = ()) -> None:
        super().__init__(message)
        self.results = list(results)


class TargetUnreachable(DispatchError):
    """The target could not be reached at all (refused, DNS, TLS handshake, association
    rejected, authentication refused). Counts toward the target's circuit breaker."""


class SendFailed(DispatchError):
    """The transfer started but broke off (association aborted, timeout, server error)."""


@dataclass(frozen=True)
class ProbeResult:
    """A connection test's verdict, for `mercury target test` and the circuit breaker."""

    ok: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)


class Sender(Protocol):
    """What a target type implements: send, test the connection, describe itself."""

    resumable: ClassVar[bool]
    """True when a retry may send only the instances that did not arrive (DICOM, DICOMweb);
    False when a job is one unit the reader sees whole (folder, s3, sftp: the `.complete`
    marker), so a retry sends it all again."""

    def send(self, shipment: Shipment) -> SendReport:
        """Send every instance; raise :class:`TargetUnreachable` or :class:`SendFailed`
        when the shipment as a whole could not be completed."""
        ...

    def probe(self) -> ProbeResult:
        """Test the connection without sending images (C-ECHO, an HTTP probe, a write probe)."""
        ...

    def describe(self) -> str:
        """One line for logs and the UI, without secrets: 'DICOM ORTHANC@pacs:104'."""
        ...


@dataclass(frozen=True)
class SenderContext:
    """What a sender may need beyond its own configuration."""

    default_ae_title: str
    """Our calling AE title when a DICOM target sets no aet_source: the receiver's first."""
    work_folder: Path
    """A folder on the spool's disk for temporary files (decompressed copies)."""
    extra: dict[str, Any] = field(default_factory=dict)


def parse_file_filter(text: str) -> list[str]:
    """mercure's file_filter: comma-separated glob patterns of files not to send."""
    return [pattern.strip() for pattern in text.split(",") if pattern.strip()]


def filtered(
    instances: Sequence[OutgoingInstance], patterns: Sequence[str]
) -> list[OutgoingInstance]:
    """The instances whose export name matches none of the patterns."""
    from fnmatch import fnmatch

    return [
        item
        for item in instances
        if not any(fnmatch(item.export_name, pattern) for pattern in patterns)
    ]
