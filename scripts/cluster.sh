#!/usr/bin/env bash
# cluster.sh: a whole Parley cluster on this machine, for demos and tests.
#
#   cluster.sh up DIR        ZooKeeper, Redis, MariaDB, two nodes of each service
#                            (user, social, message), two gateways and nginx in front,
#                            all on loopback with every bit of state under DIR
#   cluster.sh down DIR      stop everything started in DIR: the gateways first (their
#                            clients get a bye and reconnect elsewhere), within 5 s
#   cluster.sh status DIR    every process (servers too), alive or not, with pids and
#                            addresses
#   cluster.sh start NAME ROLE DIR    start one more parleyd (e.g. message3 message)
#   cluster.sh kill NAME DIR [SIGNAL] send SIGNAL (default KILL) to one process
#
# Each process's pid is in DIR/run/<name>.pid and its log in DIR/log/<name>.log
# (the previous runs' in <name>.log.1 ... .5); DIR/cluster.env holds the
# addresses (ZK, REDIS, DB, NGINX_PORT, ...). The ports are chosen at the first
# up and kept in DIR/ports.env: the next up in DIR (after a down) uses the same
# ones, so what connects to the cluster need not change.
# The cluster trusts only itself (docs/security.md): DIR/secrets (0700) holds
# zk-auth and redis-auth (USER:PASS, made at random) and cluster.key (32
# random bytes), each 0600; every node gets them as --zk-auth-file,
# --redis-auth-file and --cluster-key-file, Parley's znodes are closed to
# everyone else and Redis refuses whoever has not the password.
# cluster.env names the files (ZK_AUTH_FILE, REDIS_AUTH_FILE, CLUSTER_KEY_FILE).
# TLS everywhere a byte crosses a socket Parley can protect:
# - clients: the gateways serve TLS on their client port with
#   DIR/pki/gateway-tls.pem (signed by the cluster CA, DIR/pki/ca.pem, for
#   localhost and 127.0.0.1); nginx passes the TCP stream through, so
#   `parley --tls --ca DIR/pki/ca.pem --port NGINX_PORT` verifies the
#   gateway. PARLEY_CLUSTER_TLS=0 starts the gateways plain instead (the
#   tests and the benchmark that speak plain TCP); cluster.env says which
#   (CLIENT_TLS=1 or 0, and CA).
# - MariaDB: TLS 1.2/1.3 only, required for every TCP connection, with
#   DIR/pki/mariadb.pem; parleyd checks it against the cluster CA
#   (--db-ca). Parley's database user has a random password
#   (DIR/secrets/db-password, given as --db-password-file) and rights on
#   database parley only (scripts/servers.sh, docs/security.md).
# Environment: PARLEYD (default build/parleyd), PARLEY_PWHASH_COST (default
# interactive), PARLEY_ZK_NODES=3 for a three-node ZooKeeper ensemble,
# MARIADB_BUFFER_POOL and MARIADB_REDO_LOG (default 256M each: with the
# 32M/8M the tests use, InnoDB flushes pages all the time once a few hundred
# thousand messages are stored, and the database caps the cluster's rate).
# Every parleyd gets an admin port (/metrics, /healthz, /readyz; ADMIN_PORT_<name> in
# cluster.env, kept in ports.env like the others); PARLEY_ADMIN= (empty) leaves them off.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
servers="$here/servers.sh"
PARLEYD=${PARLEYD:-$root/build/parleyd}

