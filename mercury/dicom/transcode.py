"""Change the transfer syntax of a decoded dataset: decompress, recompress losslessly, or
switch between the uncompressed little endian syntaxes.

Senders use this when a peer does not accept an instance's stored transfer syntax, or when
a target asks for another one. Rules:

* The SOP Instance UID never changes. pydicom's ``decompress()`` and ``compress()`` make a
  new one by default; a router must not, or the peer would hold a different instance than
  the one the sender reports (and storage commitment would ask about the wrong UID).
* Only lossless encodings are produced (RLE Lossless, JPEG-LS Lossless, JPEG 2000
  Lossless): mercury never degrades pixel data on its own. A lossy stored image can be
  decompressed (its pixels are what they are) but is not re-encoded lossily.
* Explicit VR Big Endian is neither read for conversion nor written: its pixel data would
  need byte swapping, which pydicom does not do when the byte order changes.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import UID

from mercury.dicom.syntax import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)

RLE_LOSSLESS = "1.2.840.10008.1.2.5"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"

UNCOMPRESSED_LITTLE_ENDIAN = frozenset(
    {IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}
)
"""Syntaxes whose pixel data is native little endian: converting between them only changes
how the dataset is encoded, which pynetdicom does when it sends a decoded dataset."""

LOSSLESS_ENCODINGS: tuple[str, ...] = (RLE_LOSSLESS, JPEG_LS_LOSSLESS, JPEG_2000_LOSSLESS)
"""The compressed syntaxes mercury encodes to, when pydicom has an encoder available."""


class TranscodeError(Exception):
    """The dataset cannot be converted; the message says why, for the instance's result."""


def syntax_name(uid: str) -> str:
    """'JPEG 2000 Image Compression', or the UID itself when pydicom does not know it."""
    name = UID(uid).name
    return name if name and name != uid else uid


def is_compressed(uid: str) -> bool:
    """True for syntaxes with encapsulated (compressed) pixel data."""
    return bool(UID(uid).is_compressed)


def encoder_problem(uid: str) -> str | None:
    """Why mercury cannot encode pixel data in this syntax; None if it can."""
    if not is_compressed(uid):
        if uid == EXPLICIT_VR_BIG_ENDIAN:
            return (
                "mercury does not convert to Explicit VR Big Endian (its pixel data would "
                "need byte swapping)"
            )
        return None
    if uid not in LOSSLESS_ENCODINGS:
        return (
            f"mercury does not compress to {syntax_name(uid)}: it only produces lossless "
            "encodings (RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless)"
        )
    from pydicom.pixels.encoders.base import get_encoder

    encoder = get_encoder(uid)
    if not encoder.is_available:
        missing = "; ".join(encoder.missing_dependencies) or "no encoding plugin"
        return f"no encoder for {syntax_name(uid)} is installed ({missing})"
    return None


def transcode(dataset: Dataset, target_syntax: str) -> Dataset:
    """Convert ``dataset`` (decoded, with its file meta) to ``target_syntax`` in place.

    Returns the same dataset, its ``file_meta.TransferSyntaxUID`` set to the target, ready
    for pynetdicom to encode in that syntax. Raises :class:`TranscodeError` with a message
    fit for the instance's result when it cannot be done.
    """
    source = str(dataset.file_meta.get("TransferSyntaxUID", "") or "")
    if not source:
        raise TranscodeError("the instance has no transfer syntax in its file meta")
    if source == target_syntax:
        return dataset
    if EXPLICIT_VR_BIG_ENDIAN in (source, target_syntax):
        raise TranscodeError(
            f"cannot convert {syntax_name(source)} to {syntax_name(target_syntax)}: Explicit "
            "VR Big Endian instances are not converted (their pixel data would need byte "
            "swapping); convert the file to little endian first, e.g. dcmconv +te IN OUT"
        )
    problem = encoder_problem(target_syntax) if is_compressed(target_syntax) else None
    if problem is not None:
        raise TranscodeError(problem)
    has_pixels = "PixelData" in dataset
    if is_compressed(source) and has_pixels:
        try:
            dataset.decompress(generate_instance_uid=False)
        except Exception as exc:  # any decoder failure is this instance's, told as such
            raise TranscodeError(
                f"cannot decompress {syntax_name(source)}: {_one_line(exc)}"
            ) from exc
    if is_compressed(target_syntax) and has_pixels:
        try:
            dataset.compress(target_syntax, generate_instance_uid=False)
        except Exception as exc:
            raise TranscodeError(
                f"cannot compress to {syntax_name(target_syntax)}: {_one_line(exc)}"
            ) from exc
    # Without pixel data (or once the pixels are done) only the dataset encoding changes:
    # compressed syntaxes encode the dataset itself as explicit VR little endian.
    target = UID(target_syntax)
    dataset.file_meta.TransferSyntaxUID = target
    dataset.set_original_encoding(
        target.is_implicit_VR, target.is_little_endian, dataset.original_character_set
    )
    return dataset


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
