#!/usr/bin/env bash
# Install mercury and start it with a working demo configuration on the embedded SQLite
# database. Usage: scripts/quickstart.sh [FOLDER] [DICOM_PORT] [WEB_PORT]
# (defaults: ./demo 11112 8080)
set -euo pipefail
cd "$(dirname "$0")/.."
folder="${1:-demo}"
port="${2:-11112}"
web_port="${3:-8080}"

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.lock
.venv/bin/python -m pip install -q --no-deps -e .

[ -f "$folder/mercury.yaml" ] || .venv/bin/mercury init "$folder" --port "$port" --web-port "$web_port"
echo "Send images with: .venv/bin/mercury send FILES... --to 127.0.0.1:$port --aec MERCURY"
if [ -f "$folder/initial-admin-password" ]; then
  echo "Web interface: log in as admin with the password in $folder/initial-admin-password"
fi
exec .venv/bin/mercury serve --config "$folder/mercury.yaml"
