# Background servers for scripts (sourced by screenshots.sh): each one in its own process
# group, so stopping it stops what it started too (`kedro viz run` serves from a child process;
# killing only the parent left that child holding the port, and the next run photographed it).
#
#   source scripts/servers.sh
#   port_free 4141 || die ...           # before starting: a stale server is an error
#   start_group LOGFILE cmd args...     # appends the group id to SERVER_GROUPS
#   stop_groups 4141 5055               # TERM each group, KILL what is left after 15 s, then
#                                       # wait for the ports to be free; status 1 if one is not

SERVER_GROUPS=()

port_free() {  # port: true when nothing accepts connections on 127.0.0.1:port
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start_group() {  # logfile, command...: the command leads a new process group (pgid = its pid)
  local log="$1"
  shift
  setsid "$@" >"$log" 2>&1 </dev/null &
  SERVER_GROUPS+=("$!")
}

group_alive() {  # pgid
  kill -0 -- "-$1" 2>/dev/null
}

stop_groups() {  # ports...: stop every started group, then wait until each port is free
  local pgid port i status=0
  for pgid in "${SERVER_GROUPS[@]}"; do kill -TERM -- "-$pgid" 2>/dev/null || true; done
  for pgid in "${SERVER_GROUPS[@]}"; do
    for i in $(seq 1 30); do group_alive "$pgid" || break; sleep 0.5; done
    if group_alive "$pgid"; then kill -KILL -- "-$pgid" 2>/dev/null || true; fi
    wait "$pgid" 2>/dev/null || true
  done
  SERVER_GROUPS=()
  for port in "$@"; do
    for i in $(seq 1 "${PORT_WAIT_TRIES:-40}"); do port_free "$port" && break; sleep 0.5; done
    if ! port_free "$port"; then
      echo "servers.sh: port $port is still in use after stopping the servers" >&2
      status=1
    fi
  done
  return "$status"
}
