#!/usr/bin/env bash
# servers.sh: start and stop the real servers Parley's cluster mode uses
# (ZooKeeper, Redis, MariaDB, nginx) on loopback, each with all its state
# under a directory of its own. Used by the tests and by scripts/cluster.sh.
#
#   servers.sh redis     DIR PORT [USER:PASS]
#        with USER:PASS: the default user is off (an unauthenticated client
#        can run nothing) and USER may run only the commands Parley's bus
#        sends, on keys and channels named parley:*. Kept in DIR/redis-acl.conf
#        (0600), so a later start in DIR without USER:PASS keeps it.
#        @FILE reads USER:PASS from FILE (keeps it off command lines).
#   servers.sh zookeeper DIR CLIENT_PORT [ID PEER_PORT ELECTION_PORT ENSEMBLE]
#        ENSEMBLE = "1:PEER:ELECT,2:PEER:ELECT,3:PEER:ELECT" (omit for standalone)
#   servers.sh mariadb   DIR PORT [CERT KEY CA PASSWORD_FILE]
#                                         (database "parley", user root over the socket,
#                                          user parley/parley over TCP; the redo log is
#                                          written at each commit and flushed to disk once
#                                          a second: a crash of any process loses nothing
#                                          committed, a power loss up to a second;
#                                          MARIADB_BUFFER_POOL, MARIADB_REDO_LOG size
#                                          InnoDB, default 32M and 8M; MARIADB_ARGS adds
#                                          flags, e.g. --performance-schema=ON to see
#                                          where statements spend their time)
#        With CERT KEY CA PASSWORD_FILE (PEM files; the password on the file's
#        first line): TLS 1.2/1.3 only and required on every TCP connection,
#        and user parley@127.0.0.1 with that password and TLS required may
#        use database parley only, with the rights Parley needs (its data
#        plus the schema changes of its migrations: see docs/security.md) and
#        no other; no parley@localhost and no parley_% databases (those are
#        for tests, which start without these arguments).
#   servers.sh nginx     DIR PORT BACKEND... (BACKEND = host:port, stream balancing)
#   servers.sh stop      DIR               (stops whatever was started in DIR)
#   servers.sh wait-port PORT [SECONDS]
#
# Each start waits until the server answers and writes DIR/<name>.pid. It
# prints nothing on success; on failure it prints the server's log tail and
# exits non-zero.
set -euo pipefail

die() { echo "servers.sh: $*" >&2; exit 1; }

