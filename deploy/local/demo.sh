#!/usr/bin/env bash
# deploy/local/demo.sh - the main job, end to end, on this machine.
#
# Installs what is missing, starts Kafka, Redis and Prometheus (deploy/local/stack.sh),
# starts a community-pulse worker in the background, publishes a sample of realistic
# activity, waits until the worker has applied it, and prints what came out.
#
#   bash deploy/local/demo.sh            run the demo (again: adds a fresh sample)
#   bash deploy/local/demo.sh stop       stop the worker and the stack
#   DEMO_EVENTS=20000 bash deploy/local/demo.sh
set -euo pipefail

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)"
LOCAL_DIR="${PULSE_LOCAL_DIR:-$REPO_ROOT/.local}"
STACK="$REPO_ROOT/deploy/local/stack.sh"
PULSE="$REPO_ROOT/.venv/bin/pulse"
WORKER_PID="$LOCAL_DIR/run/worker.pid"
WORKER_LOG="$LOCAL_DIR/logs/worker.log"
EVENTS="${DEMO_EVENTS:-5000}"
export PULSE_WEB_PORT="${PULSE_WEB_PORT:-6066}"
export PULSE_DATA_DIR="${PULSE_DATA_DIR:-$LOCAL_DIR/worker-data}"
METRICS_URL="http://127.0.0.1:$PULSE_WEB_PORT/metrics"

worker_running() {  # our pid file names a live "agents worker" process
    [[ -f $WORKER_PID ]] || return 1
    local pid
    pid="$(cat "$WORKER_PID")"
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "agents worker"
}

stop_worker() {
    if worker_running; then
        local pid
        pid="$(cat "$WORKER_PID")"
        echo "demo: stopping the worker (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$WORKER_PID"
}

if [[ ${1:-} == stop ]]; then
    stop_worker
    bash "$STACK" stop
    exit 0
elif [[ -n ${1:-} ]]; then
    echo "usage: bash deploy/local/demo.sh [stop]" >&2
    exit 2
fi

bash "$REPO_ROOT/deploy/local/bootstrap.sh"
bash "$STACK" start
eval "$(bash "$STACK" env)"

metric_sum() {  # sum of one metric's samples, 0 when absent or unreachable
    curl -fsS "$METRICS_URL" 2>/dev/null |
        awk -v name="$1" '$1 ~ "^"name"([{]|$)" { total += $NF } END { printf "%d", total }'
}

if worker_running; then
    echo "demo: worker already running (pid $(cat "$WORKER_PID")), metrics at $METRICS_URL"
else
    mkdir -p "$(dirname "$WORKER_PID")" "$(dirname "$WORKER_LOG")"
    echo "demo: starting the worker (log: $WORKER_LOG)"
    : >"$WORKER_LOG"
    setsid nohup "$REPO_ROOT/.venv/bin/python" -m agents worker >>"$WORKER_LOG" 2>&1 </dev/null &
    echo $! >"$WORKER_PID"
    for _ in $(seq 180); do
        grep -q "Worker ready\|\[^Worker\]: Ready" "$WORKER_LOG" && break
        worker_running || { tail -n 40 "$WORKER_LOG" >&2; echo "demo: the worker exited" >&2; exit 1; }
        sleep 0.5
    done
    grep -q "Worker ready\|\[^Worker\]: Ready" "$WORKER_LOG" ||
        { tail -n 40 "$WORKER_LOG" >&2; echo "demo: the worker did not become ready in 90 s" >&2; exit 1; }
fi

sample="$LOCAL_DIR/demo/activity-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
mkdir -p "$(dirname "$sample")"
# Applied or held back by moderation (the sample has chat floods and cross-posts).
settled() { echo $(($(metric_sum pulse_community_events_total) + $(metric_sum pulse_community_events_moderated_total))); }
before=$(settled)
"$PULSE" simulate --communities 3 --members 300 --days 10 --events "$EVENTS" --seed "$(date +%s)" --out "$sample"
echo "demo: publishing the valid events of $sample (malformed lines are skipped; reasons in $sample.invalid)"
published="$("$PULSE" produce --skip-invalid "$sample" 2>"$sample.invalid")" ||
    { cat "$sample.invalid" >&2; echo "demo: publishing failed" >&2; exit 1; }
echo "$published"
EVENTS="$(awk '/^published/ {print $2}' <<<"$published")"

want=$((before + EVENTS))
for _ in $(seq 240); do
    done_count=$(settled)
    ((done_count >= want)) && break
    sleep 0.5
done
if ((done_count < want)); then
    echo "demo: only $((done_count - before)) of $EVENTS events were applied within 120 s" >&2
    tail -n 40 "$WORKER_LOG" >&2
    exit 1
fi

echo
echo "== events applied per community and type (all runs so far) =="
"$PULSE" counts --community pycon-us --community python-discord --community django-forum
echo
echo "== this week's leaderboard =="
"$PULSE" leaderboard --community pycon-us --period week --top 5
top="$("$PULSE" leaderboard --community pycon-us --period all --top 1 --json |
    "$REPO_ROOT/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["entries"][0]["member_id"])')"
echo
echo "== the all-time leader =="
"$PULSE" member "$top" --community pycon-us
echo
echo "== badges awarded in pycon-us (latest 8) =="
"$PULSE" awards --community pycon-us --limit 100000 | tail -n 8
echo
echo "== from $METRICS_URL (all communities) =="
curl -fsS "$METRICS_URL" | awk '
    /^#/ { next }
    { name = $1; sub(/[{].*/, "", name); total[name] += $NF }
    $1 ~ /^pulse_community_segment_members[{]/ && $1 ~ /community="pycon-us"/ { split($1, a, "segment=\""); split(a[2], b, "\""); seg[b[1]] = $NF }
    END {
        n = split("pulse_community_events_total pulse_community_events_moderated_total pulse_events_invalid_total pulse_community_events_duplicate_total pulse_community_badges_awarded_total pulse_community_moderation_flags_total pulse_community_segment_changes_total", names, " ")
        for (i = 1; i <= n; i++) printf "  %-40s %d\n", names[i], total[names[i]]
        printf "  pycon-us segments: beginner %d, intermediate %d, advanced %d\n", seg["beginner"], seg["intermediate"], seg["advanced"]
    }' || true
echo
cat <<EOT
The worker keeps running in the background:
  metrics      $METRICS_URL
  pages        http://127.0.0.1:$PULSE_WEB_PORT/c/pycon-us   (and /c/pycon-us/wall for a screen)
  API          http://127.0.0.1:$PULSE_WEB_PORT/api/v1/communities/pycon-us/leaderboards/week
  Prometheus   http://127.0.0.1:19090  (scrapes the worker; alert rules at /alerts)
  worker log   $WORKER_LOG
Use the CLI against this stack:   eval "\$(bash deploy/local/stack.sh env)"; .venv/bin/pulse --help
Stop everything:                  bash deploy/local/demo.sh stop
EOT
