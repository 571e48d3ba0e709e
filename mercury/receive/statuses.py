"""C-STORE response statuses the receiver uses (PS3.4 B.2.3), in one place for docs and tests."""

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # disk full, below reserve, or the index cannot be written
CANNOT_UNDERSTAND = 0xC000  # the dataset does not parse
MISSING_UID = 0xC001  # Study, Series or SOP Instance UID absent
INVALID_UID = 0xC002  # a UID breaks the DICOM UID grammar
UID_MISMATCH = 0xC003  # the dataset's SOP Instance/Class UID differs from the command's
