#!/usr/bin/env bash
# A team MLflow tracking server: runs and the model registry in PostgreSQL, artifacts (models,
# reports, figures) stored by the server itself and proxied to clients (--serve-artifacts), so
# clients need no access to the artifact folder or a cloud bucket.
#
#   make mlflow-server                        # or: bash scripts/mlflow_server.sh
#   .venv/bin/kedro run --env server          # conf/server/mlflow.yml points runs at it
#
# First start: creates a PostgreSQL cluster in $SERVER_DIR/postgres (initdb; PostgreSQL listens
# on 127.0.0.1 only, TCP only, no Unix socket) with a database `mlflow`. Later starts reuse it.
# Runs in the foreground; Ctrl-C (or SIGTERM) stops MLflow and then PostgreSQL.
#
# Settings (environment variables):
#   SERVER_DIR    where the database cluster, artifacts and logs live   (default: .mlflow-server)
#   MLFLOW_HOST   address MLflow listens on: 0.0.0.0 to serve a team    (default: 127.0.0.1)
#   MLFLOW_PORT   MLflow's port                                         (default: 5000)
#   PG_PORT       PostgreSQL's port on 127.0.0.1                        (default: 5433)
#   PG_BIN        folder of initdb / pg_ctl        (default: newest /usr/lib/postgresql/*/bin)
#   MLFLOW        the mlflow command                                    (default: .venv/bin/mlflow)
#   MLFLOW_WORKERS  server worker processes                             (default: 1)
# The database user `mlflow` is trusted on 127.0.0.1 (nobody else can reach PostgreSQL); MLflow
# itself has no login by default: put it behind your lab's proxy, or see `mlflow server --help`
# for --app-name basic-auth, before you listen on anything but 127.0.0.1.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SERVER_DIR="${SERVER_DIR:-$ROOT/.mlflow-server}"
MLFLOW_HOST="${MLFLOW_HOST:-127.0.0.1}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
PG_PORT="${PG_PORT:-5433}"
MLFLOW="${MLFLOW:-$ROOT/.venv/bin/mlflow}"
MLFLOW_WORKERS="${MLFLOW_WORKERS:-1}"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"

die() { echo "mlflow_server.sh: $*" >&2; exit 1; }

[[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] ||
  die "PostgreSQL server binaries not found (PG_BIN=${PG_BIN:-unset}); on Debian/Ubuntu: apt-get install postgresql"
[[ -x "$MLFLOW" ]] || command -v "$MLFLOW" >/dev/null ||
  die "mlflow not found at $MLFLOW; run 'make install' or set MLFLOW"
"${MLFLOW%mlflow}python" -c "import psycopg" 2>/dev/null ||
  python3 -c "import psycopg" 2>/dev/null ||
  echo "mlflow_server.sh: warning: psycopg not importable; pip install -e '.[team]'" >&2

mkdir -p "$SERVER_DIR"
SERVER_DIR="$(cd "$SERVER_DIR" && pwd)"
PGDATA="$SERVER_DIR/postgres"
ARTIFACTS="$SERVER_DIR/artifacts"
mkdir -p "$ARTIFACTS"

# PostgreSQL refuses to run as root: as root, its files belong to (and it runs as) `postgres`.
if [[ "$(id -u)" == 0 ]]; then
  PG_USER="${PG_USER:-postgres}"
  id "$PG_USER" >/dev/null 2>&1 || die "running as root, but there is no '$PG_USER' user to run PostgreSQL as (set PG_USER)"
  # runuser lives in /usr/sbin, which a minimal PATH (CI, cron) may not hold; su as a fallback
  RUNUSER="$(command -v runuser || ls /usr/sbin/runuser /sbin/runuser 2>/dev/null | head -n 1 || true)"
  if [[ -n "$RUNUSER" ]]; then
    as_pg() { "$RUNUSER" -u "$PG_USER" -- "$@"; }
  else
    as_pg() { su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")"; }
  fi
  mkdir -p "$PGDATA"
  chown "$PG_USER" "$PGDATA"
  chmod 700 "$PGDATA"
  as_pg test -w "$PGDATA" ||
    die "user $PG_USER cannot reach $PGDATA (a parent folder is private); set SERVER_DIR to a folder it can enter"
else
  as_pg() { "$@"; }
fi

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  echo "Creating the PostgreSQL cluster in $PGDATA"
  as_pg "$PG_BIN/initdb" -D "$PGDATA" --username=mlflow --auth=trust --encoding=UTF8 \
    --locale=C >"$SERVER_DIR/initdb.log" 2>&1 || { cat "$SERVER_DIR/initdb.log" >&2; die "initdb failed"; }
  cat >>"$PGDATA/postgresql.conf" <<EOF
# written by scripts/mlflow_server.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
EOF
fi

PG_LOG="$SERVER_DIR/postgres.log"
touch "$PG_LOG" && { [[ "$(id -u)" != 0 ]] || chown "$PG_USER" "$PG_LOG"; }
stop_postgres() {
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
}
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -o "-p $PG_PORT" -w -t 60 start >/dev/null ||
  { tail -n 20 "$PG_LOG" >&2; die "PostgreSQL did not start (log: $PG_LOG)"; }

MLFLOW_PID=""
cleanup() {
  trap - EXIT INT TERM
  if [[ -n "$MLFLOW_PID" ]] && kill -0 "$MLFLOW_PID" 2>/dev/null; then
    kill -TERM "$MLFLOW_PID" 2>/dev/null || true
    wait "$MLFLOW_PID" 2>/dev/null || true
  fi
  stop_postgres
  echo "MLflow and PostgreSQL stopped"
}
trap cleanup EXIT INT TERM

"$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U mlflow -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = 'mlflow'" | grep -q 1 ||
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U mlflow mlflow

echo "PostgreSQL on 127.0.0.1:$PG_PORT (data: $PGDATA); MLflow on http://$MLFLOW_HOST:$MLFLOW_PORT (artifacts: $ARTIFACTS)"
"$MLFLOW" server \
  --backend-store-uri "postgresql+psycopg://mlflow@127.0.0.1:$PG_PORT/mlflow" \
  --artifacts-destination "$ARTIFACTS" --serve-artifacts \
  --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS" &
MLFLOW_PID=$!
wait "$MLFLOW_PID"
