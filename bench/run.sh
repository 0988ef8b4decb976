#!/usr/bin/env bash
# bench/run.sh: Parley against the floor, every scenario, in one go (make bench).
#
# Builds (RelWithDebInfo, no sanitizers), then runs each scenario twice with
# the same settings: against parley-floor (a relay with no storage: what the
# machine allows) and against Parley (embedded parleyd, a fresh data dir each
# time; then a local cluster). Prints a table of Parley's figures as ratios of
# the floor's, writes bench/results/latest.json and bench/results/latest.png.
# Two scenarios run on Parley alone, at the default argon2id cost, since the
# floor does not hash: logins on new connections, and regflood (a pair's
# latency without and during a flood of registrations, at default limits).
# Two more run on Parley with TLS on its client port (--tls auto) and are
# compared with plain Parley in the same run rather than with the floor
# (which has no TLS): direct-tls (throughput, issue 14 asks for at least 0.6
# of plain) and idle-tls (server memory per connection, at most 16 KiB).
# One runs over WebSocket (--ws-port, the bench speaking it) and is compared
# with TCP runs of its own in the same run: ws-direct-if8 (issue 17 asks for
# at least 0.8 of TCP's throughput).
# A second reference (issue 15): mosquitto, the MQTT broker from Debian, run
# with the same scenarios (direct with 200 users in pairs and 190-byte
# bodies, closed loop at 1 and 8 in flight, paced at 5,000 and 20,000/s;
# idle) as a plain process on a free loopback port, with parley-bench
# speaking MQTT 3.1.1 at QoS 1 to it (--mqtt). Every server's CPU time in
# the measured window (from /proc/PID/stat) goes into the table per message.
#
# Environment:
#   BENCH_QUICK=1        a smoke run of about a minute (small and short)
#   BENCH_DURATION=S     measured seconds per run (default 8; quick 2)
#   BENCH_WARMUP=S       warm-up seconds per run (default 2; quick 1)
#   BENCH_CLUSTER=0      skip the cluster runs
#   BENCH_RESULTS=DIR    where latest.json / latest.png go (default bench/results)
#   BENCH_THREADS=T      bench event loops (default: cores)
#   BENCH_MQTT_NODELAY=1 mosquitto with TCP_NODELAY (default: its default, off)
# Three rows run a second session per user (parley-bench --devices 2) against
# one, in the same run: direct-devices2-if8, direct-devices2-r5000 and
# group-devices2-own-if8 (only the senders have one: own copies alone).
# Two rows run parleyd --sync full (every commit fsynced) against the usual
# --sync normal: direct-syncfull (throughput) and syncfull-r5000 (latency).
#   BENCH_ONLY=REGEX     only the rows whose name matches (e.g. '^mq-'; the
#                        cluster starts only if a cluster row matches; a TLS
#                        row needs its plain rows, direct-cC-if8 and idle-cN)
# Exit status: 0 if every run passed its checks, 1 if any failed (lost,
# duplicated under another msgid, out of order, or a run that broke).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=$root/build
quick=${BENCH_QUICK:-0}
results=${BENCH_RESULTS:-$here/results}
use_cluster=${BENCH_CLUSTER:-1}
only=${BENCH_ONLY:-}
if [ -n "$only" ] && ! [[ cluster-cross-max =~ $only || cluster-cross-r =~ $only ]]; then
  use_cluster=0
fi
if [ "$quick" = 1 ]; then
  dur=${BENCH_DURATION:-2} warm=${BENCH_WARMUP:-1}
else
  dur=${BENCH_DURATION:-8} warm=${BENCH_WARMUP:-2}
fi
threads=${BENCH_THREADS:-$(nproc)}
started=$(date +%s)

say() { printf '%s\n' "bench: $*" >&2; }
die() { say "$*"; exit 1; }

