#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on 127.0.0.1 for the test suite and prints its DSN.
#
# Idempotent: installs Debian's postgresql when the server binaries are missing (as root),
# creates the cluster once, starts it if it is not running, and always prints the DSN last.
# The cluster trusts connections from 127.0.0.1 only: it holds test data, never real calls.
#   VOICEGW_PG_PORT (default 55432)   VOICEGW_PG_DIR (default /tmp/voicegw-pg-$PORT)
set -euo pipefail
PORT="${VOICEGW_PG_PORT:-55432}"
DIR="${VOICEGW_PG_DIR:-/tmp/voicegw-pg-$PORT}"
LOG="$DIR.log"

find_bin() {
  local b
  b="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$b" ] && [ -x "$b/postgres" ]; then echo "$b"; fi
}

BIN="$(find_bin)"
if [ -z "$BIN" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "postgres.sh: PostgreSQL is not installed and this is not root: apt-get install postgresql" >&2
    exit 1
  fi
  echo "postgres.sh: installing postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  BIN="$(find_bin)"
  [ -n "$BIN" ] || { echo "postgres.sh: postgresql installed but no server binary found" >&2; exit 1; }
fi

# The server refuses to run as root: use the postgres account (created by the Debian package).
as_db() {
  if [ "$(id -u)" = 0 ]; then
    if command -v runuser >/dev/null 2>&1; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
  else
    "$@"
  fi
}

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$DIR"
  chown postgres: "$DIR"
  chmod 700 "$DIR"
  touch "$LOG"
  chown postgres: "$LOG"
else
  mkdir -p "$DIR"
  chmod 700 "$DIR"
fi

if [ ! -f "$DIR/PG_VERSION" ]; then
  as_db "$BIN/initdb" -D "$DIR" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $PORT"
    echo "unix_socket_directories = '$DIR'"
    echo "max_connections = 200"
    echo "fsync = on"
  } | as_db tee -a "$DIR/postgresql.conf" >/dev/null
fi

if ! as_db "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
  as_db "$BIN/pg_ctl" -D "$DIR" -l "$LOG" -w -t 60 start >/dev/null || {
    echo "postgres.sh: the server did not start; log follows" >&2
    tail -n 30 "$LOG" >&2 || true
    exit 1
  }
fi

for _ in $(seq 1 50); do
  if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    echo "postgresql://postgres@127.0.0.1:$PORT/postgres"
    exit 0
  fi
  sleep 0.2
done
echo "postgres.sh: the server is not accepting connections on 127.0.0.1:$PORT" >&2
exit 1
