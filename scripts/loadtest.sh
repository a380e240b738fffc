#!/usr/bin/env bash
# Load test on this machine: prefork_lb side by side with the backends themselves,
# nginx and HAProxy as balancers, its Python peers (WSGIProxy2 on gunicorn's
# gevent worker, proxy.py's reverse proxy), and the seven-line Flask snippet it grew from;
# then the latency each adds at one connection, one request at a time; then
# WebSocket bulk relay and echo round trips, direct, through prefork_lb and nginx.
#
#   scripts/loadtest.sh                      # 2 workers, 10 s per target, 50 connections
#   scripts/loadtest.sh --workers 4 --connections 200 --duration 30
#   scripts/loadtest.sh --quick              # 2 s per target, under a minute: a smoke check,
#                                            # and prefork_lb's CPU per request to compare commits
#
# The Python half (ports, readiness, /proc, wrk results, the report) is the
# package scripts/bench, run as `python -m scripts.bench COMMAND`.
#
# Every process it starts runs in its own process group on ephemeral loopback
# ports, and is stopped on exit, error or Ctrl-C. Results: a table on stdout,
# the same figures as JSON (.loadtest/last.json), raw wrk output and server
# logs of the last run in .loadtest/last-run/.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/loadtest.sh [--workers N] [--duration S] [--connections C] [--json FILE]
                           [--quick] [--python-backends]

  --workers N        prefork_lb workers, nginx worker processes, HAProxy threads (default 2)
  --duration S       seconds of load per target (default 10; 2 with --quick); the
                     1-connection latency runs take half as long, at least 3 s
  --connections C    concurrent connections wrk keeps open (default 50)
  --json FILE        where to write the figures as JSON (default .loadtest/last.json)
  --quick            2 s per target, shorter bulk runs, no warm-up: a smoke check in
                     under a minute; its CPU per request (and the ratio to nginx's)
                     is the figure to compare between two commits
  --python-backends  use the slower Python backends even when nginx is installed

Needs wrk. Uses nginx and HAProxy when installed (as backends and as balancers to
compare with); without nginx the backends are small Python servers.
EOF
}

# ---- settings ------------------------------------------------------------------------

WORKERS=2
DURATION=""
CONNECTIONS=50
JSON_FILE=""
QUICK=0
PYTHON_BACKENDS=0
ORIGINAL_ARGS=("$@")

readonly CACHE_DIR=.loadtest
readonly SNIPPET_VENV="$CACHE_DIR/snippet-venv"
# The Python peers, pinned, in a virtualenv of their own (made once).
readonly PEERS_VENV="$CACHE_DIR/peers-venv"
readonly PEERS_PACKAGES=("gunicorn[gevent]==27.0.1" "gevent==26.9.0" "urllib3==2.8.0"
    "WSGIProxy2==0.5.1" "WebOb==1.8.11" "proxy.py==2.4.10")
readonly BULK_BYTES=50000000     # the bulk row's body: 50 MB
readonly READY_TIMEOUT=30        # seconds a server may take to answer its first request
readonly WRK_LUA=scripts/bench/done.lua  # prints each run's exact figures as one JSON line

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --workers) WORKERS=$(positive_int "$1" "${2-}"); shift 2 ;;
            --duration) DURATION=$(positive_int "$1" "${2-}"); shift 2 ;;
            --connections) CONNECTIONS=$(positive_int "$1" "${2-}"); shift 2 ;;
            --json) JSON_FILE=$(file_name "$1" "${2-}"); shift 2 ;;
            --quick) QUICK=1; shift ;;
            --python-backends) PYTHON_BACKENDS=1; shift ;;
            -h | --help) usage; exit 0 ;;
            *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
        esac
    done
    if [ "$QUICK" = 1 ]; then
        DURATION=${DURATION:-2}
        BULK_DURATION=2
        WS_DURATION=2
        WARMUP=0
    else
        DURATION=${DURATION:-10}
        BULK_DURATION=5
        WS_DURATION=5
        WARMUP=1
    fi
    # One connection, one request at a time: half the time is plenty, 3 s at least.
    LATENCY_DURATION=$((DURATION / 2 < 3 ? 3 : DURATION / 2))
    # wrk needs at least one connection per thread.
    THREADS=$((CONNECTIONS < 2 ? CONNECTIONS : 2))
}

positive_int() {  # positive_int OPTION VALUE: VALUE, or exit 2 saying what is wrong
    if [[ "${2-}" =~ ^[1-9][0-9]*$ ]]; then
        echo "$2"
    else
        echo "$1 needs a positive whole number (got '${2-}')" >&2
        exit 2
    fi
}

