"""A mercure module that never ends (the runner's timeout must stop it)."""

import time

print("working...", flush=True)
while True:
    time.sleep(3600)
