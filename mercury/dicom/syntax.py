"""How a transfer syntax encodes the dataset itself: VR, byte order, deflate.

Compressed transfer syntaxes only encapsulate the pixel data; the dataset around it is
explicit VR little endian. Three syntaxes deflate the whole dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pydicom._uid_dict import UID_dictionary

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
DEFLATED = frozenset(
    {
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
        "1.2.840.10008.1.2.4.205",  # JPIP HTJ2K Referenced Deflate
    }
)
_IMPLICIT = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.20"})  # + Papyrus 3
# Transfer syntaxes that do not carry a binary dataset at all.
NOT_BINARY = frozenset({"1.2.840.10008.1.2.6.1", "1.2.840.10008.1.2.6.2"})


@dataclass(frozen=True, slots=True)
class DatasetEncoding:
    """VR encoding, byte order and compression of a dataset in some transfer syntax."""

    implicit_vr: bool
    little_endian: bool
    deflated: bool


@lru_cache(maxsize=128)
def dataset_encoding(transfer_syntax_uid: str) -> DatasetEncoding:
    """The encoding of datasets in this transfer syntax; ValueError if it is not one we know."""
    uid = transfer_syntax_uid.rstrip("\x00 ")
    entry = UID_dictionary.get(uid)
    if entry is None or entry[1] != "Transfer Syntax" or uid in NOT_BINARY:
        raise ValueError(f"'{transfer_syntax_uid}' is not a transfer syntax for binary datasets")
    return DatasetEncoding(
        implicit_vr=uid in _IMPLICIT,
        little_endian=uid != EXPLICIT_VR_BIG_ENDIAN,
        deflated=uid in DEFLATED,
    )
