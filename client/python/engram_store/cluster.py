"""The cluster client: rows from a cluster of engram-store nodes found through etcd.

::

    from engram_store import ClusterClient
    with ClusterClient(["http://10.0.0.5:2379"]) as c:
        rows = c.lookup("big", ids)                       # as Client.lookup
        x = c.lookup_ngrams("v41", 14, token_ids)         # hashed here, routed by row
        c.prefetch("big", ids)

It follows what the nodes and ``engram-store cluster plan`` keep in etcd (under
``/engram-store/``: the shard map, a record per live node, each Engram group's layout and
compression map), re-reading it in a background thread (etcd's JSON gateway, ``/v3/kv/range``:
no etcd package needed). Each batch is split by shard; the parts go in parallel to a ready
replica each (the less loaded of two random choices), a part that has not answered by the p95 of
recent parts is sent to a second replica too (hedging), a replica that fails with UNAVAILABLE or
a deadline is skipped for a while and the next one asked, and the rows are put back in request
order. Every part carries the map epoch (``engram-epoch``); a node that does not serve the shard
answers FAILED_PRECONDITION, and the client re-reads the map and re-splits what is left. If etcd
is unreachable the client goes on with the last map it read. ``lookup_ngrams`` hashes the token
ids here with ``engram_store.layout`` (bit for bit as the server does) and looks the rows up like
any batch.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from engram_store import layout as L
from engram_store.client import _ids, _ids_le, _response_rows, _sequences, grpc_channel
from engram_store.errors import EngramStoreError, NotFoundError, OutOfRangeError, from_rpc_error
from engram_store.v1 import store_pb2 as pb
from engram_store.v1 import store_pb2_grpc as pb_grpc

__all__ = ["ClusterClient"]

PREFIX = "/engram-store/"
EPOCH_HEADER = "engram-epoch"

#: Codes after which another replica is asked.
_FAILOVER = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
#: Codes that make the node suspect.
_SUSPECT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _prefix_end(prefix: str) -> str:
    b = bytearray(prefix.encode())
    b[-1] += 1
    return base64.b64encode(bytes(b)).decode()


@dataclass
class _Group:
    layers: dict[int, str]
    layout: dict
    cmap: np.ndarray


@dataclass
class _View:
    revision: int = 0
    map: dict = field(default_factory=lambda: {"epoch": 0, "tables": {}})
    nodes: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)


class _Node:
    def __init__(self, node_id: str, addr: str, security: dict[str, Any]):
        self.id = node_id
        _, self.channel, calls = grpc_channel(addr, **security)
        self.stub = pb_grpc.EmbeddingStoreStub(calls)
        self.in_flight = 0
        self.suspect_until = 0.0

    def suspect(self) -> bool:
        return time.monotonic() < self.suspect_until


class ClusterClient:
    """A client of a cluster of engram-store nodes (see the module doc).

    Args:
        etcd: etcd endpoints, ``["http://HOST:2379", ...]`` (or one comma-separated string).
        part_timeout: seconds one part may take on one replica before the next is asked.
        hedge: send a slow part (past the p95 of recent parts) to a second replica too.
        poll_interval: seconds between re-reads of the map (and at once after a stale answer).
        map_wait: seconds to wait for the first map.
        max_rounds: re-splits after stale answers before giving up.
        root_certificates, certificate_chain, private_key, tls_server_name, token: how to reach
            the nodes, as for :class:`Client` (TLS, mutual TLS, a bearer token); the same for
            every node.
    """

    def __init__(
        self,
        etcd: Sequence[str] | str,
        *,
        part_timeout: float = 2.0,
        hedge: bool = True,
        poll_interval: float = 0.5,
        map_wait: float = 5.0,
        max_rounds: int = 8,
        max_workers: int = 32,
        root_certificates: bytes | str | os.PathLike[str] | None = None,
        certificate_chain: bytes | str | os.PathLike[str] | None = None,
        private_key: bytes | str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
    ):
        self.endpoints = [e for e in (etcd.split(",") if isinstance(etcd, str) else etcd) if e]
        if not self.endpoints:
            raise ValueError("no etcd endpoint")
        if (certificate_chain is None) != (private_key is None):
            raise ValueError("certificate_chain and private_key go together")
        self._security: dict[str, Any] = {
            "root_certificates": root_certificates,
            "certificate_chain": certificate_chain,
            "private_key": private_key,
            "tls_server_name": tls_server_name,
            "token": token,
        }
        self.part_timeout = part_timeout
        self.hedge = hedge
        self.poll_interval = poll_interval
        self.max_rounds = max_rounds
        self._view = _View()
        self._lock = threading.Lock()
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._latencies: deque[float] = deque(maxlen=512)
        self._p95 = 0.05
        self._group_cache: dict[str, tuple[tuple, _Group]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="engram-part")
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="engram-etcd", daemon=True)
        self._refresh()
        self._thread.start()
        deadline = time.monotonic() + map_wait
        while self._view.revision == 0 and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        if self._view.revision == 0:
            self.close()
            raise EngramStoreError(
                grpc.StatusCode.UNAVAILABLE, f"no answer from etcd at {self.endpoints}"
            )

    # --- following etcd ------------------------------------------------------------------------

    def close(self) -> None:
        """Stops following etcd and closes the connections."""
        self._closed.set()
        self._wake.set()
        self._pool.shutdown(wait=False)
        for n in list(self._nodes.values()):
            n.channel.close()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _follow(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if not self._closed.is_set():
                self._refresh()

    def _range(self, endpoint: str) -> dict:
        body = json.dumps({"key": _b64(PREFIX), "range_end": _prefix_end(PREFIX)}).encode()
        req = urllib.request.Request(
            endpoint.rstrip("/") + "/v3/kv/range",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=2.0) as r:  # noqa: S310 (the user's etcd)
            return json.loads(r.read())

    def _refresh(self) -> bool:
        """Re-reads the cluster from etcd; keeps the last view if no endpoint answers."""
        for endpoint in random.sample(self.endpoints, len(self.endpoints)):
            try:
                answer = self._range(endpoint)
            except (OSError, ValueError):
                continue
            self._view = self._parse(answer)
            return True
        return False

    def _parse(self, answer: dict) -> _View:
        view = _View(revision=int(answer.get("header", {}).get("revision", 0)))
        parts: dict[str, dict[str, tuple[int, bytes]]] = {}
        for kv in answer.get("kvs", []):
            key = base64.b64decode(kv["key"]).decode()
            value = base64.b64decode(kv.get("value", ""))
            if key == PREFIX + "map":
                view.map = json.loads(value)
            elif key.startswith(PREFIX + "nodes/"):
                node = json.loads(value)
                view.nodes[node["node_id"]] = node
            elif key.startswith(PREFIX + "groups/"):
                name, _, part = key[len(PREFIX + "groups/") :].rpartition("/")
                parts.setdefault(name, {})[part] = (int(kv.get("mod_revision", 0)), value)
        for name, p in parts.items():
            if not {"meta", "layout", "compress"} <= p.keys():
                continue
            stamp = tuple(p[k][0] for k in ("meta", "layout", "compress"))
            cached = self._group_cache.get(name)
            if cached is None or cached[0] != stamp:
                meta = json.loads(p["meta"][1])
                group = _Group(
                    layers={int(k): v for k, v in meta["layers"].items()},
                    layout=json.loads(p["layout"][1]),
                    cmap=np.load(io.BytesIO(p["compress"][1]), allow_pickle=False),
                )
                cached = (stamp, group)
                self._group_cache[name] = cached
            view.groups[name] = cached[1]
        return view

    # --- routing -------------------------------------------------------------------------------

    def _node(self, node_id: str, addr: str) -> _Node:
        with self._lock:
            n = self._nodes.get((node_id, addr))
            if n is None:
                n = self._nodes[(node_id, addr)] = _Node(node_id, addr, self._security)
            return n

    def _table(self, view: _View, table: str) -> dict:
        tm = view.map.get("tables", {}).get(table)
        if tm is None:
            raise NotFoundError(
                grpc.StatusCode.NOT_FOUND,
                f"table {table!r} is not in the cluster map (epoch {view.map.get('epoch')}): "
                "plan it with `engram-store cluster plan`",
            )
        return tm

    def _candidates(self, view: _View, tm: dict, shard: int) -> list[_Node]:
        ref = {"table": tm["table"], "version": tm["version"], "shard": shard}
        s = tm["shards"][shard]
        out = []
        for node_id in [*s["replicas"], *s.get("leaving", [])]:
            rec = view.nodes.get(node_id)
            if rec is not None and ref in rec.get("ready_shards", []):
                out.append(self._node(node_id, rec["addr"]))
        random.shuffle(out)
        out.sort(key=_Node.suspect)
        healthy = sum(not n.suspect() for n in out)
        if healthy >= 2 and out[1].in_flight < out[0].in_flight:
            out[0], out[1] = out[1], out[0]
        return out

    def _record_latency(self, seconds: float) -> None:
        self._latencies.append(seconds)
        if len(self._latencies) >= 20 and len(self._latencies) % 16 == 0:
            self._p95 = float(np.percentile(np.fromiter(self._latencies, float), 95))

    def _call_part(self, node: _Node, request: Any, epoch: int) -> Any:
        node.in_flight += 1
        try:
            return node.stub.Lookup(
                request, timeout=self.part_timeout, metadata=((EPOCH_HEADER, str(epoch)),)
            )
        finally:
            node.in_flight -= 1

    def _part(self, view: _View, tm: dict, shard: int, ids: np.ndarray) -> tuple[str, Any]:
        """One shard's part: ``("ok", response)``, ``("stale", error)`` or raises a fatal error."""
        candidates = self._candidates(view, tm, shard)
        if not candidates:
            return "stale", EngramStoreError(
                grpc.StatusCode.UNAVAILABLE,
                f"no ready replica of shard {shard} of {tm['table']!r} v{tm['version']}",
            )
        request = pb.LookupRequest(table=tm["table"], ids_le=_ids_le(ids))
        epoch = int(view.map.get("epoch", 0))
        hedge_after = min(max(self._p95, 0.002), 0.25)
        pending: dict[Future, tuple[_Node, float]] = {}
        it = iter(candidates)

        def launch() -> bool:
            node = next(it, None)
            if node is None:
                return False
            pending[self._pool.submit(self._call_part, node, request, epoch)] = (
                node,
                time.monotonic(),
            )
            return True

        launch()
        hedged = not self.hedge
        last: Exception | None = None
        while pending:
            done, _ = wait(
                list(pending), timeout=None if hedged else hedge_after, return_when=FIRST_COMPLETED
            )
            if not done:
                hedged = True
                launch()
                continue
            for f in done:
                node, started = pending.pop(f)
                try:
                    r = f.result()
                except grpc.RpcError as e:
                    code = e.code()
                    if code in _SUSPECT:
                        node.suspect_until = time.monotonic() + 3.0
                    if code not in _FAILOVER:
                        raise from_rpc_error(e) from None
                    last = from_rpc_error(e)
                    launch()
                    continue
                if r.version != tm["version"]:
                    last = EngramStoreError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"{node.id} served version {r.version}, the map places {tm['version']}",
                    )
                    launch()
                    continue
                node.suspect_until = 0.0
                self._record_latency(time.monotonic() - started)
                return "ok", r
        return "stale", last

    def lookup(
        self, table: str, ids: Any, *, dequantize: bool | str = False
    ) -> np.ndarray:
        """Rows ``ids`` of ``table`` in order, as :meth:`engram_store.Client.lookup` returns
        them, each part from a ready replica of its shard."""
        ids = _ids(ids)
        out: Any = None
        pending = np.arange(ids.size)
        last: Exception | None = None
        for round_ in range(self.max_rounds + 1):
            if round_:
                self._refresh()
            view = self._view
            tm = self._table(view, table)
            part_ids = ids[pending]
            if part_ids.size and int(part_ids.max()) >= tm["rows"]:
                bad = int(part_ids[np.argmax(part_ids >= tm["rows"])])
                raise OutOfRangeError(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"row id {bad} of table {table!r} (version {tm['version']}) with "
                    f"{tm['rows']} rows",
                )
            ends = np.array([s["end"] for s in tm["shards"]], dtype=np.uint64)
            shard_of = np.searchsorted(ends, part_ids, side="right")
            futures = {}
            for shard in np.unique(shard_of):
                positions = pending[shard_of == shard]
                futures[
                    self._pool.submit(self._part, view, tm, int(shard), ids[positions])
                ] = positions
            again = []
            for f, positions in futures.items():
                kind, value = f.result()
                if kind == "stale":
                    last = value
                    again.append(positions)
                    continue
                rows = _response_rows(value, dequantize)
                if hasattr(rows, "new_empty"):  # a torch tensor (dequantize="torch")
                    import torch

                    if out is None:
                        out = rows.new_empty((ids.size, *rows.shape[1:]))
                    out[torch.as_tensor(positions, device=rows.device)] = rows
                    continue
                if out is None:
                    out = np.empty((ids.size, *rows.shape[1:]), dtype=rows.dtype)
                out[positions] = rows
            if not again:
                if out is None:
                    return np.empty((0, 0), dtype=np.uint8)
                return out
            pending = np.concatenate(again)
        raise last or EngramStoreError(grpc.StatusCode.UNAVAILABLE, f"no replica of {table!r}")

    def prefetch(self, table: str, ids: Any) -> int:
        """Brings rows ``ids`` of ``table`` into the RAM tier of every ready replica of their
        shards; returns the distinct rows accepted (waits for the answers, not the reads)."""
        ids = _ids(ids)
        view = self._view
        tm = self._table(view, table)
        ends = np.array([s["end"] for s in tm["shards"]], dtype=np.uint64)
        shard_of = np.searchsorted(ends, ids, side="right")
        epoch = str(view.map.get("epoch", 0))
        total = 0
        for shard in np.unique(shard_of):
            if shard >= len(tm["shards"]):
                continue
            req = pb.PrefetchRequest(
                rows=pb.PrefetchRows(table=table, ids_le=_ids_le(ids[shard_of == shard]))
            )
            futures = [
                n.stub.Prefetch.future(
                    req, timeout=self.part_timeout, metadata=((EPOCH_HEADER, epoch),)
                )
                for n in self._candidates(view, tm, int(shard))
            ]
            accepted = [0]
            for f in futures:
                try:
                    accepted.append(f.result().accepted_rows)
                except grpc.RpcError:
                    pass
            total += max(accepted)
        return total

    def _ngram_ids(
        self, group: str, layer: int, token_ids: Any, context: Any, compressed: bool,
        columns: range | None,
    ) -> tuple[str, np.ndarray, int, int, int]:  # fmt: skip
        g = self._view.groups.get(group)
        if g is None:
            raise NotFoundError(
                grpc.StatusCode.NOT_FOUND,
                f"Engram group {group!r} is not in the cluster (no node has published it)",
            )
        table = g.layers.get(layer)
        if table is None:
            raise NotFoundError(grpc.StatusCode.NOT_FOUND, f"group {group!r} has no layer {layer}")
        seqs = _sequences(token_ids, "token_ids")
        contexts = [[] for _ in seqs] if context is None or len(context) == 0 else _sequences(
            context, "context"
        )
        lengths = {len(s) for s in seqs}
        if len(lengths) > 1:
            raise ValueError(f"sequences have different lengths {sorted(lengths)}")
        t = lengths.pop() if lengths else 0

        def comp(x: list[int]) -> np.ndarray:
            a = np.asarray(x, dtype=np.int64)
            return a if compressed else g.cmap[a].astype(np.int64)

        rows = [
            L.row_ids(g.layout, comp(s), layer, comp(c), columns=columns).reshape(-1)
            for s, c in zip(seqs, contexts, strict=True)
        ]
        ids = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
        if columns is not None:
            heads = len(columns)
        else:
            heads = (g.layout["max_ngram_size"] - 1) * g.layout["n_head_per_ngram"]
        return table, ids.astype(np.uint64), len(seqs), t, heads

    def lookup_ngrams(
        self,
        group: str,
        layer: int,
        token_ids: Any,
        *,
        context: Any = None,
        compressed: bool = False,
        columns: range | None = None,
        dequantize: bool | str = False,
    ) -> np.ndarray:
        """As :meth:`engram_store.Client.lookup_ngrams` (``[batch, T, heads * width]``), hashed
        here and routed by the rows the n-grams resolve to."""
        table, ids, batch, t, heads = self._ngram_ids(
            group, layer, token_ids, context, compressed, columns
        )
        rows = self.lookup(table, ids, dequantize=dequantize)
        if batch * t == 0:
            return rows.reshape(batch, t, 0)
        return rows.reshape(batch, t, heads * rows.shape[1])

    def prefetch_ngrams(
        self, group: str, layer: int, token_ids: Any, *, context: Any = None,
        compressed: bool = False,
    ) -> int:  # fmt: skip
        """Prefetches the rows ``token_ids`` read in ``layer`` of ``group``."""
        table, ids, *_ = self._ngram_ids(group, layer, token_ids, context, compressed, None)
        return self.prefetch(table, ids)
