#!/usr/bin/env bash
# deploy/local/bootstrap.sh - create <repo>/.venv with community-pulse and its dev tools.
#
# Idempotent: reinstalls only when pyproject.toml changed since the last install.
# Needs Python 3.11 or 3.12 (python3.11, python3.12 or python3 on PATH).
set -euo pipefail

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)"
VENV="$REPO_ROOT/.venv"
MARKER="$VENV/.pulse-installed"

find_python() {
    local candidate
    for candidate in python3.11 python3.12 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))'; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ -x $VENV/bin/pulse && -f $MARKER && $(cat "$MARKER") == "$want" ]]; then
    exit 0
fi

python="$(find_python)" || {
    echo "bootstrap: Python 3.11 or 3.12 is required (none found on PATH)" >&2
    exit 1
}
echo "bootstrap: installing community-pulse into $VENV (with $("$python" --version))"
[[ -x $VENV/bin/python ]] || "$python" -m venv "$VENV"
log="$REPO_ROOT/.local/logs/pip.log"
mkdir -p "$(dirname "$log")"
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -e "$REPO_ROOT[dev]" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "bootstrap: pip install failed; full log in $log" >&2
    exit 1
fi
echo "$want" >"$MARKER"
echo "bootstrap: done"