file_name() {  # file_name OPTION VALUE: VALUE, or exit 2 if there is none
    if [ -n "${2-}" ] && [[ "$2" != -* ]]; then
        echo "$2"
    else
        echo "$1 needs a file name" >&2
        exit 2
    fi
}

# ---- output and tools: progress, install_hint, find_tool ------------------------------

# shellcheck source=scripts/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

check_tools() {
    WRK=$(find_tool wrk)
    if [ -z "$WRK" ]; then
        progress "wrk is required and not installed. Install it with:"
        progress "    $(install_hint wrk)"
        exit 2
    fi
    NGINX=$(find_tool nginx)
    HAPROXY=$(find_tool haproxy)
    if [ -z "$NGINX" ]; then
        progress "nginx is not installed: no nginx row, and the backends will be Python servers."
        progress "    install it with: $(install_hint nginx)"
    fi
    if [ -z "$HAPROXY" ]; then
        progress "haproxy is not installed: no haproxy row."
        progress "    install it with: $(install_hint haproxy)"
    fi
    if ! command -v setsid >/dev/null; then
        progress "setsid (util-linux) is required to stop the servers cleanly"
        exit 2
    fi
}

# ---- processes ------------------------------------------------------------------------
#
# Each server runs under setsid: its own session and process group, whose id is
# its pid. A terminal's Ctrl-C then reaches only this script (and wrk), and the
# trap stops each server, workers included, in reverse start order.

SERVICE_PIDS=()
LAST_PID=""
WRK_PID=""

# start_service LOG COMMAND...: start in the background, pid in LAST_PID.
start_service() {
    local log=$1
    shift
    setsid "$@" </dev/null >"$log" 2>&1 &
    LAST_PID=$!
    SERVICE_PIDS+=("$LAST_PID")
}

# stop_service PID: SIGTERM to the leader, which stops its own workers as it does
# in production (signalling gunicorn's workers directly makes them print
# tracebacks); 5 s later SIGKILL whatever is left of the group.
stop_service() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local kept=() other
    for other in "${SERVICE_PIDS[@]}"; do
        [ "$other" = "$pid" ] || kept+=("$other")
    done
    SERVICE_PIDS=("${kept[@]}")
}

# wait_ready NAME URL PID LOG: 0 once URL answers 200; else say why, show the log, 1.
wait_ready() {
    local name=$1 url=$2 pid=$3 log=$4 problem
    if problem=$(helper wait-ready "$url" "$pid" "$READY_TIMEOUT" 2>&1); then
        return 0
    fi
    progress "    $name did not start: $problem; the end of its log (${log/#"$OUT"/$CACHE_DIR/last-run}):"
    tail -n 15 "$log" | sed 's/^/      /' >&2 || true
    return 1
}

helper() { .venv/bin/python -m scripts.bench "$@"; }