tmp=$(mktemp -d /tmp/parley-bench.XXXXXX)
server_pid=""
cluster_dir=""
srv_cost=min     # parleyd's --pwhash-cost for the next run
srv_limits=raised # raised: the limits below; default: parleyd's own
srv_tls=0        # 1: parleyd serves TLS on its client port (--tls auto, no plain port)
srv_ws=0         # 1: parleyd serves WebSocket on ws_port too (--ws-port)
ws_port=""

stop_pid() { # pid: TERM, up to 10 s, then KILL
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$server_pid"
  server_pid=""
  if [ -n "$cluster_dir" ]; then
    bash "$root/scripts/cluster.sh" down "$cluster_dir" >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# ---- build and tools ----
say "building (RelWithDebInfo, no sanitizers)"
make -C "$root" --no-print-directory build >&2
for b in parleyd parley-bench parley-floor; do
  [ -x "$build/$b" ] || die "$build/$b is missing after the build"
done
if ! command -v gnuplot >/dev/null 2>&1; then
  say "installing gnuplot-nox (for the chart)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends gnuplot-nox </dev/null >&2 ||
    { apt-get update -q </dev/null >&2 && apt-get install -y -q --no-install-recommends gnuplot-nox </dev/null >&2; } ||
    say "could not install gnuplot-nox: no chart this time"
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed for the report (make deps installs it)"
# mosquitto (make deps installs it): /usr/sbin may not be on a user's PATH.
mosquitto_bin=$(command -v mosquitto 2>/dev/null || true)
[ -z "$mosquitto_bin" ] && [ -x /usr/sbin/mosquitto ] && mosquitto_bin=/usr/sbin/mosquitto
[ -n "$mosquitto_bin" ] || say "mosquitto is missing (make deps installs it): its column stays empty"

mkdir -p "$tmp/json" "$results"

# ---- parleyd's abuse limits ----
# parleyd limits what one client may do (issue 13; docs/security.md): 30
# messages/s per user, 100 requests/s per connection, 10 registrations a
# minute and 64 connections per source address, 2/8/256 queued logins per
# connection/address/server, login within 30 s of connecting. The bench is
# not a human: thousands of users on 127.0.0.1, each sending hundreds of
# messages a second, and a setup that registers every user before the first
# logs in. At the defaults most of its load would be answered BUSY or cut
# off, and the figures would measure the limits, not Parley. So the usual
# scenarios run with each limit raised far above the bench's load, but not
# switched off (0 would): every request still goes through its token
# bucket or counter, and that cost stays in the figures. regflood runs at
# the defaults: there the limits are what is measured. A parleyd from before
# the limits has none of these flags: only those its --help lists are given.
raised_limits=()
parleyd_help=$("$build/parleyd" --help 2>/dev/null || true)
add_limit() { # FLAG VALUE, if this parleyd has FLAG
  if grep -q -- "--$1 " <<<"$parleyd_help"; then
    raised_limits+=("--$1" "$2")
  fi
}
add_limit msg-rate 1000000           # per user and second (the bench: up to ~1,500)
add_limit req-rate 1000000           # per connection and second
add_limit reg-rate 1000000           # per address and minute (idle registers ~19,000 in seconds)
add_limit max-conns-per-ip 1000000   # idle: up to 15,000 per address
add_limit auth-queue-per-conn 64     # the bench has one request in flight per connection
add_limit auth-queue-per-ip 100000   # setup: 256 in flight per worker process
add_limit auth-queue 100000
add_limit login-timeout 300          # idle: 19,000 register, then log in
if [ "${#raised_limits[@]}" -gt 0 ]; then
  say "parleyd's limits, raised above the bench's load (not off): ${raised_limits[*]}"
else
  say "this parleyd has no abuse limits (no --msg-rate): it runs as it is"
fi
manifest=$tmp/manifest.tsv
: >"$manifest"
failed=0
n=0

# ---- servers ----

# wait_ready LOG PATTERN PID: waits for PATTERN in LOG; prints the port.
wait_ready() {
  local log=$1 pat=$2 pid=$3 i
  for ((i = 0; i < 400; i++)); do
    if grep -q "$pat" "$log" 2>/dev/null; then
      grep -m1 "$pat" "$log" | sed -E 's/.*127\.0\.0\.1:([0-9]+).*/\1/'
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; die "server exited during start"; }
    sleep 0.05
  done
  tail -20 "$log" >&2
  die "server did not become ready"
}

