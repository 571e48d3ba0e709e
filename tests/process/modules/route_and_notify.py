"""A mercure module: pass the images through and answer through result.json.

Settings: ``routing`` becomes ``__mercure_routing``, ``notification`` becomes
``__mercure_notification``; ``raw_result`` is written as result.json verbatim instead.
"""

import json
import os
import shutil
import sys
from pathlib import Path


def main():
    in_dir = Path(os.environ["MERCURE_IN_DIR"])
    out_dir = Path(os.environ["MERCURE_OUT_DIR"])
    task = json.loads((in_dir / "task.json").read_text())
    settings = task["process"]["settings"]
    for path in sorted(in_dir.glob("*.dcm")):
        shutil.copyfile(path, out_dir / path.name)
    if "raw_result" in settings:
        (out_dir / "result.json").write_text(settings["raw_result"])
        return 0
    result = {"module": task["process"]["module_name"]}
    if "routing" in settings:
        result["__mercure_routing"] = settings["routing"]
    if "notification" in settings:
        result["__mercure_notification"] = settings["notification"]
    (out_dir / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
