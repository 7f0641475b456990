#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Make sure the backing services of Summit's integration tests answer locally:
#   PostgreSQL  127.0.0.1:5432  (database `test`, trust auth for local TCP)
#   Redis       127.0.0.1:6379
#   OCI registry 127.0.0.1:5000 (Debian's docker-registry package)
# Installs the Debian packages when missing and starts the daemons in the
# background (no systemd needed). Safe to run repeatedly.
#
# Env: SUMMIT_SKIP_POSTGRES=1 / SUMMIT_SKIP_REDIS=1 / SUMMIT_SKIP_REGISTRY=1
#      SUMMIT_LOG_DIR        default /var/log/summit
#      SUMMIT_SERVICES_DIR   default /var/lib/summit
#      SUMMIT_SERVICE_WAIT   seconds to wait for each service (default 30)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUMMIT_LOG_TAG=ensure-services
# shellcheck source=lib.sh
. "$HERE/lib.sh"

LOG_DIR="${SUMMIT_LOG_DIR:-/var/log/summit}"
STATE_DIR="${SUMMIT_SERVICES_DIR:-/var/lib/summit}"
WAIT="${SUMMIT_SERVICE_WAIT:-30}"

# wait_for DESCRIPTION COMMAND...: retry COMMAND once a second for $WAIT seconds.
wait_for() {
  local what="$1"; shift
  local i
  for ((i = 0; i < WAIT; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  summit_die "$what did not come up within ${WAIT}s"
}

# ---------------------------------------------------------------- PostgreSQL
pg_tcp_ok() { psql -w -h 127.0.0.1 -p 5432 -U postgres -d "${1:-postgres}" -tAc 'select 1' >/dev/null 2>&1; }
pg_admin() { summit_as_root runuser -u postgres -- psql -w -X -q -v ON_ERROR_STOP=1 "$@"; }

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    summit_apt_install postgresql postgresql-client
  fi
  local ver
  ver="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n1)"
  if [ -z "$ver" ] || [ ! -d "/etc/postgresql/$ver/main" ]; then
    ver="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n1)"
    [ -n "$ver" ] || summit_die "no PostgreSQL server version found under /usr/lib/postgresql"
    summit_log "creating PostgreSQL cluster $ver/main"
    summit_as_root pg_createcluster --port 5432 "$ver" main >/dev/null
  fi

  local conf="/etc/postgresql/$ver/main"
  local hba="$conf/pg_hba.conf"
  local changed=0
  # Trust local TCP (127.0.0.1 and ::1) and the unix socket, ahead of any other rule.
  if ! grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    summit_log "pg_hba: trusting 127.0.0.1/32, ::1/128 and local socket"
    summit_as_root sed -i '1i # added by summit ensure-services.sh\nlocal all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    changed=1
  fi
  # Port 5432 on loopback.
  if ! grep -Eq '^[[:space:]]*port[[:space:]]*=[[:space:]]*5432' "$conf/postgresql.conf"; then
    summit_as_root mkdir -p "$conf/conf.d"
    printf "port = 5432\nlisten_addresses = 'localhost'\n" | summit_as_root tee "$conf/conf.d/summit.conf" >/dev/null
    changed=1
  fi

  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    summit_log "starting PostgreSQL $ver/main"
    summit_as_root mkdir -p "$LOG_DIR"
    summit_as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
      || summit_die "pg_ctlcluster $ver main start failed (see /var/log/postgresql/)"
    wait_for "PostgreSQL on 127.0.0.1:5432" pg_isready -q -h 127.0.0.1 -p 5432
  elif [ "$changed" -eq 1 ]; then
    summit_as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
    sleep 1
  fi

  if ! pg_tcp_ok test; then
    if [ "$(pg_admin -tAc "select 1 from pg_database where datname = 'test'")" != "1" ]; then
      summit_log "creating database test"
      pg_admin -c 'create database test'
    fi
  fi
  pg_tcp_ok test || summit_die "psql -h 127.0.0.1 -U postgres -d test does not work without a password"
  summit_log "PostgreSQL ok on 127.0.0.1:5432 (database test, trust)"
}

# --------------------------------------------------------------------- Redis
redis_ok() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    summit_apt_install redis-server
  fi
  if redis_ok; then
    summit_log "Redis ok on 127.0.0.1:6379"
    return 0
  fi
  summit_log "starting redis-server on 127.0.0.1:6379"
  summit_as_root mkdir -p /var/lib/redis /var/log/redis
  summit_as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
    --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null \
    || summit_die "redis-server failed to start (see /var/log/redis/ci.log)"
  wait_for "Redis on 127.0.0.1:6379" redis_ok
  summit_log "Redis ok on 127.0.0.1:6379"
}

# ------------------------------------------------------------- OCI registry
# registry_running PIDFILE: the recorded docker-registry process is alive (not a zombie).
registry_running() {
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/status" ] || return 1
  grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" && return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q docker-registry
}
registry_ok() { curl -fsS -m 2 http://127.0.0.1:5000/v2/ >/dev/null 2>&1; }

ensure_registry() {
  command -v curl >/dev/null 2>&1 || summit_apt_install curl
  if ! command -v docker-registry >/dev/null 2>&1; then
    summit_apt_install docker-registry
  fi
  local dir="$STATE_DIR/registry"
  local cfg="$dir/config.yml"
  local pidfile="$dir/registry.pid"
  summit_as_root mkdir -p "$dir/data" "$LOG_DIR"
  local want
  want="$(cat <<EOF
# Written by scripts/ensure-services.sh; rewritten on every run.
version: 0.1
log:
  level: info
  fields:
    service: summit-registry
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
EOF
)"
  if [ ! -f "$cfg" ] || [ "$(cat "$cfg")" != "$want" ]; then
    printf '%s\n' "$want" | summit_as_root tee "$cfg" >/dev/null
    summit_log "wrote $cfg"
  fi

  if registry_ok; then
    summit_log "registry ok on 127.0.0.1:5000"
    return 0
  fi
  if registry_running "$pidfile"; then
    summit_log "registry process $(cat "$pidfile") is running; waiting for it"
  else
    if (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null; then
      summit_die "something else listens on 127.0.0.1:5000 but /v2/ does not answer 200"
    fi
    summit_log "starting docker-registry (log: $LOG_DIR/registry.log)"
    # The child records its own pid, then becomes docker-registry (exec keeps the pid).
    # shellcheck disable=SC2016  # $$, $1 and $@ belong to the inner sh
    setsid nohup sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$pidfile" \
      docker-registry serve "$cfg" >>"$LOG_DIR/registry.log" 2>&1 </dev/null &
  fi
  local i
  for ((i = 0; i < WAIT * 5; i++)); do
    if registry_ok; then
      summit_log "registry ok on 127.0.0.1:5000"
      return 0
    fi
    if ((i > 1)) && ! registry_running "$pidfile"; then
      tail -n 15 "$LOG_DIR/registry.log" >&2 || true
      summit_die "docker-registry exited; see $LOG_DIR/registry.log"
    fi
    sleep 0.2
  done
  summit_die "registry on 127.0.0.1:5000 did not come up within ${WAIT}s"
}

if [ "${SUMMIT_SKIP_POSTGRES:-0}" = 1 ]; then summit_log "skipping PostgreSQL"; else ensure_postgres; fi
if [ "${SUMMIT_SKIP_REDIS:-0}" = 1 ]; then summit_log "skipping Redis"; else ensure_redis; fi
if [ "${SUMMIT_SKIP_REGISTRY:-0}" = 1 ]; then summit_log "skipping registry"; else ensure_registry; fi