server_port=""
start_floor() {
  local log=$tmp/floor.$n.log
  "$build/parley-floor" --port 0 >"$log" 2>&1 &
  server_pid=$!
  server_port=$(wait_ready "$log" "is ready" "$server_pid")
}

start_parleyd() {
  local log=$tmp/parleyd.$n.log data=$tmp/data.$n limits=()
  mkdir -p "$data"
  [ "$srv_limits" = raised ] && limits=("${raised_limits[@]}")
  [ "$srv_tls" = 1 ] && limits+=(--tls auto)
  [ "$srv_ws" = 1 ] && limits+=(--ws-port "$ws_port")
  [ "${srv_metrics:-on}" = off ] && limits+=(--no-metrics)
  [ "${srv_sync:-normal}" = full ] && limits+=(--sync full)
  [ "${srv_metrics:-on}" = scraped ] && limits+=(--admin-port "$(free_port)")
  # parleyd raises its own open-file limit to the hard one; so does this.
  (ulimit -n "$(ulimit -Hn)" && exec "$build/parleyd" --bind 127.0.0.1 --port 0 --data "$data" \
    --pwhash-cost "$srv_cost" "${limits[@]}") >"$log" 2>&1 &
  server_pid=$!
  server_port=$(wait_ready "$log" "is ready" "$server_pid")
  if [ "${srv_metrics:-on}" = scraped ]; then
    # As a Prometheus would, every second, for as long as the server runs.
    local ap=${limits[-1]}
    (while kill -0 "$server_pid" 2>/dev/null; do
       { exec 3<>"/dev/tcp/127.0.0.1/$ap" &&
         printf 'GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3 &&
         cat <&3 >/dev/null; } 2>/dev/null
       sleep 1
     done) &
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# mosquitto on a free loopback port, in memory only (persistence false),
# anonymous, its own defaults otherwise but these: up to 64 QoS 1 messages
# in flight to a client (default 20; the bench has at most 16 in flight per
# sender, one sender per subscriber) and 10,000 queued (default 1,000). Its
# sockets keep Nagle's algorithm on, its default (issue 15 measured it so);
# BENCH_MQTT_NODELAY=1 sets TCP_NODELAY, as parleyd, the floor and the bench
# do. It logs its start (information) but not each connection. Run as root
# it drops to the mosquitto user after reading its config.
start_mosquitto() {
  local log=$tmp/mosquitto.$n.log conf=$tmp/mosquitto.$n.conf port try i
  for try in 1 2 3; do
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    printf '%s\n' "listener $port 127.0.0.1" "allow_anonymous true" "persistence false" \
      "max_inflight_messages 64" "max_queued_messages 10000" \
      "set_tcp_nodelay $([ "${BENCH_MQTT_NODELAY:-0}" = 1 ] && echo true || echo false)" \
      "log_dest stderr" "log_type error" "log_type warning" "log_type notice" "log_type information" \
      "connection_messages false" >"$conf"
    (ulimit -n "$(ulimit -Hn)" && exec "$mosquitto_bin" -c "$conf") >"$log" 2>&1 &
    server_pid=$!
    for ((i = 0; i < 200; i++)); do
      if grep -q "listen socket on port $port" "$log" 2>/dev/null && grep -q " running" "$log"; then
        server_port=$port
        return 0
      fi
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.05
    done
    stop_pid "$server_pid"
    server_pid=""
    tail -5 "$log" >&2
    say "mosquitto did not start on port $port (try $try of 3)"
  done
  die "mosquitto did not start"
}

stop_server() {
  stop_pid "$server_pid"
  server_pid=""
  rm -rf "$tmp/data.$n"
  # Freeing a run's files costs the filesystem work (discards) at its next
  # journal commit: done now, not during the next measurement, where back
  # to back paced runs showed stalls of about 100 ms.
  sync
}

# one TARGET NAME SCENARIO [bench args]: runs parley-bench once; TARGET is
# floor, parley (a fresh server each), tls (a fresh server serving TLS, and
# the bench speaking it), ws (a fresh server with --ws-port, the bench
# speaking WebSocket to it), devices (a fresh server, the bench with
# --devices 2: a second session per user) or cluster (the running cluster).
one() {
  local target=$1 name=$2 sc=$3
  shift 3
  if [ -n "$only" ] && ! [[ $name =~ $only ]]; then
    return 0
  fi
  local ports=() extra=()
  case $target in
    floor) start_floor; ports=(--port "$server_port") ;;
    parley) start_parleyd; ports=(--port "$server_port") ;;
    scraped) srv_metrics=scraped start_parleyd; ports=(--port "$server_port") ;;
    tls) srv_tls=1 start_parleyd; ports=(--port "$server_port"); extra+=(--tls) ;;
    ws) ws_port=$(free_port); srv_ws=1 start_parleyd; ports=(--port "$ws_port"); extra+=(--ws) ;;
    synced) srv_sync=full start_parleyd; ports=(--port "$server_port") ;;
    devices) start_parleyd; ports=(--port "$server_port"); extra+=(--devices 2) ;;
    mosquitto) start_mosquitto; ports=(--port "$server_port"); extra+=(--mqtt) ;;
    cluster) ports=(--port "$GATEWAY1_PORT" --port "$GATEWAY2_PORT") ;;
  esac
  # idle: its memory; the others: its CPU time in the measured window
  [ -n "$server_pid" ] && extra+=(--server-pid "$server_pid")
  local json=$tmp/json/$name.$target.json rc=0
  say "$name on $target: parley-bench $sc $* ${extra[*]}"
  "$build/parley-bench" "$sc" "${ports[@]}" --threads "$threads" --json "$json" --label "$name" \
    --pwhash-cost "$srv_cost" --quiet "$@" "${extra[@]}" | sed "s/^/  [$target] /" >&2 ||
    rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    failed=1
    say "FAIL: $name on $target (exit $rc)"
    [ -f "$json" ] || printf '{"scenario":"%s","ok":false,"failure":"parley-bench exited %s","settings":{},"results":{}}\n' "$sc" "$rc" >"$json"
  fi
  [ "$target" = cluster ] || stop_server
  n=$((n + 1))
}

