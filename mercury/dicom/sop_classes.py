"""Which SOP classes and transfer syntaxes a receiver accepts.

Storage SOP classes: every one pynetdicom serves with its Storage service, plus the
retired and specialised storage classes of pydicom's UID dictionary (DCMTK's storescp
accepts those too). Vendors also send private SOP classes (for example Siemens'
CSA Non-Image Storage); mercure's receiver accepts any SOP class (storescp
``--promiscuous``), so :func:`is_storage_sop_class` can accept UIDs that no dictionary
knows, and configuration can name extra UIDs.

Transfer syntaxes: the uncompressed ones always; with compression, every encapsulated
transfer syntax in pydicom's UID dictionary (JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE,
MPEG-2/4, HEVC, and any added by newer pydicom releases).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pynetdicom.sop_class as _pynetdicom_sop
from pydicom._uid_dict import UID_dictionary
from pynetdicom.service_class import ServiceClass, StorageServiceClass

from mercury.dicom.syntax import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NOT_BINARY,
)
from mercury.dicom.uids import is_valid_uid

VERIFICATION = "1.2.840.10008.1.1"
DICOM_ROOT = "1.2.840.10008."

# Dictionary entries named "... Storage" that are not stored with C-STORE.
_NOT_STORED = frozenset(
    {
        "1.2.840.10008.1.20.1",  # Storage Commitment Push Model
        "1.2.840.10008.1.20.2",  # Storage Commitment Pull Model
        "1.2.840.10008.1.3.10",  # Media Storage Directory Storage (DICOMDIR)
    }
)


def _pynetdicom_storage_classes() -> set[str]:
    uids = set()
    for name in dir(_pynetdicom_sop):
        value = getattr(_pynetdicom_sop, name)
        if (
            isinstance(value, str)
            and value[:1].isdigit()
            and _pynetdicom_sop.uid_to_service_class(value) is StorageServiceClass
        ):
            uids.add(str(value))
    return uids


def _dictionary_storage_classes() -> set[str]:
    return {
        uid
        for uid, entry in UID_dictionary.items()
        if entry[1] == "SOP Class" and "Storage" in entry[0] and uid not in _NOT_STORED
    }


STORAGE_SOP_CLASSES: frozenset[str] = frozenset(
    _pynetdicom_storage_classes() | _dictionary_storage_classes()
)
"""Every storage SOP class UID known to pynetdicom or pydicom."""

UNCOMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
)

# Known transfer syntaxes that never carry a stored instance: Papyrus 3 is a file format,
# SMPTE ST 2110 is DICOM real-time video, MIME and XML are not binary datasets.
_NOT_FOR_STORAGE = NOT_BINARY | {
    "1.2.840.10008.1.20",
    "1.2.840.10008.1.2.7.1",
    "1.2.840.10008.1.2.7.2",
    "1.2.840.10008.1.2.7.3",
}

KNOWN_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    uid
    for uid, entry in UID_dictionary.items()
    if entry[1] == "Transfer Syntax" and uid not in _NOT_FOR_STORAGE
)
"""Every transfer syntax a stored instance can arrive in."""

COMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = tuple(
    sorted(
        KNOWN_TRANSFER_SYNTAXES - set(UNCOMPRESSED_TRANSFER_SYNTAXES),
        key=lambda uid: tuple(int(part) for part in uid.split(".")),
    )
)


def is_storage_sop_class(
    uid: str, *, extra: Collection[str] = (), accept_unknown: bool = False
) -> bool:
    """True if instances of this SOP class are stored with C-STORE.

    ``extra`` adds UIDs (private SOP classes a site receives). With ``accept_unknown``,
    any well-formed UID that neither pydicom nor pynetdicom knows counts as storage too
    (private classes, and standard ones newer than our dictionaries), as storescp
    ``--promiscuous`` does; known non-storage classes (Verification, query/retrieve, ...)
    are never storage.
    """
    if uid in STORAGE_SOP_CLASSES or uid in extra:
        return True
    if not accept_unknown or not is_valid_uid(uid):
        return False
    known = uid in UID_dictionary or _pynetdicom_sop.uid_to_service_class(uid) is not ServiceClass
    return not known


def transfer_syntaxes(accept_compressed: bool, explicit: Sequence[str] = ()) -> list[str]:
    """The transfer syntax UIDs to accept, in order of preference.

    ``explicit``, when not empty, is the list to use instead; every entry must be a known
    transfer syntax (ValueError names the ones that are not).
    """
    if explicit:
        unknown = [uid for uid in explicit if uid not in KNOWN_TRANSFER_SYNTAXES]
        if unknown:
            raise ValueError(
                "not a transfer syntax for stored instances: " + ", ".join(map(repr, unknown))
            )
        return list(dict.fromkeys(explicit))
    syntaxes = list(UNCOMPRESSED_TRANSFER_SYNTAXES)
    if accept_compressed:
        syntaxes.extend(COMPRESSED_TRANSFER_SYNTAXES)
    return syntaxes
