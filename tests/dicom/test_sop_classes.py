"""Which SOP classes count as storage, and which transfer syntaxes a receiver offers."""

from __future__ import annotations

import pytest

from mercury.dicom.sop_classes import (
    COMPRESSED_TRANSFER_SYNTAXES,
    STORAGE_SOP_CLASSES,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION,
    is_storage_sop_class,
    transfer_syntaxes,
)
from mercury.dicom.syntax import dataset_encoding

SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image (retired)
        "1.2.840.10008.5.1.4.38.1",  # Hanging Protocol
        "1.2.840.10008.5.1.4.1.1.9.100.1",  # known to pynetdicom only
    ],
)
def test_known_storage_classes(uid: str) -> None:
    assert is_storage_sop_class(uid)
    assert uid in STORAGE_SOP_CLASSES


@pytest.mark.parametrize(
    "uid",
    [
        VERIFICATION,
        "1.2.840.10008.1.20.1",  # Storage Commitment Push Model
        "1.2.840.10008.1.3.10",  # Media Storage Directory (DICOMDIR)
        "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Q/R FIND
        "1.2.840.10008.5.1.4.31",  # Modality Worklist FIND
        "1.2.840.10008.1.2.1",  # a transfer syntax, not a SOP class
    ],
)
def test_non_storage_classes(uid: str) -> None:
    assert not is_storage_sop_class(uid)
    assert not is_storage_sop_class(uid, accept_unknown=True)


def test_private_classes_need_configuration_or_accept_unknown() -> None:
    assert not is_storage_sop_class(SIEMENS_CSA_NON_IMAGE)
    assert is_storage_sop_class(SIEMENS_CSA_NON_IMAGE, extra={SIEMENS_CSA_NON_IMAGE})
    assert is_storage_sop_class(SIEMENS_CSA_NON_IMAGE, accept_unknown=True)


@pytest.mark.parametrize("uid", ["", "abc", "1.2..3", "1.2.3/../4", "01.2"])
def test_malformed_uids_are_never_storage(uid: str) -> None:
    assert not is_storage_sop_class(uid, accept_unknown=True)


def test_uncompressed_transfer_syntaxes() -> None:
    assert transfer_syntaxes(accept_compressed=False) == [
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
    ]


def test_compressed_transfer_syntaxes() -> None:
    accepted = transfer_syntaxes(accept_compressed=True)
    assert accepted[:4] == list(UNCOMPRESSED_TRANSFER_SYNTAXES)
    assert len(accepted) == len(set(accepted))
    for uid in [
        "1.2.840.10008.1.2.4.50",  # JPEG baseline
        "1.2.840.10008.1.2.4.57",  # JPEG lossless
        "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
        "1.2.840.10008.1.2.4.203",  # HTJ2K
        "1.2.840.10008.1.2.5",  # RLE
        "1.2.840.10008.1.2.4.100",  # MPEG2
        "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC
        "1.2.840.10008.1.2.4.107",  # HEVC
    ]:
        assert uid in accepted
    # Not for stored instances: Papyrus files, real-time video, MIME and XML encodings.
    for uid in ["1.2.840.10008.1.20", "1.2.840.10008.1.2.7.1", "1.2.840.10008.1.2.6.2"]:
        assert uid not in accepted


def test_every_offered_syntax_can_be_read() -> None:
    for uid in (*UNCOMPRESSED_TRANSFER_SYNTAXES, *COMPRESSED_TRANSFER_SYNTAXES):
        encoding = dataset_encoding(uid)
        assert encoding.little_endian or uid == "1.2.840.10008.1.2.2"


def test_explicit_list_overrides() -> None:
    chosen = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2"]
    assert transfer_syntaxes(accept_compressed=False, explicit=chosen) == chosen[:2]


def test_explicit_list_is_validated() -> None:
    with pytest.raises(ValueError, match=r"'1\.2\.3'.*'bogus'"):
        transfer_syntaxes(True, explicit=["1.2.840.10008.1.2", "1.2.3", "bogus"])