# row NAME KIND WHAT SETTINGS TARGET [FLOOR]: a line of the table. KIND says
# which figures it shows: rate (msg/s), deliveries, latency, memory, logins,
# regflood. FLOOR is "none" for a scenario run on Parley alone, and
# "plain:OTHER[+OTHER2]" for a TLS run (and NAME.again, if run) compared with
# plain Parley's run(s) of OTHER.
row() {
  if [ -n "$only" ] && ! [[ $1 =~ $only ]]; then
    return 0
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6:-floor}" >>"$manifest"
}

# pair NAME KIND WHAT SETTINGS SCENARIO [bench args]: the floor, then Parley.
pair() {
  local name=$1 kind=$2 what=$3 settings=$4
  shift 4
  one floor "$name" "$@"
  one parley "$name" "$@"
  row "$name" "$kind" "$what" "$settings" parley
}

# trio NAME KIND WHAT SETTINGS SCENARIO [bench args]: the floor, mosquitto
# (the bench speaking MQTT), then Parley. Without mosquitto, as pair.
trio() {
  local name=$1 kind=$2 what=$3 settings=$4
  shift 4
  one floor "$name" "$@"
  [ -n "$mosquitto_bin" ] && one mosquitto "$name" "$@"
  one parley "$name" "$@"
  row "$name" "$kind" "$what" "$settings" parley
}

