"""Datasets for the header tests: realistic ones built with pydicom, encoded as on the wire."""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import generate_uid

from mercury.dicom.tags import InstanceHeader, read_header

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
JPEG_LS = "1.2.840.10008.1.2.4.80"
JPEG_2000 = "1.2.840.10008.1.2.4.90"
HTJ2K = "1.2.840.10008.1.2.4.201"
RLE = "1.2.840.10008.1.2.5"
MPEG4 = "1.2.840.10008.1.2.4.102"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def encode(ds: Dataset, transfer_syntax: str) -> bytes:
    """The dataset as a C-STORE carries it: no preamble, no file meta."""
    implicit = transfer_syntax == IMPLICIT_LE
    little = transfer_syntax != EXPLICIT_BE
    encapsulated = transfer_syntax not in (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED)
    if encapsulated and "PixelData" in ds:
        ds = ds.copy()
        ds.PixelData = encapsulate([bytes(ds.PixelData)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    fp = DicomBytesIO()
    fp.is_little_endian = little
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    data = fp.getvalue()
    if transfer_syntax == DEFLATED:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = compressor.compress(data) + compressor.flush()
    return data


def quiet_read(data: bytes, syntax: str, extra: Mapping[str, str] | None = None) -> InstanceHeader:
    """read_header with every warning turned into an error: the hot path must be silent."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_header(data, syntax, extra or {})


def put_raw(ds: Dataset, tag: int, vr: str, value: bytes) -> None:
    """Add an element with exactly these bytes (padded to even length), unchecked."""
    if len(value) % 2:
        value += b" "
    ds[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True)


def explicit_element(tag: int, vr: str, value: bytes, little: bool = True) -> bytes:
    """One explicit VR element, byte for byte (for what pydicom will not write as given)."""
    order = "<" if little else ">"
    head = struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"):
        return head + struct.pack(f"{order}xxI", len(value)) + value
    return head + struct.pack(f"{order}H", len(value)) + value


def file_dataset(path: str | Path) -> bytes:
    """The dataset bytes of a DICOM file: what follows the preamble and file meta."""
    data = Path(path).read_bytes()
    if data[128:132] != b"DICM":
        return data
    pos = 132
    while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        if data[pos + 4 : pos + 6] in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return data[pos:]


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def ct_slice(rows: int = 512, columns: int = 512, index: int = 0) -> Dataset:
    """A CT slice with the header a real scanner writes: sequences, private tags, overlays."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = "20260101"
    ds.InstanceCreationTime = "120000.000000"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "120000.000000"
    ds.AccessionNumber = "ACC123456"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME Medical"
    ds.InstitutionName = "General Hospital"
    ds.InstitutionAddress = "1 Hospital Road\r\nSpringfield"
    ds.ReferringPhysicianName = "Smith^John"
    ds.StationName = "CT01"
    ds.StudyDescription = "CT THORAX"
    ds.ProcedureCodeSequence = Sequence([_code("CTCHEST", "CT Chest")])
    ds.SeriesDescription = "Thorax 1.0 B30f"
    ds.ManufacturerModelName = "Scanner 9000"
    ds.ReferencedImageSequence = Sequence([Dataset() for _ in range(3)])  # undefined length below
    for item in ds.ReferencedImageSequence:
        item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        item.ReferencedSOPInstanceUID = generate_uid()
    ds["ReferencedImageSequence"].is_undefined_length = True
    for item in ds.ReferencedImageSequence:
        item.is_undefined_length_sequence_item = True
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.PatientAge = "056Y"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.DeviceSerialNumber = "12345"
    ds.SoftwareVersions = ["VA40", "SP1"]
    ds.ProtocolName = "Thorax Routine"
    ds.ContrastBolusAgent = ""
    ds.ConvolutionKernel = "B30f"
    ds.PatientPosition = "FFS"
    ds.add_new(0x00190010, "LO", "ACME CT PRIVATE")
    ds.add_new(0x00191001, "DS", "1.5")
    ds.add_new(0x00191002, "LO", "private text")
    ds.add_new(0x00191003, "OB", bytes(300))
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = "2"
    ds.AcquisitionNumber = "1"
    ds.InstanceNumber = str(index + 1)
    ds.ImagePositionPatient = ["-250.0", "-250.0", f"{-index:.1f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{-index:.1f}"
    ds.ImageComments = 'Comment with "quotes"\nand a second line'
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = ["0.7", "0.7"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = ["40", "-600"]
    ds.WindowWidth = ["400", "1200"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.add_new(0x00291010, "OB", bytes(2000))  # vendor header blob
    ds.PixelData = bytes(rows * columns * 2)
    return ds
