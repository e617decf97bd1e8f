#!/usr/bin/env bash
# How fast a node that joins empty copies its shards from a peer (issue 16), against the limit
# in the same run: a sequential O_DIRECT read of the holder's data files (dd, 8 MiB blocks) and
# a local copy of them (cp, then sync).
# etcd and two nodes on loopback; n0 holds a synthetic table, n1 starts with an empty data
# directory; `cluster plan --shards S --replicas 2` gives n1 every shard, which it copies over
# ReadTableFile (blocks checked against their checksums, written, synced) before reporting them
# ready. Prints the copy's MB/s (from n1's "copied a shard from a peer" lines and from plan to
# all-ready) and dd's.
#
#   bash benches/run-peer-copy.sh DIR [ROWS=2000000] [DIM=64] [SHARDS=8]
set -eu
DIR=${1:?usage: run-peer-copy.sh DIR [ROWS] [DIM] [SHARDS]}
ROWS=${2:-2000000}
DIM=${3:-64}
SHARDS=${4:-8}
cd "$(dirname "$0")/.."
BIN=target/release/engram-store
rm -rf "$DIR" && mkdir -p "$DIR/holder" "$DIR/empty"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EP=$(port); PP=$(port); P0=$(port); P1=$(port)
ETCD=http://127.0.0.1:$EP
etcd --name t --data-dir "$DIR/etcd" --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
  --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
  --initial-cluster "t=http://127.0.0.1:$PP" --log-level error >"$DIR/etcd.log" 2>&1 &
PIDS=$!
trap 'kill $PIDS 2>/dev/null; wait 2>/dev/null' EXIT
$BIN synth --name t --rows "$ROWS" --dim "$DIM" --dtype f32 --data "$DIR/holder" >/dev/null
BYTES=$(du -cb "$DIR"/holder/t/v*/data-*.bin | tail -1 | cut -f1)
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(date +%s.%N)
for f in "$DIR"/holder/t/v*/data-*.bin; do dd if="$f" of=/dev/null bs=8M iflag=direct status=none; done
t1=$(date +%s.%N)
echo "data files: $BYTES bytes; dd O_DIRECT sequential read: $(python3 -c "print(f'{$BYTES/($t1-$t0)/1e6:.0f}')") MB/s"
mkdir -p "$DIR/cp"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(date +%s.%N)
cp "$DIR"/holder/t/v*/data-*.bin "$DIR/cp/" && sync
t1=$(date +%s.%N)
echo "cp of the data files + sync (the local copy's limit): $(python3 -c "print(f'{$BYTES/($t1-$t0)/1e6:.0f}')") MB/s"
rm -rf "$DIR/cp"
for n in 0 1; do
  data=$DIR/holder; [ $n = 1 ] && data=$DIR/empty
  p=$P0; [ $n = 1 ] && p=$P1
  RUST_LOG=info $BIN serve --data "$data" --listen 127.0.0.1:$p --ram-cache 64MiB --etcd "$ETCD" \
    --node-id n$n --advertise 127.0.0.1:$p --lease-ttl 3 >"$DIR/n$n.log" 2>&1 &
  PIDS="$PIDS $!"
done
for _ in $(seq 1 100); do
  [ "$($BIN cluster show --etcd "$ETCD" 2>/dev/null | grep -c 'node n[01]')" = 2 ] && break
  sleep 0.2
done
t0=$(date +%s.%N)
$BIN cluster plan --etcd "$ETCD" --table t --shards "$SHARDS" --replicas 2 --wait 0 >/dev/null
for _ in $(seq 1 600); do
  [ "$(grep -c 'copied a shard from a peer' "$DIR/n1.log")" = "$SHARDS" ] && break
  sleep 0.1
done
t1=$(date +%s.%N)
python3 - "$DIR/n1.log" "$BYTES" "$ROWS" "$t0" "$t1" <<'PY'
import re, sys
log, size, rows, t0, t1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
lines = [l for l in open(log) if "copied a shard from a peer" in l]
took = [int(re.search(r"took_ms=(\d+)", l).group(1)) for l in lines]
copied = sum(int(re.search(r"rows=(\d+)", l).group(1)) for l in lines)
print(f"n1 copied {len(lines)} shards, {copied} of {rows} rows, copies {sum(took)} ms in all: "
      f"{size * copied / rows / (sum(took) / 1e3) / 1e6:.0f} MB/s; plan to the last copy "
      f"{t1 - t0:.2f} s ({size * copied / rows / (t1 - t0) / 1e6:.0f} MB/s, warming included)")
PY