# solo COST LIMITS NAME KIND WHAT SETTINGS SCENARIO [bench args]: Parley
# alone, with --pwhash-cost COST and LIMITS (raised or default).
solo() {
  srv_cost=$1 srv_limits=$2
  local name=$3 kind=$4 what=$5 settings=$6
  shift 6
  one parley "$name" "$@"
  row "$name" "$kind" "$what" "$settings" parley none
  srv_cost=min srv_limits=raised
}

common=(--duration "$dur" --warmup "$warm")
# LOGIN_USERS: registered before the interactive-cost logins, each a hash of
# 150-300 ms on this machine, about 4-8 a second on two cores: 100 take 15-25 s,
# and a 10 s run logs in 40-80 times, so most logins are of a user not logged
# in just before. LOGIN_ICONNS: clients logging in at once (twice parleyd's
# two auth workers on two cores, so that both always have work).
if [ "$quick" = 1 ]; then
  C=200 IDLE=2000 GSIZES=(10 100) RATES=(10000) CONNS=(100 200) LOGIN_CONNS=8 XRATE=1000 HOLD=0
  LOGIN_USERS=16 LOGIN_ICONNS=4
else
  C=1000 IDLE=19000 GSIZES=(10 100 500) RATES=(10000 50000) CONNS=(100 1000 5000) LOGIN_CONNS=16 XRATE=5000
  HOLD=25 # idle: hold the connections long enough for each to ping once
  LOGIN_USERS=100 LOGIN_ICONNS=4
fi
FLOODERS=40 PAIR_RATE=40 # regflood: 40 flooders, one address each; the pair at 20 msg/s per user

say "Parley runs with --pwhash-cost min (argon2id at its minimum cost, so that logging in thousands of users takes seconds, not minutes); the login figures are for that cost."
say "scenarios: ${dur}s measured after ${warm}s of warm-up each; Parley's durability: SQLite WAL, synchronous=NORMAL, each batch committed before it is acknowledged"

