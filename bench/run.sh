#!/usr/bin/env bash
# The performance benchmark of issue 8: bash bench/run.sh [--quick] [--help for options]
# Uses the local stack (started when it is down), private topics, groups and keys, and
# removes them at the end. Results: bench/results/latest.json (+ latest.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
  echo "bench: .venv is missing; run bash deploy/local/bootstrap.sh first" >&2
  exit 2
fi
if ! .venv/bin/python -c 'import quixstreams, pyinstrument, confluent_kafka' 2>/dev/null \
    || [[ ! -x .venv/bin/py-spy ]]; then
  echo "bench: installing the benchmark's extra packages into .venv" >&2
  .venv/bin/pip install --quiet 'quixstreams==3.28.1' 'pyinstrument==5.1.3' 'py-spy==0.4.3'
fi
bash deploy/local/stack.sh start >/dev/null
eval "$(bash deploy/local/stack.sh env)"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::DeprecationWarning}"
exec .venv/bin/python -m bench "$@"
