"""Send DICOM files to a C-STORE SCP over one association, checking every response.

Files whose transfer syntax the peer accepts are sent as stored: the encoded dataset is
streamed from the file without being decoded (byte-identical, constant memory). Others are
decoded and re-encoded in an uncompressed little endian transfer syntax the peer accepted,
when pydicom can do that (compressed files need pydicom's decoders; big endian files are
not converted). Problems are reported per file and per association, with what to do about
them, never raised at the caller.

The associations are mercury's own requestor's (:mod:`mercury.dicom.net.client`): one
blocking socket on the calling thread, TCP_NODELAY set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence

from pydicom import dcmread
from pydicom.dataset import Dataset

from mercury.dicom.net import client
from mercury.dicom.syntax import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from mercury.send.contexts import FALLBACK_SYNTAXES, plan_associations
from mercury.send.diagnose import association_failure, ended_while_sending, uid_name
from mercury.send.files import DicomFile, Skipped, find_dicom_files
from mercury.send.report import NOT_SENT, FileResult, SendProgress, SendReport, Timeouts

DEFAULT_CALLING_AE = "MERCURY_SCU"
_UNCOMPRESSED = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    }
)

ProgressCallback = Callable[[SendProgress], None]


def _prepare_dataset(item: DicomFile) -> Dataset:
    """The decoded dataset, uncompressed, for peers that refuse the file's own syntax."""
    dataset = dcmread(item.path)
    if item.transfer_syntax_uid not in _UNCOMPRESSED:
        dataset.decompress(generate_instance_uid=False)  # keep the SOP Instance UID
    return dataset


class _Ended(Exception):
    """The association ended while sending ``result``'s file."""

    def __init__(self, result: FileResult, error: str) -> None:
        super().__init__(error)
        self.result = result
        self.error = error


def _send_one(assoc: client.ClientAssociation, item: DicomFile, timeouts: Timeouts) -> FileResult:
    """Send one file; raises _Ended if the association ends meanwhile."""

    def result(status: int | None, comment: str = "") -> FileResult:
        return FileResult(item.path, item.sop_instance_uid, item.size, status, comment)

    accepted = assoc.accepted_syntaxes(item.sop_class_uid)
    fallback = next((syntax for syntax in FALLBACK_SYNTAXES if syntax in accepted), None)
    try:
        if item.transfer_syntax_uid in accepted:
            response = assoc.store_file(item.path)  # streamed as stored
        elif item.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN and accepted:
            # pydicom does not byte-swap OW/OF/... values (pixel data) when changing order.
            return result(
                None,
                "the peer does not accept Explicit VR Big Endian and big endian files are not "
                "converted (their pixel data would need byte swapping); convert the file to "
                "little endian first, e.g. with DCMTK: dcmconv +te IN OUT",
            )
        elif fallback is not None:
            try:
                encoded = client.encode_dataset(_prepare_dataset(item), fallback)
            except Exception as exc:  # any decoder failure is this file's, not the send's
                return result(
                    None,
                    f"the peer does not accept {uid_name(item.transfer_syntax_uid)} and the "
                    f"file could not be converted: {exc}",
                )
            response = assoc.store(
                encoded,
                sop_class_uid=item.sop_class_uid,
                sop_instance_uid=item.sop_instance_uid,
                transfer_syntax=fallback,
            )
        else:
            return result(
                None,
                f"the peer does not accept {uid_name(item.sop_class_uid)}: configure it to "
                "store this SOP class",
            )
    except (client.UnsendableFile, client.ContextNotAccepted) as exc:
        return result(None, f"not sent: {exc}")
    except client.AssociationEnded as exc:
        comment, error = ended_while_sending(exc, timeouts)
        raise _Ended(result(None, comment), error) from None
    return result(response.status, response.error_comment)


def send_dicom_files(
    files: Sequence[DicomFile],
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = DEFAULT_CALLING_AE,
    progress: ProgressCallback | None = None,
    *,
    timeouts: Timeouts | None = None,
    skipped: Iterable[Skipped] = (),
) -> SendReport:
    """Send already inspected files (see :func:`mercury.send.files.find_dicom_files`)."""
    return _send(files, host, port, called_ae, calling_ae, progress, timeouts, skipped)


def _send(
    files: Sequence[DicomFile],
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str,
    progress: ProgressCallback | None,
    timeouts: Timeouts | None,
    skipped: Iterable[Skipped],
) -> SendReport:
    timeouts = timeouts or Timeouts()
    started = time.monotonic()
    report = SendReport(skipped=list(skipped))
    total_bytes = sum(item.size for item in files)
    bytes_done = 0

    def record(result: FileResult) -> None:
        nonlocal bytes_done
        report.results.append(result)
        bytes_done += result.size
        if progress is not None:
            progress(SendProgress(len(report.results), len(files), bytes_done, total_bytes, result))

    def not_sent(items: Iterable[DicomFile]) -> None:
        """Files left over when the association failed: listed, but not progress."""
        for item in items:
            report.results.append(
                FileResult(item.path, item.sop_instance_uid, item.size, None, NOT_SENT)
            )

    if progress is not None:
        progress(SendProgress(0, len(files), 0, total_bytes, None))
    if not files:
        report.error = "no DICOM files to send"
        return report
    groups = plan_associations([(f.sop_class_uid, f.transfer_syntax_uid) for f in files])
    remaining = list(files)
    for contexts in groups:
        classes = {context.sop_class_uid for context in contexts}
        batch = [item for item in remaining if item.sop_class_uid in classes]
        remaining = [item for item in remaining if item.sop_class_uid not in classes]
        report.associations += 1
        try:
            assoc = client.associate(
                host,
                port,
                calling_ae=calling_ae,
                called_ae=called_ae,
                contexts=[(c.sop_class_uid, c.transfer_syntaxes) for c in contexts],
                connect_timeout=timeouts.connect,
                acse_timeout=timeouts.acse,
                dimse_timeout=timeouts.dimse,
                write_timeout=timeouts.network,
            )
        except client.DicomClientError as exc:
            report.error = association_failure(exc, (host, port), called_ae, calling_ae, timeouts)
            not_sent([*batch, *remaining])
            break
        finished = False
        try:
            for index, item in enumerate(batch):
                try:
                    record(_send_one(assoc, item, timeouts))
                except _Ended as ended:
                    record(ended.result)
                    report.error = ended.error
                    not_sent([*batch[index + 1 :], *remaining])
                    remaining = []
                    break
            finished = True
        finally:
            # Release after the last file; abort if something unexpected broke the loop.
            assoc.release() if finished else assoc.abort()
        if report.error is not None:
            break
    report.elapsed = time.monotonic() - started
    return report


def send_files(
    paths: Sequence[str | os.PathLike[str]],
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = DEFAULT_CALLING_AE,
    progress: ProgressCallback | None = None,
    *,
    timeouts: Timeouts | None = None,
    recursive: bool = True,
) -> SendReport:
    """Send the DICOM files among ``paths`` (files and folders) to ``host:port``.

    Non-DICOM files are skipped (listed in ``report.skipped``). Returns a report with the
    peer's status for every file; association problems are in ``report.error``.
    """
    files, skipped = find_dicom_files(paths, recursive=recursive)
    return send_dicom_files(
        files, host, port, called_ae, calling_ae, progress, timeouts=timeouts, skipped=skipped
    )
