"""A mercure module that hangs on its first run and succeeds on the next: the first run
leaves a marker in its persistence folder (requires_persistence), then sleeps forever."""

import os
import shutil
import sys
import time
from pathlib import Path


def main():
    marker = Path(os.environ["MODULE_PERSISTENCE_DIR"]) / "started"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        while True:
            time.sleep(3600)
    in_dir = Path(os.environ["MERCURE_IN_DIR"])
    out_dir = Path(os.environ["MERCURE_OUT_DIR"])
    for path in sorted(in_dir.glob("*.dcm")):
        shutil.copyfile(path, out_dir / path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