for c in "${CONNS[@]}"; do
  pair "direct-c$c-if8" rate direct "$c conns, 8 in flight" direct --conns "$c" --inflight 8 "${common[@]}"
  if [ "$c" = "$C" ]; then
    # TLS right after plain Parley with the same settings: the ratio of the
    # two is what TLS costs. On a shared machine one pair of short runs
    # scatters more than the margin, so plain, TLS, TLS, plain: a load that
    # drifts during the four weighs on both sides alike, and the ratio is
    # of the means (report.py). The second plain run has no row of its own.
    one tls "direct-tls-c$C-if8" direct --conns "$C" --inflight 8 "${common[@]}"
    one tls "direct-tls-c$C-if8.again" direct --conns "$C" --inflight 8 "${common[@]}"
    one parley "direct-c$C-if8.again" direct --conns "$C" --inflight 8 "${common[@]}"
    row "direct-tls-c$C-if8" rate "direct, TLS" \
      "$C conns, 8 in flight; vs plain Parley, mean of 2 runs each (plain, TLS, TLS, plain)" tls \
      "plain:direct-c$C-if8+direct-c$C-if8.again"
    # WebSocket (issue 17: at least 0.8 of TCP): the same load over --ws-port,
    # against TCP runs of its own in the same order (TCP, WS, WS, TCP), so
    # that BENCH_ONLY='^ws-' measures the ratio by itself.
    one parley "ws-direct-if8.tcp" direct --conns "$C" --inflight 8 "${common[@]}"
    one ws "ws-direct-if8" direct --conns "$C" --inflight 8 "${common[@]}"
    one ws "ws-direct-if8.again" direct --conns "$C" --inflight 8 "${common[@]}"
    one parley "ws-direct-if8.tcp.again" direct --conns "$C" --inflight 8 "${common[@]}"
    row "ws-direct-if8" rate "direct, WebSocket" \
      "$C conns, 8 in flight; vs TCP, mean of 2 runs each (TCP, WS, WS, TCP)" ws \
      "tcp:ws-direct-if8.tcp+ws-direct-if8.tcp.again"
    # What metrics cost (issue 18): parleyd counting and scraped each second
    # against parleyd --no-metrics, in the same order (off, on, on, off).
    srv_metrics=off one parley "direct-nometrics-c$C-if8" direct --conns "$C" --inflight 8 "${common[@]}"
    one scraped "direct-metrics-c$C-if8" direct --conns "$C" --inflight 8 "${common[@]}"
    one scraped "direct-metrics-c$C-if8.again" direct --conns "$C" --inflight 8 "${common[@]}"
    srv_metrics=off one parley "direct-nometrics-c$C-if8.again" direct --conns "$C" --inflight 8 "${common[@]}"
    row "direct-metrics-c$C-if8" rate "direct, metrics scraped" \
      "$C conns, 8 in flight, /metrics read each second; vs --no-metrics, mean of 2 runs each" scraped \
      "metrics:direct-nometrics-c$C-if8+direct-nometrics-c$C-if8.again"
    # What a power loss that loses nothing costs (issue 15): --sync full
    # fsyncs every commit; against the plain runs above (plain, full, full,
    # plain in time order with the plain pair's second run).
    one synced "direct-syncfull-c$C-if8" direct --conns "$C" --inflight 8 "${common[@]}"
    one synced "direct-syncfull-c$C-if8.again" direct --conns "$C" --inflight 8 "${common[@]}"
    row "direct-syncfull-c$C-if8" rate "direct, --sync full" \
      "$C conns, 8 in flight, every commit fsynced; vs --sync normal, mean of 2 runs each" synced \
      "sync:direct-c$C-if8+direct-c$C-if8.again"
  fi
done
pair "direct-c$C-if1" rate direct "$C conns, 1 in flight" direct --conns "$C" --inflight 1 "${common[@]}"
for r in "${RATES[@]}"; do
  pair "direct-c$C-r$r" latency direct "$C conns, $r msg/s offered" direct --conns "$C" --rate "$r" "${common[@]}"
done
# Beside mosquitto (issue 15): 200 users in 100 pairs, 190-byte bodies, every
# message acknowledged by its receiver (Ack; PUBACK at QoS 1). Quick or not.
mq=(--conns 200 --size 190)
for k in 1 8; do
  trio "mq-direct-if$k" rate "direct (+mosquitto)" "200 conns, 190 B, $k in flight" direct "${mq[@]}" \
    --inflight "$k" "${common[@]}"
done
for r in 5000 20000; do
  trio "mq-direct-r$r" latency "direct (+mosquitto)" "200 conns, 190 B, $r msg/s offered" direct \
    "${mq[@]}" --rate "$r" "${common[@]}"
done
one synced "syncfull-r5000" direct "${mq[@]}" --rate 5000 "${common[@]}"
row "syncfull-r5000" latency "direct, --sync full" \
  "200 conns, 190 B, 5000 msg/s offered, every commit fsynced; vs --sync normal" synced \
  "sync:mq-direct-r5000"
for g in "${GSIZES[@]}"; do
  gc=$C
  [ "$gc" -lt "$g" ] && gc=$g
  gc=$((gc / g * g))
  pair "group-m$g" deliveries group "$g members, $gc conns, 1 sender/group, 4 in flight" group --conns "$gc" \
    --group-size "$g" --senders 1 --inflight 4 "${common[@]}"
done
trio "idle-c$IDLE" memory idle "$IDLE conns, ping every 20 s" idle --conns "$IDLE" --settle 4 \
  --duration "$HOLD"
