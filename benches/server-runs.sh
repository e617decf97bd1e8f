# Sourced by the benches/run-*.sh scripts that start a fresh engram-store for each run:
# `start_server LOG ARGS...` starts `target/release/engram-store serve ARGS...` in the background
# with its stderr in LOG and waits until it says it is serving (at most 10 s); `stop_server`
# sends it SIGTERM and waits for it to exit.

start_server() {
  local log=$1
  shift
  target/release/engram-store serve "$@" 2>"$log" &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    grep -q "serving" "$log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "engram-store did not say it was serving within 10 s; its log: $log" >&2
}

stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
}
