"""Shared test helpers: waiting on conditions, free ports, DICOM generation, DCMTK runs."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

T = TypeVar("T")
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def wait_for(condition: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)  # polling interval, not synchronisation: the deadline decides
        delay = min(delay * 2, 0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _base_dataset(sop_class: str, study_uid: str, series_uid: str, index: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "Test^Patient"
    ds.PatientID = "MRN0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.AccessionNumber = "ACC0001"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.StudyDescription = "Test study"
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Manufacturer = "mercury-tests"
    return ds


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def make_ct_series(
    folder: Path,
    count: int,
    rows: int = 512,
    columns: int = 512,
    description: str = "CT Thorax 1mm",
    study_uid: str | None = None,
) -> list[Path]:
    """A CT series of ``count`` slices, explicit VR little endian, one file per slice."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    rng = np.random.default_rng(1234)
    pixels = rng.integers(0, 4000, size=(rows, columns), dtype=np.uint16)
    paths = []
    for index in range(count):
        ds = _base_dataset(CT_IMAGE_STORAGE, study_uid, series_uid, index)
        ds.Modality = "CT"
        ds.SeriesDescription = description
        ds.SeriesNumber = 2
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = "1.0"
        ds.ImagePositionPatient = [0, 0, float(index)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        ds.PixelData = np.roll(pixels, index, axis=0).tobytes()
        ds.file_meta = _file_meta(ds)
        path = folder / f"ct_{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_small_images(folder: Path, count: int, per_series: int = 50, size: int = 64) -> list[Path]:
    """Many small secondary-capture images, ``per_series`` to a series."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    paths = []
    series_uid = generate_uid()
    pixels = bytes(range(256)) * (size * size // 256 + 1)
    for index in range(count):
        if index % per_series == 0:
            series_uid = generate_uid()
        ds = _base_dataset(SECONDARY_CAPTURE, study_uid, series_uid, index)
        ds.Modality = "OT"
        ds.SeriesDescription = f"Small series {index // per_series}"
        ds.SeriesNumber = index // per_series + 1
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = pixels[: size * size]
        ds.file_meta = _file_meta(ds)
        path = folder / f"sc_{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def dcmtk_env(nodelay: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    else:
        env.pop("TCP_NODELAY", None)
    return env


def storescu(
    files: Iterable[Path],
    port: int,
    aec: str = "MERCURY",
    aet: str = "STORESCU",
    extra: Iterable[str] = (),
    nodelay: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run DCMTK storescu once over ``files`` (one association)."""
    args = ["storescu", "-aec", aec, "-aet", aet, *extra, "127.0.0.1", str(port)]
    args += [str(f) for f in files]
    return subprocess.run(
        args, capture_output=True, text=True, env=dcmtk_env(nodelay), timeout=timeout, check=False
    )
