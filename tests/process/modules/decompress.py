"""A mercure module: write every input image uncompressed, Explicit VR Little Endian."""

import os
import sys
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian


def save(ds, path):
    try:
        ds.save_as(path, enforce_file_format=True)
    except TypeError:  # pydicom 2
        ds.save_as(path, write_like_original=False)


def main():
    in_dir = Path(os.environ["MERCURE_IN_DIR"])
    out_dir = Path(os.environ["MERCURE_OUT_DIR"])
    count = 0
    for path in sorted(in_dir.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            try:
                ds.decompress(generate_instance_uid=False)
            except TypeError:  # pydicom 2 keeps the UID anyway
                ds.decompress()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        save(ds, out_dir / path.name)
        count += 1
    print(f"decompressed {count} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