die() { echo "cluster.sh: $*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

load_env() { [ -f "$1/cluster.env" ] || die "no cluster in $1"; . "$1/cluster.env"; }

# Behind nginx's TCP pass-through every client has nginx's address: the
# per-address limits would throttle all clients together, so they are off
# here (docs/security.md). Per-connection and per-user limits stay.
GATEWAY_LIMITS="--max-conns-per-ip 0 --reg-rate 0 --login-fail-rate 0 --auth-queue-per-ip 0"

# rotate_log FILE: keeps the last runs' logs as FILE.1 (newest) ... FILE.5.
rotate_log() {
  local f=$1 i
  [ -s "$f" ] || return 0
  for ((i = 4; i >= 1; i--)); do
    [ -f "$f.$i" ] && mv -f "$f.$i" "$f.$((i + 1))"
  done
  mv -f "$f" "$f.1"
}

# port VAR: the port kept in DIR/ports.env as VAR, or a free one, then kept.
# ports_file must be set. A kept port that is taken now is an error: the
# cluster's users know it, and another process has it.
port() {
  local var=$1 p
  p=$(sed -n "s/^$var=//p" "$ports_file" 2>/dev/null | tail -n1)
  if [ -n "$p" ]; then
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      die "port $p (kept as $var in $ports_file) is in use by another process; stop it, or remove $ports_file to pick new ports"
    fi
  else
    p=$(free_port)
    echo "$var=$p" >>"$ports_file"
  fi
  echo "$p"
}

# start_parleyd DIR NAME ARGS...: runs parleyd in the background, waits until ready.
start_parleyd() {
  local dir=$1 name=$2; shift 2
  [ -x "$PARLEYD" ] || die "$PARLEYD not built (make build)"
  mkdir -p "$dir/run" "$dir/log" "$dir/data/$name"
  rotate_log "$dir/log/$name.log"
  local admin=()
  if [ -n "${PARLEY_ADMIN-1}" ]; then
    local ap
    if [ -n "${ports_file:-}" ]; then ap=$(port "ADMIN_PORT_$name"); else ap=$(free_port); fi
    admin=(--admin-port "$ap")
    echo "ADMIN_PORT_$name=$ap" >>"$dir/cluster.env"
  fi
  # --node-name: parleyctl nodes shows this process as NAME.
  setsid "$PARLEYD" --bind 127.0.0.1 --data "$dir/data/$name" --node-name "$name" \
    --pwhash-cost "${PARLEY_PWHASH_COST:-interactive}" "${admin[@]}" "$@" \
    >>"$dir/log/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/run/$name.pid"
  local i
  for ((i = 0; i < 300; i++)); do
    grep -q "is ready" "$dir/log/$name.log" 2>/dev/null && return 0
    kill -0 "$(cat "$dir/run/$name.pid")" 2>/dev/null ||
      { tail -20 "$dir/log/$name.log" >&2; die "$name exited during start"; }
    sleep 0.05
  done
  tail -20 "$dir/log/$name.log" >&2
  die "$name did not become ready"
}

# The secrets every node is given (paths only: nothing secret on a command line).
secret_args() {
  echo --zk-auth-file "$ZK_AUTH_FILE" --redis-auth-file "$REDIS_AUTH_FILE" \
    --cluster-key-file "$CLUSTER_KEY_FILE"
}

# ---- RPC trust: the cluster's CA and one certificate per node ----
# DIR/pki/ca.pem and ca.key are the cluster's own CA; DIR/pki/NAME.pem and
# NAME.key a node's certificate and key, whose subject's OU says what the node
# is: "gateway" (calls the services, speaking for users) and/or "service"
# (serves them). Every parleyd runs RPC over mutual TLS with them
# (docs/security.md). Keys are 0600, the directory 0700.

make_ca() { # DIR
  local pki=$1/pki
  mkdir -p "$pki"
  chmod 700 "$pki"
  [ -f "$pki/ca.pem" ] && return 0
  (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$pki/ca.key" -out "$pki/ca.pem" -days 3650 \
    -subj "/O=Parley cluster/CN=Parley cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>"$pki/openssl.err") ||
    { cat "$pki/openssl.err" >&2; die "cannot make the cluster CA"; }
  chmod 644 "$pki/ca.pem"
  rm -f "$pki/openssl.err"
}

node_cert() { # DIR NAME ROLE: signs NAME's certificate unless it exists
  local pki=$1/pki name=$2 role=$3 ou="" r
  [ -f "$pki/$name.pem" ] && return 0
  for r in ${role//,/ }; do
    case "$r" in
      gateway) ou="$ou/OU=gateway" ;;
      admin) ou="$ou/OU=admin" ;;
      all) ou="$ou/OU=gateway/OU=service" ;;
      *) [[ "$ou" == */OU=service* ]] || ou="$ou/OU=service" ;;
    esac
  done
  (umask 077 &&
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "/O=Parley cluster$ou/CN=$name" &&
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=IP:127.0.0.1" >"$pki/$name.ext" &&
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
      -set_serial "0x$(openssl rand -hex 15)" -days 3650 -extfile "$pki/$name.ext" \
      -out "$pki/$name.pem") 2>"$pki/openssl.err" ||
    { cat "$pki/openssl.err" >&2; die "cannot make the certificate of $name"; }
  rm -f "$pki/$name.csr" "$pki/$name.ext" "$pki/openssl.err"
  chmod 644 "$pki/$name.pem"
}

