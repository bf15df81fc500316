#!/usr/bin/env bash
# deploy/local/test.sh - the whole test suite, from a fresh machine.
#
# Installs what is missing, starts Kafka, Redis and Prometheus (deploy/local/stack.sh),
# then runs the linters, the type checker and pytest: unit tests and the integration
# tests on the real Kafka and Redis. Services this script started are stopped again at
# the end; services that were already running are left alone.
#
#   bash deploy/local/test.sh                 everything
#   bash deploy/local/test.sh tests/unit -x   extra arguments go to pytest
set -euo pipefail

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)"
STACK="$REPO_ROOT/deploy/local/stack.sh"
VENV="$REPO_ROOT/.venv"
cd "$REPO_ROOT"

bash "$REPO_ROOT/deploy/local/bootstrap.sh"

# Stop at the end only the services this run starts; leave running ones alone.
started_here=()
status="$(bash "$STACK" status 2>/dev/null || true)"
for svc in kafka redis prometheus; do
    if ! grep -Eq "^$svc +running" <<<"$status"; then
        started_here+=("$svc")
    fi
done
cleanup() {
    if ((${#started_here[@]})); then
        bash "$STACK" stop "${started_here[@]}" >/dev/null || true
    fi
}
trap cleanup EXIT
bash "$STACK" start
eval "$(bash "$STACK" env)"

echo "== ruff =="
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy =="
"$VENV/bin/mypy"
echo "== pytest =="
# pytest exits 5 when it collects no tests; that is a failure here, not a pass.
"$VENV/bin/pytest" "$@"