one tls "idle-tls-c$IDLE" idle --conns "$IDLE" --settle 4 --duration "$HOLD"
row "idle-tls-c$IDLE" memory "idle, TLS" "$IDLE conns, ping every 20 s; vs plain Parley" tls \
  "plain:idle-c$IDLE"
pair "login-c$LOGIN_CONNS" logins login "$LOGIN_CONNS conns, pwhash-cost min" login --conns "$LOGIN_CONNS" "${common[@]}"
# The default argon2id cost, as users have it: each login on a new
# connection (hello, login, logout, close), as users of the LOGIN_USERS in turn.
solo interactive raised "login-interactive-c$LOGIN_ICONNS" logins login \
  "$LOGIN_ICONNS conns, $LOGIN_USERS users, a new connection per login, pwhash-cost interactive" \
  login --conns "$LOGIN_ICONNS" --users "$LOGIN_USERS" --reconnect "${common[@]}"
# An uninvolved pair, first alone, then while FLOODERS connections from
# 127.0.0.2 on register as fast as the server lets them: default limits and
# cost, which are what keep the pair's latency down.
solo interactive default "regflood-f$FLOODERS" regflood regflood \
  "1 pair at $PAIR_RATE msg/s; $FLOODERS flooders from $FLOODERS addresses; default limits, pwhash-cost interactive" \
  regflood --conns 2 --rate "$PAIR_RATE" --flood-conns "$FLOODERS" --flood-addrs "$FLOODERS" "${common[@]}"

# Files (issue 17): one user uploads a 25 MiB file (parleyd's default
# --max-file-size) and sends it, the other downloads it; in 64 KiB frames
# (the default --max-frame), 8 chunks in flight each way.
solo min raised "file-25mib" file "file, 25 MiB" \
  "one upload and one download of 25 MiB, default frame size, 8 chunks in flight; SHA-256 checked" \
  file --file-mib 25

# A second device per user (issue 16): each user's second session only
# receives and acks, and gets every message the user sends as an own copy
# (and every message the user receives). Against 1 session per user with the
# same settings in the same run, in the order 1, 2, 2, 1 sessions (as the TLS
# and WS rows), so that BENCH_ONLY='devices' measures it alone. Parley only:
# the floor keeps one session per user.
dv=direct-devices2-if8
one parley "$dv.plain" direct --conns "$C" --inflight 8 "${common[@]}"
one devices "$dv" direct --conns "$C" --inflight 8 "${common[@]}"
one devices "$dv.again" direct --conns "$C" --inflight 8 "${common[@]}"
one parley "$dv.plain.again" direct --conns "$C" --inflight 8 "${common[@]}"
row "$dv" devices-rate "direct, 2 sessions per user" \
  "$C conns, 8 in flight, each user's second session receives; vs 1 session, mean of 2 runs each (1, 2, 2, 1)" \
  devices "devices:$dv.plain+$dv.plain.again"
dv=direct-devices2-r5000
one parley "$dv.plain" direct --conns "$C" --rate 5000 "${common[@]}"
one devices "$dv" direct --conns "$C" --rate 5000 "${common[@]}"
one devices "$dv.again" direct --conns "$C" --rate 5000 "${common[@]}"
one parley "$dv.plain.again" direct --conns "$C" --rate 5000 "${common[@]}"
row "$dv" devices-latency "direct, 2 sessions per user" \
  "$C conns, 5000 msg/s offered, each user's second session receives; vs 1 session, mean of 2 runs each (1, 2, 2, 1)" \
  devices "devices:$dv.plain+$dv.plain.again"