# server_cert DIR NAME: a certificate for a server that clients (not
# nodes) dial at localhost or 127.0.0.1: the gateways' client port, MariaDB.
# It names no role (no OU), so it opens no node's RPC port.
server_cert() {
  local pki=$1/pki name=$2 sans="DNS:localhost,IP:127.0.0.1,IP:::1" h
  [ -f "$pki/$name.pem" ] && return 0
  h=$(hostname 2>/dev/null || true)
  [[ "$h" =~ ^[A-Za-z0-9.-]+$ ]] && [ "$h" != localhost ] && sans="$sans,DNS:$h"
  (umask 077 &&
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "/O=Parley cluster/CN=$name" &&
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth" "subjectAltName=$sans" >"$pki/$name.ext" &&
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
      -set_serial "0x$(openssl rand -hex 15)" -days 3650 -extfile "$pki/$name.ext" \
      -out "$pki/$name.pem") 2>"$pki/openssl.err" ||
    { cat "$pki/openssl.err" >&2; die "cannot make the certificate of $name"; }
  rm -f "$pki/$name.csr" "$pki/$name.ext" "$pki/openssl.err"
  chmod 644 "$pki/$name.pem"
}

tls_args() { # DIR NAME
  echo --cluster-ca "$1/pki/ca.pem" --node-cert "$1/pki/$2.pem" --node-key "$1/pki/$2.key"
}

node_args() { # role
  echo --role "$1" --zk "$ZK" --redis "$REDIS" --db "$DB" --rpc-port 0 --threads 1 \
    --auth-workers 1 $(secret_args)
  [ -z "${DB_CA:-}" ] || echo --db-ca "$DB_CA" --db-password-file "$DB_PASSWORD_FILE"
  # Files: one directory every message node shares (docs/architecture.md).
  [ "$1" != message ] || echo --file-dir "$dir/files"
}

# The client port: TLS with the gateways' certificate unless CLIENT_TLS=0.
gateway_tls_args() { # DIR
  [ "${CLIENT_TLS:-1}" = 1 ] || return 0
  echo --tls-cert "$1/pki/gateway-tls.pem" --tls-key "$1/pki/gateway-tls.key"
}

