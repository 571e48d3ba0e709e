"""DICOM unique identifiers: the grammar check that guards every file name, and new UIDs.

A UID received from the network ends up in paths (spool folders, ``<SeriesInstanceUID>#...``
file names), so it is checked against the UID grammar of DICOM PS3.5 section 9.1 before
it names anything: components of ASCII digits separated by single dots, no leading zero in
a multi-digit component, at most 64 characters. Trailing NUL or space padding is the
caller's to strip; here it makes the UID invalid.
"""

from __future__ import annotations

import re

from pydicom.uid import generate_uid as _pydicom_generate_uid

MAX_UID_LENGTH = 64

# [0-9], never \d: \d also matches non-ASCII digits such as '٣'.
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


def is_valid_uid(value: str) -> bool:
    """True if ``value`` is a UID by the DICOM grammar (PS3.5 9.1); nothing else is."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_UID_LENGTH:
        return False
    return _UID.fullmatch(value) is not None


def generate_uid() -> str:
    """A new UID under the 2.25 root (derived from a random UUID, ISO/IEC 9834-8).

    2.25 needs no registered organisation root and is unique without coordination.
    """
    uid = str(_pydicom_generate_uid(prefix=None))
    assert is_valid_uid(uid)
    return uid