# Own copies alone: in groups of 2 with 1 sender (one-way pairs) only the
# senders have a second session, so the one extra push per message is the
# own copy (above, each message also reaches the receiver's second session).
dv=group-devices2-own-if8
one parley "$dv.plain" group --conns "$C" --group-size 2 --senders 1 --inflight 8 "${common[@]}"
one devices "$dv" group --conns "$C" --group-size 2 --senders 1 --inflight 8 --devices-for senders "${common[@]}"
one devices "$dv.again" group --conns "$C" --group-size 2 --senders 1 --inflight 8 --devices-for senders "${common[@]}"
one parley "$dv.plain.again" group --conns "$C" --group-size 2 --senders 1 --inflight 8 "${common[@]}"
row "$dv" devices-deliveries "group of 2, senders' 2nd session" \
  "$C conns in groups of 2, 1 sender each, 8 in flight, a second session for each sender only; vs 1 session, mean of 2 runs each (1, 2, 2, 1)" \
  devices "devices:$dv.plain+$dv.plain.again"

if [ "$use_cluster" = 1 ]; then
  cluster_dir=$tmp/cluster
  say "starting a local cluster (ZooKeeper, Redis, MariaDB, 2 gateways, 2 nodes of each service; PARLEY_PWHASH_COST=min)"
  # cluster.sh starts $PARLEYD: this one adds the raised limits (exec keeps
  # the pid that cluster.sh records).
  {
    printf '#!/bin/sh\nexec %q "$@"' "$build/parleyd"
    for a in "${raised_limits[@]}"; do printf ' %q' "$a"; done
    printf '\n'
  } >"$tmp/parleyd-limits"
  chmod +x "$tmp/parleyd-limits"
  if PARLEY_CLUSTER_TLS=0 PARLEY_PWHASH_COST=min PARLEYD=$tmp/parleyd-limits bash "$root/scripts/cluster.sh" up "$cluster_dir" >"$tmp/cluster.log" 2>&1; then
    # shellcheck disable=SC1091
    . "$cluster_dir/cluster.env"
    # The floor has one port: it stands for both gateways. The paced run
    # goes first: after a flood, InnoDB spends a while writing back what the
    # flood left dirty, and a run then would measure that, not Parley.
    one floor "cluster-cross-r$XRATE" direct --conns "$C" --rate "$XRATE" --straggle 15 "${common[@]}"
    one cluster "cluster-cross-r$XRATE" direct --conns "$C" --rate "$XRATE" --cross --straggle 15 "${common[@]}"
    row "cluster-cross-r$XRATE" latency "cluster direct" "$C conns, $XRATE msg/s offered, partners on different gateways" cluster
    one floor "cluster-cross-max" direct --conns "$C" --inflight 8 --straggle 15 "${common[@]}"
    one cluster "cluster-cross-max" direct --conns "$C" --inflight 8 --cross --straggle 15 "${common[@]}"
    row cluster-cross-max rate "cluster direct" "$C conns, 8 in flight, partners on different gateways" cluster
  else
    tail -20 "$tmp/cluster.log" >&2
    say "FAIL: the cluster did not start"
    failed=1
  fi
  bash "$root/scripts/cluster.sh" down "$cluster_dir" >/dev/null 2>&1 || true
  cluster_dir=""
fi

elapsed=$(($(date +%s) - started))
python3 "$here/report.py" --manifest "$manifest" --json-dir "$tmp/json" --out "$results" \
    --quick "$quick" --duration "$dur" --warmup "$warm" --elapsed "$elapsed" ||
  {
    failed=1
    rm -rf "$results/raw"
    cp -r "$tmp/json" "$results/raw" && cp "$manifest" "$results/raw/manifest.tsv"
    say "report failed; the runs are in $results/raw"
  }
if command -v gnuplot >/dev/null 2>&1 && [ -d "$results/plot" ]; then
  gnuplot -e "dir='$results/plot'; out='$results/latest.png'" "$here/plot.gp" 2>"$tmp/gnuplot.log" ||
    { cat "$tmp/gnuplot.log" >&2; say "the chart failed"; }
  [ -f "$results/latest.png" ] && say "chart: $results/latest.png"
fi
rm -rf "$results/plot"
say "results: $results/latest.json (${elapsed}s)"
if [ "$failed" -ne 0 ]; then
  say "FAIL: at least one run failed its checks (see above)"
  exit 1
fi
