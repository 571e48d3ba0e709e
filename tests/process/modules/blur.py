"""A mercure module: box-blur every input image into a new series.

Settings (task.json, process.settings): ``kernel`` (odd box size, default 3) or ``sigma``
(kernel 2*ceil(sigma)+1), and ``suffix`` for the SeriesDescription (default " blurred").
"""

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def kernel_size(settings):
    if "kernel" in settings:
        size = int(settings["kernel"])
    else:
        size = 2 * math.ceil(float(settings.get("sigma", 1))) + 1
    return max(1, size | 1)


def box_blur(frame, size):
    """Mean over a size x size window, edges repeated (per channel for colour)."""
    pad = size // 2
    widths = [(pad, pad), (pad, pad)] + [(0, 0)] * (frame.ndim - 2)
    padded = np.pad(frame.astype(np.float64), widths, mode="edge")
    total = np.zeros(frame.shape, dtype=np.float64)
    rows, columns = frame.shape[:2]
    for dy in range(size):
        for dx in range(size):
            total += padded[dy : dy + rows, dx : dx + columns]
    return total / (size * size)


def save(ds, path):
    try:
        ds.save_as(path, enforce_file_format=True)
    except TypeError:  # pydicom 2
        ds.save_as(path, write_like_original=False)


def main():
    in_dir = Path(os.environ["MERCURE_IN_DIR"])
    out_dir = Path(os.environ["MERCURE_OUT_DIR"])
    task = json.loads((in_dir / "task.json").read_text())
    settings = task["process"]["settings"]
    size = kernel_size(settings)
    suffix = settings.get("suffix", " blurred")
    new_series = {}
    for path in sorted(in_dir.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if frames > 1:
            blurred = np.stack([box_blur(frame, size) for frame in pixels])
        else:
            blurred = box_blur(pixels, size)
        if np.issubdtype(pixels.dtype, np.integer):
            info = np.iinfo(pixels.dtype)
            blurred = np.clip(np.rint(blurred), info.min, info.max)
        blurred = blurred.astype(pixels.dtype)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            if "PlanarConfiguration" in ds:
                ds.PlanarConfiguration = 0
            if ds.get("PhotometricInterpretation", "").startswith("YBR"):
                ds.PhotometricInterpretation = "RGB"
        ds.PixelData = blurred.tobytes()
        ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
        ds["PixelData"].is_undefined_length = False
        series = new_series.setdefault(ds.SeriesInstanceUID, generate_uid())
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesDescription = f"{ds.get('SeriesDescription', '')}{suffix}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        save(ds, out_dir / f"{series}#{ds.SOPInstanceUID}.dcm")
    print(f"blurred with a {size}x{size} box into {len(new_series)} new series")
    return 0


if __name__ == "__main__":
    sys.exit(main())
