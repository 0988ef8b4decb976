#!/usr/bin/env bash
# fileload.sh BUILD [ROUNDS]: an uninvolved pair's message latency without,
# then during, a loop of 25 MiB uploads (parley-bench file: one user uploads
# and sends a file, the other downloads it, again and again). What a user
# chatting on a server where someone else uploads large files notices.
#
# One parleyd of BUILD (a release build: make build) per round, on a fresh
# data directory, limits raised as bench/run.sh raises them. The pair is
# parley-bench direct, 2 connections paced at PAIR_RATE msg/s in total,
# for DUR seconds each time. Prints one line per round:
#   round N: pair p99 X ms (p99.9 Y, max Z) alone; X ms (p99.9 Y, max Z) during uploads (K uploads)
# Environment: PAIR_RATE (100), DUR (20), FILE_MIB (25).
set -euo pipefail

build=$(cd "${1:?usage: bench/fileload.sh BUILD [ROUNDS]}" && pwd)
rounds=${2:-1}
rate=${PAIR_RATE:-100} dur=${DUR:-20} mib=${FILE_MIB:-25}
tmp=$(mktemp -d /tmp/parley-fileload.XXXXXX)
server_pid="" loop_pid=""
cleanup() {
  [ -n "$loop_pid" ] && kill "$loop_pid" 2>/dev/null && wait "$loop_pid" 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

limits=(--msg-rate 1000000 --req-rate 1000000 --reg-rate 1000000 --max-conns-per-ip 1000000
  --auth-queue-per-conn 64 --auth-queue-per-ip 100000 --auth-queue 100000)

start_server() {
  local data=$tmp/data.$1 log=$tmp/parleyd.$1.log i
  mkdir -p "$data"
  "$build/parleyd" --bind 127.0.0.1 --port 0 --data "$data" --pwhash-cost min "${limits[@]}" \
    >"$log" 2>&1 &
  server_pid=$!
  for ((i = 0; i < 400; i++)); do
    if grep -q "is ready" "$log"; then
      port=$(grep -m1 "is ready" "$log" | sed -E 's/.*127\.0\.0\.1:([0-9]+).*/\1/')
      return 0
    fi
    sleep 0.05
  done
  echo "parleyd did not start" >&2
  tail "$log" >&2
  exit 1
}

# pair JSON: the paced pair, for dur seconds after 2 of warm-up.
pair() {
  "$build/parley-bench" direct --port "$port" --conns 2 --rate "$rate" --duration "$dur" \
    --warmup 2 --pwhash-cost min --quiet --json "$1" >/dev/null
}

figures() {
  python3 - "$1" <<'EOF'
import json, sys
l = json.load(open(sys.argv[1]))["results"]["latency_ms"]
print("%.2f ms (p99.9 %.2f, max %.2f)" % (l["p99"], l["p999"], l["max"]), end="")
EOF
}

for ((r = 1; r <= rounds; r++)); do
  start_server "$r"
  pair "$tmp/alone.$r.json"
  : >"$tmp/uploads.$r"
  (while :; do
     "$build/parley-bench" file --port "$port" --file-mib "$mib" >/dev/null 2>&1 &&
       echo x >>"$tmp/uploads.$r"
   done) &
  loop_pid=$!
  sleep 2 # the first upload under way
  pair "$tmp/during.$r.json"
  kill "$loop_pid" 2>/dev/null
  wait "$loop_pid" 2>/dev/null || true
  loop_pid=""
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  rm -rf "$tmp/data.$r"
  sync
  printf 'round %d: pair p99 %s alone; %s during uploads (%d uploads of %d MiB)\n' "$r" \
    "$(figures "$tmp/alone.$r.json")" "$(figures "$tmp/during.$r.json")" \
    "$(wc -l <"$tmp/uploads.$r")" "$mib"
done
