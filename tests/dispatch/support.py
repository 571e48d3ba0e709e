"""Helpers for sender tests: turn DICOM files into the values a sender receives."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pydicom

from mercury.dispatch.base import Origin, OutgoingInstance, Shipment

ORIGIN = Origin(calling_ae="MODALITY", called_ae="MERCURY", peer_host="127.0.0.1")


def outgoing(paths: Iterable[Path]) -> list[OutgoingInstance]:
    """One OutgoingInstance per file, read from the file's own meta and dataset."""
    items = []
    for path in sorted(paths):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        items.append(
            OutgoingInstance(
                sop_instance_uid=str(ds.SOPInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
                series_uid=str(ds.SeriesInstanceUID),
                study_uid=str(ds.StudyInstanceUID),
                path=path,
                size=path.stat().st_size,
            )
        )
    return items


def shipment(paths: Iterable[Path], *, job_id: str = "job1", target: str = "t") -> Shipment:
    return Shipment(job_id=job_id, target=target, instances=outgoing(paths), origin=ORIGIN)
