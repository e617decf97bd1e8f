"""engram-store's Python side.

- ``engram_store.Client`` (``engram_store.client``): the gRPC client; rows as numpy arrays,
  Engram n-gram lookups, prefetches, table descriptions and server stats.
- ``engram_store.ClusterClient`` (``engram_store.cluster``): the same calls against a cluster of
  nodes found through etcd (split by shard, routed to ready replicas, hedged, failed over).
- ``engram_store.errors``: the exceptions a failed call raises (gRPC status code + message).
- ``engram_store.layout``: builds an Engram table layout and the token compression map
  (``python -m engram_store.layout --help``), and computes row ids with numpy.
- ``engram_store.table_files``: reads a table's rows straight from its data files.
- ``engram_store.local_server``: runs an ``engram-store`` binary (CLI and a loopback server).

Importing the package itself is cheap: ``Client`` and the errors load gRPC on first use, so
``engram_store.layout`` needs only numpy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Client", "ClusterClient", "EngramStoreError"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from engram_store.client import Client

        return Client
    if name == "ClusterClient":
        from engram_store.cluster import ClusterClient

        return ClusterClient
    if name == "EngramStoreError":
        from engram_store.errors import EngramStoreError

        return EngramStoreError
    raise AttributeError(f"module 'engram_store' has no attribute {name!r}")
