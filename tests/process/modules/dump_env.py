"""A mercure module that writes what it sees (environment, arguments, folder) to env.json."""

import json
import os
import sys
from pathlib import Path

seen = {"env": dict(os.environ), "argv": sys.argv, "cwd": os.getcwd()}
Path(os.environ["MERCURE_OUT_DIR"], "env.json").write_text(json.dumps(seen))
