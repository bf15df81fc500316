#!/usr/bin/env bash
# deploy/local/stack.sh - run the community-pulse backing services on this machine,
# without Docker: a single-node Kafka broker (KRaft), Redis and Prometheus.
#
# Everything listens on 127.0.0.1 only. All state (jars, data, logs, pid files,
# the generated Redis password) lives under <repo>/.local (override with
# PULSE_LOCAL_DIR). Run "stack.sh --help" for the commands.
set -euo pipefail

# ---------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------
SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/../.." && pwd -P)"
PROG="deploy/local/stack.sh"

LOCAL_DIR="${PULSE_LOCAL_DIR:-$REPO_ROOT/.local}"
[[ $LOCAL_DIR == /* ]] || LOCAL_DIR="$PWD/$LOCAL_DIR"

RUN_DIR="$LOCAL_DIR/run"
LOG_DIR="$LOCAL_DIR/logs"

HOST=127.0.0.1
KAFKA_PORT=19092
KAFKA_CONTROLLER_PORT=19093
REDIS_PORT=16379
PROM_PORT=19090
WORKER_METRICS_PORT=6066

KAFKA_START_TIMEOUT=90
REDIS_START_TIMEOUT=30
PROM_START_TIMEOUT=60
STOP_TIMEOUT=30

POM="$SCRIPT_DIR/pom.xml"
KAFKA_DIR="$LOCAL_DIR/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_LIBS_MARKER="$KAFKA_LIBS/.complete"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_LOG4J="$KAFKA_DIR/log4j.properties"
KAFKA_CLUSTER_ID_FILE="$KAFKA_DIR/cluster.id"
KAFKA_LOG="$LOG_DIR/kafka.log"
KAFKA_OUT="$LOG_DIR/kafka.stdout.log"     # JVM stdout/stderr (crashes, OOM, GC warnings)
KAFKA_JAVA_OPTS=(-Xms256m -Xmx512m -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true)

REDIS_DIR="$LOCAL_DIR/redis"
REDIS_DATA="$REDIS_DIR/data"
REDIS_CONF="$REDIS_DIR/redis.conf"
REDIS_PASSWORD_FILE="$REDIS_DIR/password"
REDIS_LOG="$LOG_DIR/redis.log"
REDIS_OUT="$LOG_DIR/redis.stdout.log"     # only early startup errors land here

PROM_CONFIG="$REPO_ROOT/deploy/prometheus/prometheus.local.yml"
PROM_DATA="$LOCAL_DIR/prometheus/data"
PROM_LOG="$LOG_DIR/prometheus.log"

SERVICES=(kafka redis prometheus)

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
say()  { printf '%s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die()  { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

usage() {
    cat <<EOF
Usage: $PROG <command>

Runs the community-pulse backing services locally (no Docker), bound to 127.0.0.1:
  kafka        127.0.0.1:$KAFKA_PORT   single-node KRaft broker (controller on :$KAFKA_CONTROLLER_PORT)
  redis        127.0.0.1:$REDIS_PORT   password-protected (generated on first start)
  prometheus   127.0.0.1:$PROM_PORT   scrapes the worker's metrics on 127.0.0.1:$WORKER_METRICS_PORT

Commands:
  install     fetch the Kafka jars (Maven) and apt-install redis-server, prometheus,
              chromium and chromium-driver (for the browser tests)
              when they are missing; idempotent
  start       install, then start every service that is not running and wait
              until each one answers (Kafka up to ${KAFKA_START_TIMEOUT}s)
  stop [SVC..] stop the services this script started, or only the named ones
              (kafka, redis, prometheus; SIGTERM, SIGKILL after ${STOP_TIMEOUT}s)
  restart     stop, then start
  status      one line per service; exit 0 if all are running, 3 otherwise
  env         print export lines for the app, use as:  eval "\$($PROG env)"
  logs [SERVICE] [-f]
              without SERVICE: list the log files and tail each briefly;
              with SERVICE (kafka|redis|prometheus): last 100 lines, -f to follow

State, data and logs: $LOCAL_DIR
  (override with PULSE_LOCAL_DIR). Reset all data:
    $PROG stop && rm -rf "$KAFKA_DATA" "$REDIS_DATA"
EOF
}

# True when something accepts TCP connections on 127.0.0.1:<port>.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }

# Print the pid recorded for a service (nothing, status 1, if there is none).
recorded_pid() {
    local f pid
    f="$(pid_file "$1")"
    [[ -r $f ]] || return 1
    read -r pid <"$f" || true
    [[ ${pid:-} =~ ^[0-9]+$ ]] || return 1
    printf '%s' "$pid"
}

# True when the pid is alive, not a zombie, and its command line is the one we
# started (protects against a pid recycled by an unrelated process).
pid_is_ours() {
    local svc=$1 pid=$2 cmd
    kill -0 "$pid" 2>/dev/null || return 1
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ -n $cmd ]] || return 1   # zombie
    case $svc in
        kafka) [[ $cmd == *"kafka.Kafka $KAFKA_PROPS"* ]] ;;
        # redis rewrites its argv to "redis-server 127.0.0.1:PORT" once it runs
        redis) [[ $cmd == *"redis-server $REDIS_CONF"* || $cmd == *"redis-server $HOST:$REDIS_PORT"* ]] ;;
        prometheus) [[ $cmd == *"--storage.tsdb.path=$PROM_DATA"* ]] ;;
        *) return 1 ;;
    esac
}

# True when the service's pid file names a live process of ours.
svc_alive() {
    local pid
    pid="$(recorded_pid "$1")" || return 1
    pid_is_ours "$1" "$pid"
}

svc_port() {
    case $1 in
        kafka) printf '%s' "$KAFKA_PORT" ;;
        redis) printf '%s' "$REDIS_PORT" ;;
        prometheus) printf '%s' "$PROM_PORT" ;;
    esac
}

svc_addr() {
    case $1 in
        kafka) printf '%s' "$HOST:$KAFKA_PORT (controller $HOST:$KAFKA_CONTROLLER_PORT)" ;;
        redis) printf '%s' "$HOST:$REDIS_PORT" ;;
        prometheus) printf '%s' "http://$HOST:$PROM_PORT" ;;
    esac
}

svc_start_timeout() {
    case $1 in
        kafka) printf '%s' "$KAFKA_START_TIMEOUT" ;;
        redis) printf '%s' "$REDIS_START_TIMEOUT" ;;
        prometheus) printf '%s' "$PROM_START_TIMEOUT" ;;
    esac
}

# Main log first, then the captured stdout/stderr of the process (if any).
svc_logs() {
    case $1 in
        kafka) printf '%s\n' "$KAFKA_LOG" "$KAFKA_OUT" ;;
        redis) printf '%s\n' "$REDIS_LOG" "$REDIS_OUT" ;;
        prometheus) printf '%s\n' "$PROM_LOG" ;;
    esac
}

svc_log() { local all; all="$(svc_logs "$1")"; printf '%s' "${all%%$'\n'*}"; }

redis_password() {
    [[ -s $REDIS_PASSWORD_FILE ]] || return 1
    local pw
    read -r pw <"$REDIS_PASSWORD_FILE" || true
    [[ -n ${pw:-} ]] || return 1
    printf '%s' "$pw"
}

# Percent-encode everything outside RFC 3986 "unreserved".
urlencode() {
    local LC_ALL=C s=$1 out='' c hex i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
            [A-Za-z0-9._~-]) out+=$c ;;
            *) printf -v hex '%%%02X' "'$c"; out+=$hex ;;
        esac
    done
    printf '%s' "$out"
}

# Readiness probes (the process may be alive long before it serves).
kafka_ready() {
    port_open "$KAFKA_PORT" || return 1
    [[ -f $KAFKA_LOG ]] || return 1
    local pos=0 size
    [[ -r $RUN_DIR/kafka.logpos ]] && read -r pos <"$RUN_DIR/kafka.logpos"
    [[ $pos =~ ^[0-9]+$ ]] || pos=0
    size=$(stat -c %s "$KAFKA_LOG")
    # The log rolled over since this broker started: the port answering will do.
    ((size >= pos)) || return 0
    # Only look at what this broker instance wrote (the log is appended across runs).
    grep -qF "Kafka Server started" < <(tail -c "+$((pos + 1))" "$KAFKA_LOG")
}

redis_ready() {
    local pw out
    pw="$(redis_password)" || return 1
    out="$(REDISCLI_AUTH="$pw" timeout 5 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" || return 1
    [[ $out == PONG ]]
}

prometheus_ready() {
    curl -fs --max-time 3 -o /dev/null "http://$HOST:$PROM_PORT/-/ready"
}

svc_ready() { "${1}_ready"; }

# running | starting | stopped | stale
svc_state() {
    local svc=$1
    if ! recorded_pid "$svc" >/dev/null; then
        echo stopped
    elif ! svc_alive "$svc"; then
        echo stale
    elif port_open "$(svc_port "$svc")"; then
        echo running
    else
        echo starting
    fi
}

show_log_tail() {
    local svc=$1 f
    while read -r f; do
        [[ -s $f ]] || continue
        printf '\n----- last 30 lines of %s -----\n' "$f" >&2
        tail -n 30 "$f" >&2
    done < <(svc_logs "$svc")
    printf -- '-----\n' >&2
}

LOCKED=0
take_lock() {
    ((LOCKED == 0)) || return 0
    LOCKED=1
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/stack.lock"
    if ! flock -w 300 9; then
        die "another $PROG is still running (lock $RUN_DIR/stack.lock)"
    fi
}

# Start a detached process in its own session; stdin/stdout/stderr and the
# lock fd are not inherited, so it survives the calling shell. $! is the pid
# of the service itself: setsid does not fork when the caller is not a
# process-group leader (always the case for a background job of a script),
# and nohup execs.
launch() {
    local svc=$1 out=$2
    shift 2
    setsid nohup "$@" >>"$out" 2>&1 </dev/null 9>&- &
    local pid=$! i
    printf '%s\n' "$pid" >"$(pid_file "$svc")"
    # Give the fork a moment to exec, so that pid_is_ours recognises it.
    for ((i = 0; i < 40; i++)); do
        pid_is_ours "$svc" "$pid" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    say "  $svc: started (pid $pid), log: $(svc_log "$svc")"
}

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------
pom_digest() { sha256sum "$POM" | awk '{print $1}'; }

kafka_libs_complete() {
    [[ -f $KAFKA_LIBS_MARKER && "$(<"$KAFKA_LIBS_MARKER")" == "$(pom_digest)" ]] &&
        compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null
}

# Missing commands -> Debian packages that provide them.
missing_packages() {
    local -a pkgs=()
    command -v redis-server >/dev/null || pkgs+=(redis-server)
    command -v redis-cli >/dev/null || pkgs+=(redis-tools)
    command -v prometheus >/dev/null || pkgs+=(prometheus)
    command -v curl >/dev/null || pkgs+=(curl)
    command -v java >/dev/null || pkgs+=(default-jre-headless)
    # The browser tests drive Debian's Chromium through its ChromeDriver.
    command -v chromium >/dev/null || pkgs+=(chromium)
    command -v chromedriver >/dev/null || pkgs+=(chromium-driver)
    if ! kafka_libs_complete; then
        command -v mvn >/dev/null || pkgs+=(maven)
    fi
    ((${#pkgs[@]} == 0)) || printf '%s\n' "${pkgs[@]}" | sort -u
}

apt_install() {
    local -a pkgs=("$@")
    if [[ $(id -u) -ne 0 ]]; then
        printf '%s: error: missing packages: %s\n' "$PROG" "${pkgs[*]}" >&2
        printf 'Install them as root, then run this again:\n  sudo apt-get install -y --no-install-recommends %s\n' "${pkgs[*]}" >&2
        exit 1
    fi
    command -v apt-get >/dev/null || die "missing packages (${pkgs[*]}) and no apt-get on this machine; install them by hand"
    say "  apt: installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # --no-install-recommends: prometheus recommends prometheus-node-exporter,
    # which would listen on all interfaces.
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}" 9>&-; then
        say "  apt: install failed, refreshing package lists and retrying"
        apt-get update -q 9>&-
        apt-get install -y -q --no-install-recommends "${pkgs[@]}" 9>&-
    fi
    # On a systemd host the Debian packages also enable and start their own
    # system-wide services (redis on :6379, prometheus on *:9090). We just
    # installed them and this stack does not use them: switch them off.
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        local p units=()
        for p in "${pkgs[@]}"; do
            case $p in redis-server | prometheus) units+=("$p") ;; esac
        done
        if ((${#units[@]})); then
            say "  apt: disabling the system services the packages enabled: ${units[*]}"
            systemctl disable --now "${units[@]}" 9>&- || warn "could not disable ${units[*]}"
        fi
    fi
}

fetch_kafka_libs() {
    if kafka_libs_complete; then
        return 0
    fi
    if svc_alive kafka; then
        warn "the Kafka jars are incomplete or out of date, but Kafka is running; not touching them (run '$PROG stop' first)"
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found"
    local staging="$KAFKA_DIR/libs.partial" attempt ok=0 n t0=$SECONDS
    mkdir -p "$KAFKA_DIR"
    say "  kafka: fetching broker jars with Maven into $KAFKA_LIBS"
    local mvn_log="$LOG_DIR/maven.log"
    mkdir -p "$LOG_DIR"
    for attempt in 1 2; do
        rm -rf "$staging"
        # Output goes to a log: Maven 3.8 in -q mode still prints stray ANSI resets.
        if mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
            -DoutputDirectory="$staging" -DincludeScope=runtime >"$mvn_log" 2>&1 9>&-; then
            ok=1
            break
        fi
        if ((attempt == 1)); then
            warn "mvn failed (log: $mvn_log), retrying once in 5 s"
            sleep 5
        fi
    done
    if ((ok == 0)); then
        rm -rf "$staging"
        sed 's/\x1b\[[0-9;]*m//g' "$mvn_log" | tail -n 40 >&2
        die "could not fetch the Kafka jars with Maven (full log: $mvn_log)"
    fi
    n=$(find "$staging" -maxdepth 1 -name '*.jar' | wc -l)
    if ! compgen -G "$staging/kafka_2.13-*.jar" >/dev/null || ((n < 20)); then
        die "Maven finished but $staging looks incomplete ($n jars)"
    fi
    rm -rf "$KAFKA_LIBS"
    mv "$staging" "$KAFKA_LIBS"
    pom_digest >"$KAFKA_LIBS_MARKER"
    say "  kafka: $n jars in $((SECONDS - t0)) s"
}

cmd_install() {
    local -a pkgs
    mapfile -t pkgs < <(missing_packages)
    if ((${#pkgs[@]})); then
        apt_install "${pkgs[@]}"
    fi
    local c
    for c in redis-server redis-cli prometheus curl java; do
        command -v "$c" >/dev/null || die "'$c' is still not available after installing packages"
    done
    fetch_kafka_libs
    mkdir -p "$RUN_DIR" "$LOG_DIR"
}

# ---------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------
write_kafka_config() {
    mkdir -p "$KAFKA_DIR" "$KAFKA_DATA" "$LOG_DIR"
    cat >"$KAFKA_LOG4J" <<EOF
# Generated by $PROG - edits are overwritten on every start.
log4j.rootLogger=INFO, file

log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$KAFKA_LOG
log4j.appender.file.Append=true
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=3
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n

# Noisy at INFO: one line per partition/segment/request/config dump.
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel\$=WARN
log4j.logger.kafka.authorizer.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.kafka.cluster=WARN
log4j.logger.org.apache.kafka.storage=WARN
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.org.apache.kafka.common.config=WARN
log4j.logger.kafka.server.KafkaConfig=WARN
log4j.logger.kafka.coordinator.group.GroupMetadataManager=WARN
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
log4j.logger.org.apache.kafka.common.metrics=WARN
log4j.logger.org.apache.zookeeper=WARN
EOF
    cat >"$KAFKA_PROPS" <<EOF
# Generated by $PROG - edits are overwritten on every start.
# Single-node KRaft: this process is both broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA

# One node: no replication anywhere.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
default.replication.factor=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0

# The app creates its own topics.
num.partitions=12
auto.create.topics.enable=false
delete.topic.enable=true
EOF
}

format_kafka_storage() {
    [[ -f $KAFKA_DATA/meta.properties ]] && return 0
    if [[ -n "$(ls -A "$KAFKA_DATA" 2>/dev/null)" ]]; then
        die "$KAFKA_DATA is not empty but was never formatted (no meta.properties); remove it to start over"
    fi
    local cid out
    cid="$(java -cp "$KAFKA_LIBS/*" -Dlog4j.configuration="file:$KAFKA_LOG4J" \
        kafka.tools.StorageTool random-uuid 2>>"$KAFKA_OUT" | tail -n 1)"
    [[ $cid =~ ^[A-Za-z0-9_-]{22}$ ]] || die "kafka.tools.StorageTool random-uuid returned '$cid' (see $KAFKA_OUT)"
    if ! out="$(java -cp "$KAFKA_LIBS/*" -Dlog4j.configuration="file:$KAFKA_LOG4J" \
        kafka.tools.StorageTool format -t "$cid" -c "$KAFKA_PROPS" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "formatting the Kafka storage in $KAFKA_DATA failed"
    fi
    printf '%s\n' "$cid" >"$KAFKA_CLUSTER_ID_FILE"
    say "  kafka: formatted $KAFKA_DATA (cluster id $cid)"
}

start_kafka() {
    write_kafka_config
    format_kafka_storage
    # Remember where this run starts in the (appended) log for the readiness check.
    stat -c %s "$KAFKA_LOG" 2>/dev/null >"$RUN_DIR/kafka.logpos" || echo 0 >"$RUN_DIR/kafka.logpos"
    launch kafka "$KAFKA_OUT" \
        java "${KAFKA_JAVA_OPTS[@]}" -Dlog4j.configuration="file:$KAFKA_LOG4J" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS"
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------
start_redis() {
    mkdir -p "$REDIS_DATA" "$LOG_DIR"
    chmod 700 "$REDIS_DIR"
    if ! redis_password >/dev/null; then
        # 48 hex chars: URL-safe, no quoting issues anywhere.
        (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$REDIS_PASSWORD_FILE")
        say "  redis: generated a password into $REDIS_PASSWORD_FILE"
    fi
    chmod 600 "$REDIS_PASSWORD_FILE"
    local pw
    pw="$(redis_password)"
    (
        umask 077
        cat >"$REDIS_CONF" <<EOF
# Generated by $PROG - edits are overwritten on every start.
bind $HOST
port $REDIS_PORT
protected-mode yes
requirepass "$pw"
daemonize no
supervised no
dir "$REDIS_DATA"
logfile "$REDIS_LOG"
loglevel notice
# The AOF is the persistence: no periodic RDB snapshots, and the AOF is rewritten once
# it has grown by 1 GB. Each snapshot or rewrite forks Redis, and on a two-core machine
# the child's work (the whole data set, serialized and compressed) stalls the live path:
# S4 at 6,150 events/s had p99 404 - 460 ms with them, 190 - 234 ms without
# (docs/performance.md).
appendonly yes
appendfsync everysec
save ""
auto-aof-rewrite-min-size 1gb
EOF
    )
    launch redis "$REDIS_OUT" redis-server "$REDIS_CONF"
}

# ---------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------
start_prometheus() {
    [[ -f $PROM_CONFIG ]] || die "missing $PROM_CONFIG"
    mkdir -p "$PROM_DATA" "$LOG_DIR"
    launch prometheus "$PROM_LOG" \
        prometheus \
        --config.file="$PROM_CONFIG" \
        --storage.tsdb.path="$PROM_DATA" \
        --storage.tsdb.retention.time=7d \
        --web.listen-address="$HOST:$PROM_PORT" \
        --web.enable-lifecycle
}

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------
wait_ready() {
    local svc=$1 timeout=$2 t0=$SECONDS
    while true; do
        if svc_ready "$svc"; then
            say "  $svc: ready after $((SECONDS - t0)) s at $(svc_addr "$svc")"
            return 0
        fi
        if ! svc_alive "$svc"; then
            printf '%s: error: %s exited while starting\n' "$PROG" "$svc" >&2
            show_log_tail "$svc"
            rm -f "$(pid_file "$svc")"
            exit 1
        fi
        if ((SECONDS - t0 >= timeout)); then
            printf '%s: error: %s is not ready after %s s (still running as pid %s; "%s stop" stops it)\n' \
                "$PROG" "$svc" "$timeout" "$(recorded_pid "$svc")" "$PROG" >&2
            show_log_tail "$svc"
            exit 1
        fi
        sleep 1
    done
}

check_ports_free() {
    local svc=$1 port
    local -a ports=("$(svc_port "$svc")")
    [[ $svc == kafka ]] && ports+=("$KAFKA_CONTROLLER_PORT")
    for port in "${ports[@]}"; do
        if port_open "$port"; then
            die "$svc: port $HOST:$port is already in use by a process this script did not start (see: ss -ltnp 'sport = :$port'); stop it first"
        fi
    done
}

cmd_start() {
    take_lock
    local t0=$SECONDS svc
    say "install:"
    cmd_install
    say "start:"
    local -a started=() to_start=()
    for svc in "${SERVICES[@]}"; do
        if svc_alive "$svc"; then
            say "  $svc: already running (pid $(recorded_pid "$svc"))"
            continue
        fi
        rm -f "$(pid_file "$svc")"
        to_start+=("$svc")
    done
    # Check every port before launching anything: fail without side effects.
    for svc in "${to_start[@]}"; do
        check_ports_free "$svc"
    done
    for svc in "${to_start[@]}"; do
        "start_$svc"
        started+=("$svc")
    done
    for svc in "${SERVICES[@]}"; do
        wait_ready "$svc" "$(svc_start_timeout "$svc")"
    done
    if ((${#started[@]})); then
        say "started ${started[*]} in $((SECONDS - t0)) s. For the app:  eval \"\$($PROG env)\""
    else
        say "all services were already running."
    fi
}

cmd_stop() {
    take_lock
    local svc pid
    local -a waiting=() chosen=("$@")
    ((${#chosen[@]})) || chosen=(prometheus redis kafka)
    for svc in "${chosen[@]}"; do
        case $svc in
            prometheus | redis | kafka) ;;
            *) die "unknown service \"$svc\" (expected kafka, redis or prometheus)" ;;
        esac
    done
    for svc in "${chosen[@]}"; do
        if pid="$(recorded_pid "$svc")"; then
            if pid_is_ours "$svc" "$pid"; then
                say "  $svc: stopping (pid $pid)"
                kill -TERM "$pid" 2>/dev/null || true
                waiting+=("$svc:$pid")
            else
                say "  $svc: not running (removing stale pid file, pid $pid)"
                rm -f "$(pid_file "$svc")"
            fi
        else
            say "  $svc: not running"
        fi
    done
    local entry t0=$SECONDS
    for entry in "${waiting[@]}"; do
        svc=${entry%%:*} pid=${entry#*:}
        while pid_is_ours "$svc" "$pid" && ((SECONDS - t0 < STOP_TIMEOUT)); do
            sleep 0.5
        done
        if pid_is_ours "$svc" "$pid"; then
            warn "$svc (pid $pid) did not stop within ${STOP_TIMEOUT} s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
        fi
        rm -f "$(pid_file "$svc")"
        say "  $svc: stopped"
    done
    rm -f "$RUN_DIR/kafka.logpos"
}

cmd_status() {
    local svc state pid note rc=0
    for svc in "${SERVICES[@]}"; do
        state="$(svc_state "$svc")"
        pid="$(recorded_pid "$svc" 2>/dev/null || true)"
        note=''
        [[ $state == running ]] || rc=3
        case $state in
            stopped) pid='-' ;;
            stale) state=stopped note="  (stale pid file: process $pid is gone)" pid='-' ;;
            starting) note="  (process alive, port not answering yet)" ;;
        esac
        printf '%-11s %-9s pid %-8s %s%s\n' "$svc" "$state" "$pid" "$(svc_addr "$svc")" "$note"
    done
    return "$rc"
}

cmd_env() {
    local pw
    pw="$(redis_password)" || die "no Redis password yet ($REDIS_PASSWORD_FILE); run '$PROG start' first"
    printf "export PULSE_KAFKA_BOOTSTRAP_SERVERS='%s'\n" "$HOST:$KAFKA_PORT"
    printf "export PULSE_REDIS_URL='%s'\n" "redis://:$(urlencode "$pw")@$HOST:$REDIS_PORT/0"
    printf "export PULSE_PROMETHEUS_URL='%s'\n" "http://$HOST:$PROM_PORT"
}

cmd_logs() {
    local svc='' follow=0 a f
    for a in "$@"; do
        case $a in
            -f | --follow) follow=1 ;;
            kafka | redis | prometheus) svc=$a ;;
            *) die "logs: unknown argument '$a' (expected kafka, redis, prometheus or -f)" ;;
        esac
    done
    [[ -d $LOG_DIR ]] || { say "no logs yet ($LOG_DIR does not exist)"; return 0; }
    if [[ -n $svc ]]; then
        f="$(svc_log "$svc")"
        [[ -f $f ]] || die "no log yet: $f"
        if ((follow)); then exec tail -n 100 -F "$f"; fi
        tail -n 100 "$f"
        return 0
    fi
    say "log files in $LOG_DIR:"
    for f in "$LOG_DIR"/*; do
        [[ -f $f ]] || continue
        printf '  %-22s %6s  modified %s\n' "${f##*/}" "$(du -h -- "$f" | cut -f1)" "$(date -r "$f" '+%F %T')"
    done
    for svc in "${SERVICES[@]}"; do
        while read -r f; do
            [[ -s $f ]] || continue
            printf '\n==> %s (last 10 lines) <==\n' "$f"
            tail -n 10 "$f"
        done < <(svc_logs "$svc")
    done
    ((follow == 0)) || exec tail -n 0 -F "$KAFKA_LOG" "$REDIS_LOG" "$PROM_LOG"
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
        install) take_lock; say "install:"; cmd_install; say "install: done" ;;
        start) cmd_start ;;
        stop) cmd_stop "$@" ;;
        restart) cmd_stop; cmd_start ;;
        status) cmd_status ;;
        env) cmd_env ;;
        logs) cmd_logs "$@" ;;
        -h | --help | help) usage ;;
        '') usage; exit 2 ;;
        *) printf '%s: unknown command "%s"\n\n' "$PROG" "$cmd" >&2; usage >&2; exit 2 ;;
    esac
}

main "$@"
