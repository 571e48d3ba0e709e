"""Sending DICOM files to a C-STORE SCP: the `mercury send` command and its library."""

from mercury.send.files import DicomFile, Skipped, find_dicom_files
from mercury.send.report import FileResult, SendProgress, SendReport, Timeouts, describe_status
from mercury.send.sender import DEFAULT_CALLING_AE, send_dicom_files, send_files

__all__ = [
    "DEFAULT_CALLING_AE",
    "DicomFile",
    "FileResult",
    "SendProgress",
    "SendReport",
    "Skipped",
    "Timeouts",
    "describe_status",
    "find_dicom_files",
    "send_dicom_files",
    "send_files",
]