wait_port() { # port seconds
  local port=$1 secs=${2:-20} i
  for ((i = 0; i < secs * 20; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

wait_gone() { # pidfile seconds
  local pidfile=$1 secs=${2:-20} pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile" 2>/dev/null || true)
  [ -n "$pid" ] || { rm -f "$pidfile"; return 0; }
  for ((i = 0; i < secs * 20; i++)); do
    # Zombies count as gone: our children may be reaped late.
    if ! kill -0 "$pid" 2>/dev/null || grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
      rm -f "$pidfile"; return 0
    fi
    sleep 0.05
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

# The ACL of Parley's Redis user: the commands src/bus/redis.c sends (and
# its scripts call), on its own keys and channels only.
REDIS_PARLEY_CMDS="+ping +info +auth +hello +get +set +mget +del +hset +hdel +hgetall +eval \
+publish +subscribe +unsubscribe +pubsub|channels"

start_redis() {
  local dir=$1 port=$2 auth=${3:-} conf=()
  mkdir -p "$dir"
  if [ "${auth:0:1}" = @ ]; then
    auth=$(head -n1 "${auth:1}") || die "redis: cannot read ${auth:1}"
  fi
  if [ -n "$auth" ]; then
    local user=${auth%%:*} pass=${auth#*:}
    [ -n "$user" ] && [ "$user" != "$auth" ] && [ -n "$pass" ] || die "redis: expected USER:PASS"
    (umask 077
     {
       echo "user default off resetpass nopass -@all"
       echo "user $user on resetpass >$pass resetkeys ~parley:* resetchannels &parley:* -@all" \
         $REDIS_PARLEY_CMDS
     } >"$dir/redis-acl.conf")
  fi
  [ -f "$dir/redis-acl.conf" ] && conf=("$dir/redis-acl.conf")
  redis-server "${conf[@]}" --port "$port" --bind 127.0.0.1 --daemonize yes --pidfile "$dir/redis.pid" \
    --dir "$dir" --save '' --appendonly no --logfile "$dir/redis.log" >/dev/null
  wait_port "$port" 10 || { tail -20 "$dir/redis.log" >&2; die "redis did not start on $port"; }
  # The pid file appears just after the port opens.
  for _ in $(seq 50); do [ -s "$dir/redis.pid" ] && break; sleep 0.05; done
}

start_zookeeper() {
  local dir=$1 port=$2 id=${3:-} peer=${4:-} elect=${5:-} ensemble=${6:-}
  mkdir -p "$dir/data"
  {
    echo "tickTime=500"
    echo "initLimit=10"
    echo "syncLimit=5"
    echo "dataDir=$dir/data"
    echo "clientPort=$port"
    echo "clientPortAddress=127.0.0.1"
    echo "admin.enableServer=false"
    echo "4lw.commands.whitelist=ruok,srvr,stat,mntr"
    echo "maxSessionTimeout=60000"
    if [ -n "$ensemble" ]; then
      echo "$id" >"$dir/data/myid"
      IFS=, read -ra members <<<"$ensemble"
      for m in "${members[@]}"; do
        IFS=: read -r mid mpeer melect <<<"$m"
        echo "server.$mid=127.0.0.1:$mpeer:$melect"
      done
    fi
  } >"$dir/zoo.cfg"
  local cp=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-simple.jar
  for j in /usr/share/java/zookeeper-jute.jar /usr/share/java/netty*.jar \
           /usr/share/java/commons-cli.jar /usr/share/java/metrics-core.jar \
           /usr/share/java/snappy-java.jar; do
    [ -f "$j" ] && cp="$cp:$j"
  done
  setsid java -Xmx64m -Dzookeeper.jmx.log4j.disable=true -cp "$cp" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
    >>"$dir/zookeeper.log" 2>&1 </dev/null &
  echo $! >"$dir/zookeeper.pid"
  # Standalone answers at once; an ensemble member listens before it has a quorum,
  # which is what a starting member can offer.
  wait_port "$port" 30 || { tail -30 "$dir/zookeeper.log" >&2; die "zookeeper did not start on $port"; }
}

# What Parley's database user may do on its own database, and nothing more:
# its rows (SELECT, INSERT, UPDATE, DELETE) and what its migrations at start
# run (CREATE and ALTER TABLE, indexes, foreign keys, one trigger). No DROP,
# no FILE, PROCESS or SUPER, no other database, no GRANT OPTION.
MARIADB_PARLEY_RIGHTS="SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, REFERENCES, TRIGGER"

start_mariadb() {
  local dir=$1 port=$2 cert=${3:-} key=${4:-} ca=${5:-} pwfile=${6:-} tls=()
  mkdir -p "$dir"
  if [ -n "$cert" ]; then
    tls=(--ssl-cert="$cert" --ssl-key="$key" --ssl-ca="$ca" --tls-version=TLSv1.2,TLSv1.3
         --require-secure-transport=ON)
  fi
  if [ ! -d "$dir/data/mysql" ]; then
    # Once in a CI run (three MariaDBs starting side by side) the bootstrap
    # failed and a second try was not made; the cause is unknown, so its
    # ERROR lines are kept (install.log.1) and said, and it is tried again
    # on an empty directory.
    local try
    for try in 1 2; do
      mariadb-install-db --no-defaults --datadir="$dir/data" --user=root \
        --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve \
        >"$dir/install.log" 2>&1 && break
      grep -i "error" "$dir/install.log" | head -5 >&2
      [ "$try" = 1 ] || { tail -20 "$dir/install.log" >&2; die "mariadb-install-db failed"; }
      echo "servers.sh: mariadb-install-db failed in $dir; trying once more" >&2
      mv -f "$dir/install.log" "$dir/install.log.1"
      rm -rf "$dir/data"
      sleep 1
    done
  fi
  setsid mariadbd --no-defaults --user=root --datadir="$dir/data" --socket="$dir/mysqld.sock" \
    --port="$port" --bind-address=127.0.0.1 --pid-file="$dir/mysqld.pid" \
    --log-error="$dir/error.log" --innodb-buffer-pool-size="${MARIADB_BUFFER_POOL:-32M}" \
    --innodb-log-file-size="${MARIADB_REDO_LOG:-8M}" \
    --skip-name-resolve --max-connections=500 --innodb-flush-log-at-trx-commit=2 "${tls[@]}" \
    ${MARIADB_ARGS:-} \
    >/dev/null 2>&1 </dev/null &
  local i
  for ((i = 0; i < 600; i++)); do
    mariadb-admin --no-defaults -S "$dir/mysqld.sock" -uroot ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  mariadb-admin --no-defaults -S "$dir/mysqld.sock" -uroot ping >/dev/null 2>&1 ||
    { tail -20 "$dir/error.log" >&2; die "mariadb did not start on $port"; }
  if [ -n "$cert" ]; then
    local pw
    pw=$(head -n1 "$pwfile") || die "mariadb: cannot read $pwfile"
    # Goes into SQL text: letters, digits and a few marks only.
    [[ "$pw" =~ ^[A-Za-z0-9._-]{16,}$ ]] || die "mariadb: the password in $pwfile must be 16+ of [A-Za-z0-9._-]"
    mariadb --no-defaults -S "$dir/mysqld.sock" -uroot -e "
      CREATE DATABASE IF NOT EXISTS parley CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
      DROP USER IF EXISTS 'parley'@'localhost';
      CREATE USER IF NOT EXISTS 'parley'@'127.0.0.1' IDENTIFIED BY '$pw' REQUIRE SSL;
      ALTER USER 'parley'@'127.0.0.1' IDENTIFIED BY '$pw' REQUIRE SSL;
      REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'parley'@'127.0.0.1';
      GRANT $MARIADB_PARLEY_RIGHTS ON parley.* TO 'parley'@'127.0.0.1';" ||
      die "mariadb: cannot create the parley user"
    return 0
  fi
  mariadb --no-defaults -S "$dir/mysqld.sock" -uroot -e "
    CREATE DATABASE IF NOT EXISTS parley CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
    CREATE USER IF NOT EXISTS 'parley'@'127.0.0.1' IDENTIFIED BY 'parley';
    CREATE USER IF NOT EXISTS 'parley'@'localhost' IDENTIFIED BY 'parley';
    GRANT ALL ON parley.* TO 'parley'@'127.0.0.1';
    GRANT ALL ON parley.* TO 'parley'@'localhost';
    GRANT ALL ON \`parley\_%\`.* TO 'parley'@'127.0.0.1';
    GRANT ALL ON \`parley\_%\`.* TO 'parley'@'localhost';"
}

start_nginx() {
  local dir=$1 port=$2; shift 2
  [ $# -gt 0 ] || die "nginx needs at least one backend"
  mkdir -p "$dir/logs"
  local tmpl
  tmpl="$(cd "$(dirname "$0")/.." && pwd)/deploy/nginx-stream.conf.template"
  local servers=""
  for b in "$@"; do servers="$servers        server $b max_fails=2 fail_timeout=2s;\n"; done
  sed -e "s|@PIDFILE@|$dir/nginx.pid|" -e "s|@LISTEN@|127.0.0.1:$port|" \
      -e "s|@ERRORLOG@|$dir/logs/error.log|" -e "s|@ACCESSLOG@|$dir/logs/access.log|" \
      -e "s|@SERVERS@|$servers|" "$tmpl" >"$dir/nginx.conf"
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" ||
    { tail -20 "$dir/logs/error.log" >&2; die "nginx did not start"; }
  wait_port "$port" 10 || die "nginx does not listen on $port"
}

stop_all() {
  local dir=$1
  if [ -f "$dir/nginx.pid" ]; then
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" -s quit 2>/dev/null || true
    wait_gone "$dir/nginx.pid" 10
  fi
  if [ -f "$dir/redis.pid" ]; then
    kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    wait_gone "$dir/redis.pid" 10
  fi
  if [ -f "$dir/mysqld.pid" ]; then
    # A cold shutdown: the redo log is flushed (nothing committed is lost),
    # the buffer pool is not written back; the next start replays the log.
    # Writing back a bench's dirty pages took longer than a stop should.
    mariadb --no-defaults -S "$dir/mysqld.sock" -uroot -e "SET GLOBAL innodb_fast_shutdown = 2" \
      >/dev/null 2>&1 || true
    mariadb-admin --no-defaults -S "$dir/mysqld.sock" -uroot shutdown >/dev/null 2>&1 ||
      kill "$(cat "$dir/mysqld.pid")" 2>/dev/null || true
    wait_gone "$dir/mysqld.pid" 30
  fi
  if [ -f "$dir/zookeeper.pid" ]; then
    kill "$(cat "$dir/zookeeper.pid")" 2>/dev/null || true
    wait_gone "$dir/zookeeper.pid" 10
  fi
}

cmd=${1:-}; shift || true
case "$cmd" in
  redis) [ $# -eq 2 ] || [ $# -eq 3 ] || die "usage: redis DIR PORT [USER:PASS]"; start_redis "$@" ;;
  zookeeper) [ $# -eq 2 ] || [ $# -eq 6 ] || die "usage: zookeeper DIR PORT [ID PEER ELECT ENSEMBLE]"; start_zookeeper "$@" ;;
  mariadb) [ $# -eq 2 ] || [ $# -eq 6 ] || die "usage: mariadb DIR PORT [CERT KEY CA PASSWORD_FILE]"
    start_mariadb "$@" ;;
  nginx) [ $# -ge 3 ] || die "usage: nginx DIR PORT BACKEND..."; start_nginx "$@" ;;
  stop) [ $# -eq 1 ] || die "usage: stop DIR"; stop_all "$1" ;;
  wait-port) wait_port "$1" "${2:-20}" ;;
  *) die "usage: servers.sh redis|zookeeper|mariadb|nginx|stop|wait-port ..." ;;
esac