# make_secrets DIR: credentials and key, readable by this user only. Made
# once per directory and kept: ZooKeeper's data outlives a down, and its
# znodes belong to the credentials that made them.
make_secrets() {
  local s=$1/secrets
  (umask 077
   mkdir -p "$s"
   [ -s "$s/zk-auth" ] ||
     echo "parley:$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$s/zk-auth"
   [ -s "$s/redis-auth" ] ||
     echo "parley:$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$s/redis-auth"
   [ -s "$s/cluster.key" ] || head -c 32 /dev/urandom >"$s/cluster.key"
   [ -s "$s/db-password" ] ||
     head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$s/db-password")
  chmod 700 "$s"
  chmod 600 "$s/zk-auth" "$s/redis-auth" "$s/cluster.key" "$s/db-password"
}

up() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -f "$dir/cluster.env" ] && die "$dir already holds a cluster (cluster.sh down $dir first)"
  # Whatever stops the start half-way (die, a failed command), undo it all.
  # The directory goes into the trap now: dir is local, and gone by the time
  # the trap runs.
  trap 'rc=$?; if [ $rc -ne 0 ]; then echo "cluster.sh: start failed; stopping what started" >&2; down '"$(printf %q "$dir")"' >/dev/null 2>&1 || true; fi' EXIT
  make_secrets "$dir"
  make_ca "$dir"
  server_cert "$dir" mariadb
  # parleyctl's: calls admin methods only (docs/operations.md "Admin").
  node_cert "$dir" admin admin
  server_cert "$dir" gateway-tls
  local client_tls=${PARLEY_CLUSTER_TLS:-1}
  [ "$client_tls" = 0 ] || [ "$client_tls" = 1 ] || die "PARLEY_CLUSTER_TLS: expected 0 or 1"
  local zk_nodes=${PARLEY_ZK_NODES:-1}
  local redis_port mariadb_port nginx_port zk=""
  ports_file=$dir/ports.env
  if [ "$zk_nodes" -eq 1 ]; then
    local p; p=$(port ZK1_PORT)
    "$servers" zookeeper "$dir/zk1" "$p"
    zk="127.0.0.1:$p"
  else
    local ens="" ports=() i
    for ((i = 1; i <= zk_nodes; i++)); do
      ports+=("$(port ZK${i}_PORT):$(port ZK${i}_PEER_PORT):$(port ZK${i}_ELECTION_PORT)")
      IFS=: read -r c pe el <<<"${ports[$((i - 1))]}"
      ens="$ens${ens:+,}$i:$pe:$el"
      zk="$zk${zk:+,}127.0.0.1:$c"
    done
    for ((i = 1; i <= zk_nodes; i++)); do
      IFS=: read -r c pe el <<<"${ports[$((i - 1))]}"
      "$servers" zookeeper "$dir/zk$i" "$c" "$i" "$pe" "$el" "$ens"
    done
  fi
  # Each port picked just before its server starts (see nginx below).
  redis_port=$(port REDIS_PORT)
  "$servers" redis "$dir/redis" "$redis_port" "@$dir/secrets/redis-auth"
  mariadb_port=$(port MARIADB_PORT)
  MARIADB_BUFFER_POOL=${MARIADB_BUFFER_POOL:-256M} MARIADB_REDO_LOG=${MARIADB_REDO_LOG:-256M} \
    "$servers" mariadb "$dir/mariadb" "$mariadb_port" "$dir/pki/mariadb.pem" \
    "$dir/pki/mariadb.key" "$dir/pki/ca.pem" "$dir/secrets/db-password"
  cat >"$dir/cluster.env" <<ENV
ZK=$zk
ZK_NODES=$zk_nodes
REDIS=127.0.0.1:$redis_port
DB=mariadb://parley@127.0.0.1:$mariadb_port/parley
DB_CA=$dir/pki/ca.pem
DB_PASSWORD_FILE=$dir/secrets/db-password
CLIENT_TLS=$client_tls
CA=$dir/pki/ca.pem
ZK_AUTH_FILE=$dir/secrets/zk-auth
REDIS_AUTH_FILE=$dir/secrets/redis-auth
CLUSTER_KEY_FILE=$dir/secrets/cluster.key
ENV
  load_env "$dir"
  local svc n
  for svc in user social message; do
    for n in 1 2; do
      node_cert "$dir" "$svc$n" "$svc"
      start_parleyd "$dir" "$svc$n" $(node_args "$svc") $(tls_args "$dir" "$svc$n")
    done
  done
  local gw_ports=() g
  for g in 1 2; do
    local gp; gp=$(port GATEWAY${g}_PORT)
    node_cert "$dir" "gateway$g" gateway
    start_parleyd "$dir" "gateway$g" --role gateway --zk "$ZK" --redis "$REDIS" --port "$gp" \
      --gateway-id "$g" $GATEWAY_LIMITS $(secret_args) $(tls_args "$dir" "gateway$g") \
      $(gateway_tls_args "$dir")
    gw_ports+=("127.0.0.1:$gp")
    echo "GATEWAY${g}_PORT=$gp" >>"$dir/cluster.env"
  done
  # nginx's port is picked last and tried again if taken: a port free when
  # picked can be taken meanwhile as the source port of an outgoing
  # connection (every server above makes some).
  local try
  for try in 1 2 3; do
    nginx_port=$(port NGINX_PORT)
    "$servers" nginx "$dir/nginx" "$nginx_port" "${gw_ports[@]}" 2>"$dir/nginx.err" && break
    # Only a port picked now may be given up for another.
    grep -q "Address already in use" "$dir/nginx.err" && [ "$try" -lt 3 ] &&
      [ "$(grep -c '^NGINX_PORT=' "$ports_file")" -eq "$try" ] ||
      { cat "$dir/nginx.err" >&2; die "nginx did not start"; }
    sed -i '/^NGINX_PORT=/d' "$ports_file"
  done
  rm -f "$dir/nginx.err"
  echo "NGINX_PORT=$nginx_port" >>"$dir/cluster.env"
  trap - EXIT
  local me=$0
  [ "$me" = "$here/cluster.sh" ] || me="bash $here/cluster.sh"
  if [ "$client_tls" = 1 ]; then
    echo "Parley cluster is up in $dir (TLS on the client port)." \
      "Connect with: $root/build/parley --tls --ca $dir/pki/ca.pem --port $nginx_port"
  else
    echo "Parley cluster is up in $dir (plain TCP on the client port)." \
      "Connect with: $root/build/parley --port $nginx_port"
  fi
  echo "Nodes:  $root/build/parleyctl --zk $ZK --zk-auth-file $ZK_AUTH_FILE nodes"
  if grep -q '^ADMIN_PORT_' "$dir/cluster.env"; then
    echo "Admin ports (http://127.0.0.1:PORT/metrics, /healthz, /readyz):" \
      $(sed -n 's/^ADMIN_PORT_\(.*\)=\(.*\)/\1=\2/p' "$dir/cluster.env")
  fi
  echo "Status: $me status $dir    Logs: $dir/log/    Stop: $me down $dir"
  echo "Users:  $root/build/parleyctl --zk $ZK --zk-auth-file $ZK_AUTH_FILE" \
    "--cluster-ca $dir/pki/ca.pem --admin-cert $dir/pki/admin.pem" \
    "--admin-key $dir/pki/admin.key users find ''"
}

