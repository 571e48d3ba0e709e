#!/usr/bin/env bash
# Install everything the test suite needs on Debian 12 (as root) and run the whole suite:
# lint, format check, type check, then pytest against real peers (DCMTK, Orthanc, PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(dcmtk orthanc orthanc-dicomweb postgresql python3-venv openssh-server podman runc busybox-static chromium)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt-get update -q
  # The packages try to start their own system services; that is refused here and not needed.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

echo "==> PostgreSQL"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
fi
for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
export MERCURY_TEST_PG="${MERCURY_TEST_PG:-postgresql://postgres:mercury@127.0.0.1:5432/postgres}"
if ! PGPASSWORD=mercury psql -q -h 127.0.0.1 -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; then
  # A fresh Debian install asks for a password on TCP: give the test role one.
  runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'mercury'"
fi

echo "==> Python environment"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-dev.lock
.venv/bin/python -m pip install -q --no-deps -e .

echo "==> ruff, mypy"
.venv/bin/ruff check mercury tests bench scripts
.venv/bin/ruff format --check mercury tests bench scripts
.venv/bin/mypy

echo "==> tests"
exec .venv/bin/python -m pytest "$@"
