"""A mercure module that starts a child process and then waits forever, both writing their
process ids to pids.json; with the argument ``ignore-term`` both ignore SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if "ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the child
child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(3600)"])
out = Path(os.environ["MERCURE_OUT_DIR"])
(out / "pids.json.tmp").write_text(json.dumps({"parent": os.getpid(), "child": child.pid}))
(out / "pids.json.tmp").replace(out / "pids.json")
while True:
    time.sleep(3600)