# alive PID: the process runs (a zombie does not count). Builtins only: a
# stop polls this, and forks cost on a loaded machine.
alive() {
  local a b st
  [ -n "$1" ] && read -r a b st _ <"/proc/$1/stat" 2>/dev/null && [ "$st" != Z ]
}

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

pid_of() { local p=""; read -r p <"$1" 2>/dev/null || true; echo "$p"; }

# stop_pids DEADLINE_MS NAME...: SIGTERM to each parleyd NAME of DIR (in $dir),
# all at once; waits until they are gone or the deadline passes, then
# SIGKILL. Adds what it stopped to `stopped`.
stop_pids() {
  local deadline=$1 name pid left
  shift
  local names=()
  for name in "$@"; do
    [ -f "$dir/run/$name.pid" ] || continue
    pid=$(pid_of "$dir/run/$name.pid")
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      names+=("$name")
    else
      rm -f "$dir/run/$name.pid"
    fi
  done
  while :; do
    left=0
    for name in "${names[@]}"; do
      alive "$(pid_of "$dir/run/$name.pid")" && left=1
    done
    [ "$left" = 0 ] || [ "$(now_ms)" -ge "$deadline" ] && break
    sleep 0.02
  done
  for name in "${names[@]}"; do
    pid=$(pid_of "$dir/run/$name.pid")
    if alive "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      stopped+=("$name (killed: no clean exit in time)")
    else
      stopped+=("$name")
    fi
    rm -f "$dir/run/$name.pid"
  done
}

