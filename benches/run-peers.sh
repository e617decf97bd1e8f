#!/usr/bin/env bash
# engram-store side by side with Redis: `bash benches/run-peers.sh [ARGS...]`, ARGS as for
# `engram-bench peers` (the script passes --redis itself).
#
# Installs Debian's redis-server if it is missing (apt-get; needs root), starts a Redis of its
# own on 127.0.0.1 (no persistence, its own port and directory), builds and runs
# `engram-bench peers --redis 127.0.0.1:$PORT ARGS`, and stops Redis afterwards, on failure too.
#
# Environment: PEERS_PROFILE (cargo profile, default release; CI uses dev), PEERS_REDIS_PORT
# (default 6390), CARGO_TARGET_DIR (honoured).
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${PEERS_PROFILE:-release}"
port="${PEERS_REDIS_PORT:-6390}"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
# Debian's package may start a service of its own on 6379; ours is separate, on $port.

echo "== cargo build --profile $profile -p engram-store -p engram-store-bench"
cargo build --profile "$profile" -p engram-store -p engram-store-bench
case "$profile" in
  dev) dir=debug ;;
  *) dir="$profile" ;;
esac
bin="${CARGO_TARGET_DIR:-target}/$dir"

work="$(mktemp -d -t engram-peers-redis.XXXXXX)"
pid=""
stop_redis() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop_redis EXIT
trap 'exit 130' INT TERM

cat >"$work/redis.conf" <<EOF
bind 127.0.0.1
port $port
dir $work
save ""
appendonly no
daemonize no
protected-mode yes
databases 1
logfile $work/redis.log
EOF

if redis-cli -p "$port" ping >/dev/null 2>&1; then
  echo "something already answers on 127.0.0.1:$port; set PEERS_REDIS_PORT" >&2
  exit 1
fi
redis-server "$work/redis.conf" &
pid=$!
for _ in $(seq 100); do
  if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "redis-server exited:" >&2
    cat "$work/redis.log" >&2 || true
    exit 1
  fi
  sleep 0.1
done
redis-cli -p "$port" ping | grep -q PONG
echo "== redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$port (pid $pid)"

# The engram-store binary built above, unless the arguments name one.
engram_bin=(--engram-bin "$bin/engram-store")
for a in "$@"; do
  case "$a" in --engram-bin|--engram-bin=*) engram_bin=() ;; esac
done
"$bin/engram-bench" peers --redis "127.0.0.1:$port" "${engram_bin[@]}" "$@"
