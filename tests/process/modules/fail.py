"""A mercure module that fails: a line on each stream, then exit code 3."""

import sys

print("starting")
sys.stdout.flush()
print("cannot process these images: model file missing", file=sys.stderr)
sys.exit(3)
