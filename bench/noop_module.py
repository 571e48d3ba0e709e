"""The processing benchmark's no-op module (mercure's contract): copies every image of
$MERCURE_IN_DIR to $MERCURE_OUT_DIR unchanged and exits 0. Run as a script, not imported."""

import os
import shutil
from pathlib import Path

source = Path(os.environ["MERCURE_IN_DIR"])
destination = Path(os.environ["MERCURE_OUT_DIR"])
for path in source.glob("*.dcm"):
    shutil.copyfile(path, destination / path.name)