cleanup() {
    local status=$?
    trap '' INT TERM    # a second Ctrl-C must not leave servers behind
    if [ -n "$WRK_PID" ]; then
        kill -TERM "$WRK_PID" 2>/dev/null || true
        wait "$WRK_PID" 2>/dev/null || true
    fi
    # Newest first: balancers before the backends they talk to.
    while [ ${#SERVICE_PIDS[@]} -gt 0 ]; do
        stop_service "${SERVICE_PIDS[-1]}"
    done
    if [ -n "${WORK_DIR:-}" ] && [ -d "$WORK_DIR" ]; then
        # Keep the raw wrk output and the server logs of the last run for a closer look.
        rm -rf "$CACHE_DIR/last-run"
        mv "$WORK_DIR/out" "$CACHE_DIR/last-run" 2>/dev/null || true
        rm -rf "$WORK_DIR"
    fi
    exit "$status"
}

make_work_dir() {
    mkdir -p "$CACHE_DIR"
    WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/prefork_lb-loadtest.XXXXXX")
    # nginx's workers drop to nobody when started as root: they must read the bulk file.
    chmod 755 "$WORK_DIR"
    OUT="$WORK_DIR/out"
    mkdir -p "$OUT" "$WORK_DIR/www" "$WORK_DIR/nginx-temp"
    head -c "$BULK_BYTES" /dev/urandom >"$WORK_DIR/www/bulk"
    chmod 644 "$WORK_DIR/www/bulk"
}

# ---- wrk ------------------------------------------------------------------------------

# run_wrk OUTPUT THREADS CONNECTIONS SECONDS TIMEOUT URL: in the background, so a
# signal to this script interrupts the wait at once instead of after the run.
run_wrk() {
    local output=$1 threads=$2 connections=$3 seconds=$4 timeout=$5 url=$6 status=0
    "$WRK" "-t$threads" "-c$connections" "-d${seconds}s" --timeout "${timeout}s" --latency \
        -s "$WRK_LUA" "$url" >"$output" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || status=$?
    WRK_PID=""
    return "$status"
}

# measure KEY PID URL [BULK_URL]: the small-response run, then (if given) the bulk
# run. With a PID, the CPU time of that server (its process and all under it)
# is sampled just before and after the small-response run.
measure() {
    local key=$1 pid=$2 url=$3 bulk_url=${4-}
    if [ "$WARMUP" -gt 0 ]; then
        run_wrk "$OUT/$key.warmup.wrk" "$THREADS" "$CONNECTIONS" "$WARMUP" 2 "$url" || true
    fi
    [ -z "$pid" ] || helper cpu "$pid" "$OUT/$key.cpu-before.json"
    run_wrk "$OUT/$key.wrk" "$THREADS" "$CONNECTIONS" "$DURATION" 2 "$url" || true
    [ -z "$pid" ] || helper cpu "$pid" "$OUT/$key.cpu-after.json"
    show_result "$key" "$OUT/$key.wrk"
    if [ -n "$bulk_url" ]; then
        measure_bulk "$key" "$bulk_url"
    fi
}

measure_bulk() {
    local key=$1 url=$2
    progress "      bulk: $((BULK_BYTES / 1000000)) MB bodies over 1 connection for $BULK_DURATION s..."
    # A slow 50 MB body is a result, not a timeout: give each one 30 s.
    run_wrk "$OUT/$key.bulk.wrk" 1 1 "$BULK_DURATION" 30 "$url" || true
    show_result "$key" "$OUT/$key.bulk.wrk" --bulk
}

# show_result KEY WRK_OUTPUT [--bulk | --latency]: print the run's figures; a run
# that has none (wrk itself failed) makes the whole load test fail.
show_result() {
    local key=$1 output=$2 summary label=""
    shift 2
    [ "${1-}" = --latency ] && label="$key: "
    if summary=$(helper summary "$@" "$output" 2>&1); then
        progress "      $label$summary"
    else
        progress "      $label$summary"
        if [ $# = 0 ]; then
            echo "failed: $summary" >"$OUT/$key.status"
        fi
        FAILED=1
    fi
}

STEP=0
step() {
    STEP=$((STEP + 1))
    progress "[$STEP/$STEPS] $*"
}

skip_target() {  # skip_target KEY REASON
    echo "$2" >"$OUT/$1.status"
    progress "      $2"
}

fail_target() {  # fail_target KEY LOG_NAME
    echo "failed: did not start (log: $CACHE_DIR/last-run/$2)" >"$OUT/$1.status"
    FAILED=1
}

# ---- backends -------------------------------------------------------------------------

BACKEND_URLS=()

start_backends() {
    local attempt
    for attempt in 1 2 3; do
        if [ -n "$NGINX" ] && [ "$PYTHON_BACKENDS" = 0 ]; then
            start_nginx_backends && return 0
        else
            start_python_backends && return 0
        fi
        progress "    retrying with other ports (attempt $attempt of 3 failed)"
    done
    progress "the backends did not start; giving up"
    exit 1
}

# One nginx, one worker process, three servers: a small answer each, and the bulk file.
start_nginx_backends() {
    local ports port n=0 servers=""
    read -r -a ports <<<"$(helper ports 3)"
    for port in "${ports[@]}"; do
        n=$((n + 1))
        servers+="
    server {
        listen 127.0.0.1:$port;
        location / { return 200 \"backend-$n\\n\"; }
        location = /bulk { root $WORK_DIR/www; }
    }"
    done
    cat >"$WORK_DIR/backends.conf" <<EOF
# Three backends that should not be the bottleneck: one nginx, one worker process.
$(nginx_user)
worker_processes 1;
daemon off;
pid $WORK_DIR/backends.pid;
error_log $OUT/backends-nginx.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    sendfile on;
$(nginx_temp_paths backends)
$servers
}
EOF
    start_service "$OUT/backends-nginx.log" "$NGINX" -p "$WORK_DIR" -c "$WORK_DIR/backends.conf"
    local pid=$LAST_PID
    BACKEND_URLS=()
    for port in "${ports[@]}"; do
        BACKEND_URLS+=("http://127.0.0.1:$port")
        if ! wait_ready "the nginx backends" "http://127.0.0.1:$port/" "$pid" "$OUT/backends-nginx.log"; then
            stop_service "$pid"
            return 1
        fi
    done
    BACKENDS_KIND=nginx
    BACKENDS_LABEL="3 nginx servers (one nginx, 1 worker process)"
}

# Started as root, nginx runs its workers as 'nobody' of a group whose name
# differs between distributions: name it. (Not as root, 'user' is ignored.)
nginx_user() {
    if [ "$(id -u)" = 0 ]; then
        echo "user nobody $(id -gn nobody);"
    fi
}

# nginx writes temporary files under these (it makes the last directory level);
# the defaults are root-only.
nginx_temp_paths() {
    local kind
    for kind in client_body proxy fastcgi uwsgi scgi; do
        echo "    ${kind}_temp_path $WORK_DIR/nginx-temp/$1-$kind;"
    done
}

start_python_backends() {
    local ports port n=0 pids=() pid
    read -r -a ports <<<"$(helper ports 3)"
    progress "!!! Python backends (ThreadingHTTPServer): much slower than nginx; they may be the"
    progress "!!! bottleneck, so every row below measures them as much as the balancer."
    BACKEND_URLS=()
    for port in "${ports[@]}"; do
        n=$((n + 1))
        start_service "$OUT/backend-$n.log" \
            .venv/bin/python -m scripts.bench backend "$port" "backend-$n" "$WORK_DIR/www/bulk"
        pids+=("$LAST_PID")
        BACKEND_URLS+=("http://127.0.0.1:$port")
    done
    n=0
    for port in "${ports[@]}"; do
        n=$((n + 1))
        if ! wait_ready "backend-$n" "http://127.0.0.1:$port/" "${pids[$((n - 1))]}" "$OUT/backend-$n.log"; then
            for pid in "${pids[@]}"; do stop_service "$pid"; done
            return 1
        fi
    done
    BACKENDS_KIND=python
    BACKENDS_LABEL="3 Python ThreadingHTTPServers (SLOW: may be the bottleneck)"
}

# ---- targets --------------------------------------------------------------------------

measure_direct() {
    step "backend direct (${BACKEND_URLS[0]}): $DURATION s at $CONNECTIONS connections..."
    measure direct "" "${BACKEND_URLS[0]}/" "${BACKEND_URLS[0]}/bulk"
    keep_for_latency direct "${BACKEND_URLS[0]}/" ""
}

measure_prefork_lb() {
    step "prefork_lb ($WORKERS gevent workers): $DURATION s at $CONNECTIONS connections..."
    local port pid backends log="$OUT/prefork_lb.log"
    port=$(helper ports 1)
    # Named backend-1, -2, ... so that an extension (canary) can name one.
    backends=""
    for i in "${!BACKEND_URLS[@]}"; do
        backends+="${backends:+,}${BACKEND_URLS[$i]} name=backend-$((i + 1))"
    done
    # Other PREFORK_LB_* settings in the environment apply (and go into the JSON).
    start_service "$log" env PREFORK_LB_BACKENDS="$backends" \
        .venv/bin/gunicorn -c gunicorn.conf.py --bind "127.0.0.1:$port" --workers "$WORKERS" \
        --access-logfile /dev/null --pid "$WORK_DIR/gunicorn.pid"
    pid=$LAST_PID
    if ! wait_ready prefork_lb "http://127.0.0.1:$port/" "$pid" "$log"; then
        fail_target prefork_lb prefork_lb.log
        stop_service "$pid"
        return 0
    fi
    measure prefork_lb "$pid" "http://127.0.0.1:$port/"
    progress "      workers' memory before bulk: $(helper rss "$pid" "$OUT/rss-before.json")"
    measure_bulk prefork_lb "http://127.0.0.1:$port/bulk"
    progress "      workers' memory after bulk: $(helper rss "$pid" "$OUT/rss-after.json")"
    keep_for_latency prefork_lb "http://127.0.0.1:$port/" "$pid"
}

# The cost of routing and of hashing (issue 13): prefork_lb again, in front of the
# same backends, once with a route table (the request's route last of five) and
# once with policy = "hash" on the path (bounded load spreads wrk's one path).
measure_prefork_lb_routing() {
    step "prefork_lb routed and hashed: $DURATION s each at $CONNECTIONS connections..."
    local listed="" url
    for url in "${BACKEND_URLS[@]}"; do
        listed+="\"$url\", "
    done
    cat >"$WORK_DIR/routed.toml" <<EOF
[pools.web]
backends = [$listed]
[pools.other]
backends = [$listed]
[[routes]]
host = "api.example.com"
pool = "other"
[[routes]]
host = "*.example.org"
pool = "other"
[[routes]]
path_prefix = "/static"
pool = "other"
[[routes]]
path_prefix = "/api"
methods = ["POST"]
pool = "other"
[[routes]]
path_prefix = "/"
pool = "web"
EOF
    cat >"$WORK_DIR/hashed.toml" <<EOF
policy = "hash"
hash_key = "path"
backends = [$listed]
EOF
    measure_prefork_lb_config prefork_lb_routed "$WORK_DIR/routed.toml"
    measure_prefork_lb_config prefork_lb_hash "$WORK_DIR/hashed.toml"
}

# measure_prefork_lb_config KEY CONFIG: prefork_lb with that file, small responses only.
measure_prefork_lb_config() {
    local key=$1 config=$2 port pid log="$OUT/$1.log"
    port=$(helper ports 1)
    start_service "$log" env PREFORK_LB_CONFIG="$config" \
        .venv/bin/gunicorn -c gunicorn.conf.py --bind "127.0.0.1:$port" --workers "$WORKERS" \
        --access-logfile /dev/null
    pid=$LAST_PID
    if ! wait_ready "$key" "http://127.0.0.1:$port/" "$pid" "$log"; then
        fail_target "$key" "$key.log"
        stop_service "$pid"
        return 0
    fi
    progress "      $key:"
    measure "$key" "$pid" "http://127.0.0.1:$port/"
    stop_service "$pid"
}

measure_nginx() {
    step "nginx as balancer ($WORKERS worker processes): $DURATION s at $CONNECTIONS connections..."
    if [ -z "$NGINX" ]; then
        skip_target nginx "skipped: nginx is not installed ($(install_hint nginx))"
        return 0
    fi
    local port pid servers="" url log="$OUT/balancer-nginx.log"
    port=$(helper ports 1)
    for url in "${BACKEND_URLS[@]}"; do
        servers+="        server ${url#http://};
"
    done
    cat >"$WORK_DIR/balancer.conf" <<EOF
# nginx as a keep-alive balancer, as many workers as prefork_lb has.
$(nginx_user)
worker_processes $WORKERS;
daemon off;
pid $WORK_DIR/balancer.pid;
error_log $log warn;
events { worker_connections 4096; }
http {
    access_log off;
$(nginx_temp_paths balancer)
    upstream backends {
$servers        keepalive 64;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    start_service "$log" "$NGINX" -p "$WORK_DIR" -c "$WORK_DIR/balancer.conf"
    pid=$LAST_PID
    if ! wait_ready "nginx (balancer)" "http://127.0.0.1:$port/" "$pid" "$log"; then
        fail_target nginx balancer-nginx.log
        stop_service "$pid"
        return 0
    fi
    measure nginx "$pid" "http://127.0.0.1:$port/" "http://127.0.0.1:$port/bulk"
    keep_for_latency nginx "http://127.0.0.1:$port/" "$pid"
}

measure_haproxy() {
    step "haproxy as balancer ($WORKERS threads): $DURATION s at $CONNECTIONS connections..."
    if [ -z "$HAPROXY" ]; then
        skip_target haproxy "skipped: haproxy is not installed ($(install_hint haproxy))"
        return 0
    fi
    local port pid servers="" url n=0 log="$OUT/balancer-haproxy.log"
    port=$(helper ports 1)
    for url in "${BACKEND_URLS[@]}"; do
        n=$((n + 1))
        servers+="    server backend-$n ${url#http://}
"
    done
    cat >"$WORK_DIR/haproxy.cfg" <<EOF
# HAProxy as a keep-alive balancer, as many threads as prefork_lb has workers.
# No global maxconn: HAProxy derives it from the descriptor limit, and refuses to
# start when a fixed one needs more descriptors than the limit allows.
global
    nbthread $WORKERS
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend balancer
    bind 127.0.0.1:$port
    default_backend backends
backend backends
    balance roundrobin
$servers
EOF
    start_service "$log" "$HAPROXY" -db -f "$WORK_DIR/haproxy.cfg"
    pid=$LAST_PID
    if ! wait_ready haproxy "http://127.0.0.1:$port/" "$pid" "$log"; then
        fail_target haproxy balancer-haproxy.log
        stop_service "$pid"
        return 0
    fi
    measure haproxy "$pid" "http://127.0.0.1:$port/" "http://127.0.0.1:$port/bulk"
    keep_for_latency haproxy "http://127.0.0.1:$port/" "$pid"
}

# The seven-line snippet this project grew from, in its own virtualenv, made once
# and kept in .loadtest/ for later runs.
prepare_snippet_venv() {
    [ -f "$SNIPPET_VENV/.ready" ] && return 0
    progress "creating the snippet's virtualenv in $SNIPPET_VENV (first run only: pip install flask requests)..."
    rm -rf "$SNIPPET_VENV"
    if python3 -m venv "$SNIPPET_VENV" >"$CACHE_DIR/snippet-venv.log" 2>&1 &&
        "$SNIPPET_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            flask requests >>"$CACHE_DIR/snippet-venv.log" 2>&1; then
        touch "$SNIPPET_VENV/.ready"
    else
        progress "    could not install flask and requests (see $CACHE_DIR/snippet-venv.log): no snippet row"
    fi
}

# The Python peers: pinned versions in their own virtualenv, made once and kept
# in .loadtest/ for later runs (remade when the pins change).
prepare_peers_venv() {
    local pins="${PEERS_PACKAGES[*]}"
    [ -f "$PEERS_VENV/.ready" ] && [ "$(cat "$PEERS_VENV/.ready")" = "$pins" ] && return 0
    progress "creating the Python peers' virtualenv in $PEERS_VENV (pip install $pins)..."
    rm -rf "$PEERS_VENV"
    if python3 -m venv "$PEERS_VENV" >"$CACHE_DIR/peers-venv.log" 2>&1 &&
        "$PEERS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "${PEERS_PACKAGES[@]}" >>"$CACHE_DIR/peers-venv.log" 2>&1; then
        echo "$pins" >"$PEERS_VENV/.ready"
    else
        progress "    could not install the peers (see $CACHE_DIR/peers-venv.log): no peer rows"
    fi
}

# WSGIProxy2 on gunicorn's gevent worker, as many workers as prefork_lb, urllib3 as
# its client, the backends in turn (scripts/bench/peer_wsgiproxy.py).
measure_wsgiproxy2() {
    step "WSGIProxy2 ($WORKERS gevent workers): $DURATION s at $CONNECTIONS connections..."
    if [ ! -f "$PEERS_VENV/.ready" ]; then
        skip_target wsgiproxy2 "skipped: no virtualenv with the peers (see $CACHE_DIR/peers-venv.log)"
        return 0
    fi
    local port pid backends log="$OUT/wsgiproxy2.log"
    port=$(helper ports 1)
    backends=$(IFS=,; echo "${BACKEND_URLS[*]}")
    # -c /dev/null: not prefork_lb's gunicorn.conf.py, which gunicorn reads from here.
    start_service "$log" env PEER_BACKENDS="$backends" \
        "$PEERS_VENV/bin/gunicorn" -c /dev/null -k gevent --workers "$WORKERS" \
        --bind "127.0.0.1:$port" --access-logfile /dev/null --no-control-socket \
        'scripts.bench.peer_wsgiproxy:create_app()'
    pid=$LAST_PID
    if ! wait_ready WSGIProxy2 "http://127.0.0.1:$port/" "$pid" "$log"; then
        fail_target wsgiproxy2 wsgiproxy2.log
        stop_service "$pid"
        return 0
    fi
    measure wsgiproxy2 "$pid" "http://127.0.0.1:$port/"
    stop_service "$pid"
}

# proxy.py's reverse proxy in threaded mode (a thread per connection), one
# acceptor per prefork_lb worker, the backends in turn (scripts/bench/peer_proxypy.py).
measure_proxypy() {
    step "proxy.py reverse proxy (threaded, $WORKERS acceptors): $DURATION s at $CONNECTIONS connections..."
    if [ ! -f "$PEERS_VENV/.ready" ]; then
        skip_target proxypy "skipped: no virtualenv with the peers (see $CACHE_DIR/peers-venv.log)"
        return 0
    fi
    local port pid backends log="$OUT/proxypy.log"
    port=$(helper ports 1)
    backends=$(IFS=,; echo "${BACKEND_URLS[*]}")
    start_service "$log" env PEER_BACKENDS="$backends" \
        "$PEERS_VENV/bin/python" -m proxy --threaded --enable-reverse-proxy \
        --plugins scripts.bench.peer_proxypy.BackendsReverseProxy \
        --hostname 127.0.0.1 --port "$port" --num-acceptors "$WORKERS" --log-level WARNING
    pid=$LAST_PID
    if ! wait_ready proxy.py "http://127.0.0.1:$port/" "$pid" "$log"; then
        fail_target proxypy proxypy.log
        stop_service "$pid"
        return 0
    fi
    measure proxypy "$pid" "http://127.0.0.1:$port/"
    stop_service "$pid"
}

measure_snippet() {
    step "the seven-line Flask snippet (dev server, threaded=True): $DURATION s at $CONNECTIONS connections..."
    if [ ! -f "$SNIPPET_VENV/.ready" ]; then
        skip_target snippet "skipped: no virtualenv with flask and requests (see $CACHE_DIR/snippet-venv.log)"
        return 0
    fi
    local port pid servers log="$OUT/snippet.log"
    port=$(helper ports 1)
    servers=$(printf "'%s', " "${BACKEND_URLS[@]}")
    # Exactly as it is passed around, but for the addresses and the port.
    cat >"$WORK_DIR/snippet.py" <<EOF
from flask import Flask, request
import requests, itertools

app = Flask(__name__)
servers = itertools.cycle([${servers%, }])

@app.route('/', defaults={'path': ''})
@app.route('/<path:path>', methods=['GET', 'POST'])
def proxy(path):
    return requests.request(request.method, next(servers) + '/' + path).text

app.run(host='127.0.0.1', port=$port, threaded=True)
EOF
    start_service "$log" "$SNIPPET_VENV/bin/python" "$WORK_DIR/snippet.py"
    pid=$LAST_PID
    if ! wait_ready "the snippet" "http://127.0.0.1:$port/" "$pid" "$log"; then
        fail_target snippet snippet.log
        stop_service "$pid"
        return 0
    fi
    measure snippet "$pid" "http://127.0.0.1:$port/"
    stop_service "$pid"
}

# ---- latency at one connection ---------------------------------------------------------
#
# Throughput at many connections says what a balancer costs in CPU; one client
# sending one request at a time says what it adds to each request's time. The
# balancers stay up, idle, after their throughput runs, so that all of them are
# driven here back to back under the same conditions.

LATENCY_KEYS=()
LATENCY_URLS=()
LATENCY_PIDS=()

# keep_for_latency KEY URL PID: measure_latency drives URL, then stops PID (if any).
keep_for_latency() {
    LATENCY_KEYS+=("$1")
    LATENCY_URLS+=("$2")
    LATENCY_PIDS+=("$3")
}

measure_latency() {
    step "latency at 1 connection: $LATENCY_DURATION s per target, one request at a time..."
    local i key pid
    for i in "${!LATENCY_KEYS[@]}"; do
        key=${LATENCY_KEYS[$i]}
        run_wrk "$OUT/$key.latency.wrk" 1 1 "$LATENCY_DURATION" 2 "${LATENCY_URLS[$i]}" || true
        show_result "$key" "$OUT/$key.latency.wrk" --latency
    done
    for pid in "${LATENCY_PIDS[@]}"; do
        [ -z "$pid" ] || stop_service "$pid"
    done
}

# ---- WebSocket ------------------------------------------------------------------------
#
# One websockets backend (Python, asyncio: the same for every target), then
# bulk relay (1 MiB messages from the backend over one connection) and echo
# round trips (32-byte messages on 10 connections) straight to it, through
# prefork_lb, and through nginx set up as a WebSocket proxy.

measure_websocket() {
    step "WebSocket: bulk and echo for $WS_DURATION s each, direct, prefork_lb, nginx..."
    if ! .venv/bin/python -c "import websockets" 2>/dev/null; then
        skip_target ws "skipped: the websockets package is not in .venv (pip install -e '.[bench]')"
        return 0
    fi
    local ports backend_pid lb_pid nginx_pid="" key url
    read -r -a ports <<<"$(helper ports 3)"
    start_service "$OUT/ws-backend.log" .venv/bin/python -m scripts.bench ws-backend "${ports[0]}"
    backend_pid=$LAST_PID
    if ! wait_ready "the WebSocket backend" "http://127.0.0.1:${ports[0]}/" "$backend_pid" "$OUT/ws-backend.log"; then
        fail_target ws ws-backend.log
        stop_service "$backend_pid"
        return 0
    fi
    start_service "$OUT/ws-prefork_lb.log" env PREFORK_LB_BACKENDS="http://127.0.0.1:${ports[0]}" \
        .venv/bin/gunicorn -c gunicorn.conf.py --bind "127.0.0.1:${ports[1]}" --workers "$WORKERS" \
        --access-logfile /dev/null --pid "$WORK_DIR/ws-gunicorn.pid"
    lb_pid=$LAST_PID
    wait_ready "prefork_lb (WebSocket)" "http://127.0.0.1:${ports[1]}/" "$lb_pid" "$OUT/ws-prefork_lb.log" ||
        fail_target ws-prefork_lb ws-prefork_lb.log
    if [ -n "$NGINX" ]; then
        write_nginx_ws_conf "${ports[2]}" "${ports[0]}"
        start_service "$OUT/ws-nginx.log" "$NGINX" -p "$WORK_DIR" -c "$WORK_DIR/ws-nginx.conf"
        nginx_pid=$LAST_PID
        wait_ready "nginx (WebSocket)" "http://127.0.0.1:${ports[2]}/" "$nginx_pid" "$OUT/ws-nginx.log" ||
            fail_target ws-nginx ws-nginx.log
    fi
    for key in direct prefork_lb nginx; do
        case $key in
            direct) url="ws://127.0.0.1:${ports[0]}" ;;
            prefork_lb) url="ws://127.0.0.1:${ports[1]}" ;;
            nginx)
                [ -n "$nginx_pid" ] || continue
                url="ws://127.0.0.1:${ports[2]}"
                ;;
        esac
        progress "      $key: $(helper ws-drive "$url" "$WS_DURATION" "$OUT/ws-$key.json" 2>&1 | tail -n 1)"
    done
    [ -z "$nginx_pid" ] || stop_service "$nginx_pid"
    stop_service "$lb_pid"
    stop_service "$backend_pid"
}

# write_nginx_ws_conf PORT BACKEND_PORT: nginx as a WebSocket proxy, as its
# documentation sets one up (HTTP/1.1 to the backend, Upgrade and Connection
# passed on), with upstream keep-alive for plain requests, no response
# buffering, and 64k relay buffers.
write_nginx_ws_conf() {
    cat >"$WORK_DIR/ws-nginx.conf" <<EOF
# nginx as a WebSocket proxy, as many workers as prefork_lb has.
$(nginx_user)
worker_processes $WORKERS;
daemon off;
pid $WORK_DIR/ws-nginx.pid;
error_log $OUT/ws-nginx.log warn;
events { worker_connections 4096; }
http {
    access_log off;
$(nginx_temp_paths ws)
    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      '';
    }
    upstream ws_backend {
        server 127.0.0.1:$2;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$1;
        location / {
            proxy_pass http://ws_backend;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$host;
            proxy_buffering off;
            # An upgraded connection is relayed through proxy_buffer_size each way
            # (4k/8k by default): give it 64k, as prefork_lb reads.
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
            proxy_busy_buffers_size 128k;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }
    }
}
EOF
}

# ---- report ---------------------------------------------------------------------------

report() {
    local snippet_python=""
    [ -f "$SNIPPET_VENV/.ready" ] && snippet_python="$SNIPPET_VENV/bin/python"
    local peers_python=""
    [ -f "$PEERS_VENV/.ready" ] && peers_python="$PEERS_VENV/bin/python"
    local quick=()
    [ "$QUICK" = 1 ] && quick=(--quick)
    progress ""
    helper report "$OUT" --json "$JSON_FILE" --workers "$WORKERS" --duration "$DURATION" \
        --connections "$CONNECTIONS" --threads "$THREADS" --warmup "$WARMUP" \
        --bulk-bytes "$BULK_BYTES" --bulk-duration "$BULK_DURATION" \
        --latency-duration "$LATENCY_DURATION" \
        --backends "$BACKENDS_KIND" \
        --backends-label "$BACKENDS_LABEL" "${quick[@]}" \
        --nginx "$NGINX" --haproxy "$HAPROXY" --wrk "$WRK" --snippet-python "$snippet_python" \
        --peers-python "$peers_python" \
        --command "$(printf '%s ' scripts/loadtest.sh "${ORIGINAL_ARGS[@]}")" --started "$STARTED"
    progress ""
    helper ws-report "$OUT" --json "$JSON_FILE"
    progress ""
    progress "figures as JSON: $JSON_FILE; raw wrk output and logs: $CACHE_DIR/last-run/"
    progress "done in $(($(date +%s) - ${STARTED%.*})) s"
}

main() {
    parse_args "$@"
    # --json is relative to where the user ran the script, not the project root.
    if [ -n "$JSON_FILE" ] && [[ "$JSON_FILE" != /* ]]; then
        JSON_FILE="$PWD/$JSON_FILE"
    fi
    cd "$(dirname "$0")/.."
    JSON_FILE=${JSON_FILE:-$CACHE_DIR/last.json}
    STARTED=$(date +%s.%N)

    # shellcheck source=scripts/venv.sh
    source scripts/venv.sh
    ensure_venv bench
    check_tools
    # Many connections need many descriptors (wrk, nginx, the snippet's threads).
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

    trap cleanup EXIT
    trap 'progress ""; progress "interrupted: stopping everything the load test started"; exit 130' INT
    trap 'exit 143' TERM
    # A closed terminal too: the servers run in sessions of their own and would outlive it.
    trap 'exit 129' HUP
    make_work_dir
    prepare_snippet_venv
    prepare_peers_venv

    STEPS=10
    FAILED=0
    progress "starting the backends..."
    start_backends
    measure_direct
    measure_prefork_lb
    measure_prefork_lb_routing
    measure_nginx
    measure_haproxy
    measure_wsgiproxy2
    measure_proxypy
    measure_snippet
    measure_latency
    measure_websocket
    report
    return "$FAILED"
}

main "$@"