# The gateways go first, with a SIGTERM: each tells its clients (bye) and
# closes them, so they reconnect to what remains or wait. Then nginx (no
# client is left on it to wait for), the services, and the servers, those
# in parallel. Everything is gone within 5 s; what had to be killed is said.
down() {
  dir=$1
  local f t0 name
  [ -d "$dir" ] || return 0
  t0=$(now_ms)
  stopped=()
  local gateways=() services=()
  if [ -d "$dir/run" ]; then
    for f in "$dir"/run/*.pid; do
      [ -f "$f" ] || continue
      name=$(basename "$f" .pid)
      case "$name" in gateway*) gateways+=("$name") ;; *) services+=("$name") ;; esac
    done
  fi
  [ ${#gateways[@]} -eq 0 ] || stop_pids $((t0 + 2000)) "${gateways[@]}"
  if [ -f "$dir/nginx/nginx.pid" ]; then
    alive "$(pid_of "$dir/nginx/nginx.pid")" && stopped+=(nginx)
    nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$dir/nginx/logs/error.log" -s stop \
      2>/dev/null || true
  fi
  [ ${#services[@]} -eq 0 ] || stop_pids $((t0 + 3500)) "${services[@]}"
  local pids=() dirs=()
  for f in "$dir/nginx" "$dir"/zk* "$dir/redis" "$dir/mariadb"; do
    [ -d "$f" ] || continue
    ls "$f"/*.pid >/dev/null 2>&1 || continue
    "$servers" stop "$f" &
    pids+=($!)
    dirs+=("$(basename "$f")")
  done
  local i
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || true
    stopped+=("${dirs[$i]}")
  done
  rm -f "$dir/cluster.env"
  if [ ${#stopped[@]} -gt 0 ]; then
    local IFS=,
    echo "Stopped in $dir in $(( ($(now_ms) - t0) / 1000 )).$(( ($(now_ms) - t0) % 1000 / 100 )) s: ${stopped[*]}" | sed 's/,/, /g'
  else
    echo "Nothing was running in $dir"
  fi
}

# One line per process: the servers, nginx, every parleyd.
status() {
  local dir=$1 f name pid
  if [ -f "$dir/cluster.env" ]; then
    load_env "$dir"
  elif [ -f "$dir/ports.env" ]; then
    # Down: the kept ports still say where everything would be.
    . "$dir/ports.env"
    ZK=127.0.0.1:${ZK1_PORT:-?}
    REDIS=127.0.0.1:${REDIS_PORT:-?}
    DB=@127.0.0.1:${MARIADB_PORT:-?}/parley
    echo "The cluster in $dir is down (cluster.sh up $dir starts it on these ports)."
  else
    die "no cluster in $dir"
  fi
  show() { # NAME PIDFILE WHAT
    local st="stopped"
    if [ -f "$2" ]; then
      pid=$(cat "$2" 2>/dev/null || true)
      [ -n "$pid" ] && alive "$pid" && st="running (pid $pid)"
    fi
    printf '%-10s %-22s %s\n' "$1" "$st" "$3"
  }
  local i=1 z
  IFS=, read -ra zks <<<"$ZK"
  for z in "${zks[@]}"; do
    show "zk$i" "$dir/zk$i/zookeeper.pid" "zookeeper $z"
    i=$((i + 1))
  done
  show redis "$dir/redis/redis.pid" "redis $REDIS"
  show mariadb "$dir/mariadb/mysqld.pid" "mariadb ${DB#*@}"
  show nginx "$dir/nginx/nginx.pid" "clients: 127.0.0.1:$NGINX_PORT$([ "${CLIENT_TLS:-0}" = 1 ] && echo ' (TLS)')"
  for f in "$dir"/log/*.log; do
    [ -f "$f" ] || continue
    name=$(basename "$f" .log)
    f=$dir/run/$name.pid
    local what="" gp
    case "$name" in
      gateway*)
        gp=$(sed -n "s/^GATEWAY${name#gateway}_PORT=//p" "$dir/ports.env")
        what="gateway${gp:+ 127.0.0.1:$gp}" ;;
      *) what="${name%%[0-9]*} service" ;;
    esac
    show "$name" "$f" "${what:-parleyd}"
  done
}

cmd=${1:-}
case "$cmd" in
  up) [ $# -eq 2 ] || die "usage: cluster.sh up DIR"; up "$2" ;;
  down) [ $# -eq 2 ] || die "usage: cluster.sh down DIR"; down "$2" ;;
  status) [ $# -eq 2 ] || die "usage: cluster.sh status DIR"; status "$2" ;;
  start)
    [ $# -ge 4 ] || die "usage: cluster.sh start NAME ROLE DIR [parleyd args]"
    name=$2 role=$3 dir=$4; shift 4
    load_env "$dir"
    ports_file=$dir/ports.env
    make_ca "$dir"
    node_cert "$dir" "$name" "$role"
    server_cert "$dir" gateway-tls
    if [ "$role" = gateway ]; then
      start_parleyd "$dir" "$name" --role gateway --zk "$ZK" --redis "$REDIS" $GATEWAY_LIMITS \
        $(secret_args) $(tls_args "$dir" "$name") $(gateway_tls_args "$dir") "$@"
    else
      start_parleyd "$dir" "$name" $(node_args "$role") $(tls_args "$dir" "$name") "$@"
    fi ;;
  kill)
    [ $# -ge 3 ] || die "usage: cluster.sh kill NAME DIR [SIGNAL]"
    kill -"${4:-KILL}" "$(cat "$3/run/$2.pid")" ;;
  *) die "usage: cluster.sh up|down|status|start|kill ... (see the top of this file)" ;;
esac
