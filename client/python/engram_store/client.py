"""The Python client of engram-store: rows of tables and of Engram layers as numpy arrays.

    from engram_store import Client

    with Client("127.0.0.1:50051") as c:
        rows = c.lookup("demo", [1, 5, 9])                 # [3, row_dim], the table's dtype
        x = c.lookup_ngrams("demo", 1, [[1134, 15695, 237]])  # [1, 3, heads_total * row_dim]
        # DeepSeek-V4.1 tables (fp8 + ue8m0 block scales, 264-byte rows): packed uint8 rows,
        # or bf16 exactly as vLLM dequantizes them (numpy via ml_dtypes, or torch):
        packed = c.lookup_ngrams("v41", 14, ids)                    # [B, T, 24 * 264] uint8
        x = c.lookup_ngrams("v41", 14, ids, dequantize=True)        # [B, T, 24 * 256] bf16
        x = c.lookup_ngrams("v41", 14, ids, dequantize="torch")     # torch.bfloat16
        c.prefetch_ngrams("demo", 1, [[42, 43]])            # returns at once

        # Rows written into shared memory instead of the reply (no copy through gRPC):
        info = c.describe_table("demo")
        with c.shm_region((4096, info.row_dim), info.dtype) as region:
            n = c.lookup_into(region, "demo", ids)          # rows written; region.array()[:n]

        # Rows written into a torch CUDA tensor over CUDA IPC (a server with a VRAM tier):
        with c.register_cuda_tensor(out) as region:         # out: contiguous, on the server's GPU
            c.lookup_ngrams_into(region, "demo", 1, token_ids)

Over TLS, and with a token (``--tls-cert``/``--auth-tokens`` on the server)::

    Client("store.example:50051", root_certificates=open("ca.crt", "rb").read(),
           certificate_chain=cert_pem, private_key=key_pem,  # mutual TLS
           token="...")                                       # authorization: Bearer ...

Row arrays are read-only views of the response bytes (no copy); ``.copy()`` them to write.
bf16 and fp8 e4m3 rows use ``ml_dtypes``. Every failed call raises
:class:`engram_store.errors.EngramStoreError` with the gRPC status code and the server's message.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
import numpy as np

from engram_store import dtypes
from engram_store.channel import Channel
from engram_store.dequant import dequantize_numpy, dequantize_torch
from engram_store.errors import (
    FailedPreconditionError,
    NotFoundError,
    ProtocolError,
    UnavailableError,
    from_rpc_error,
)
from engram_store.regions import (
    CudaRegion,
    LocalSocket,
    Region,
    ShmRegion,
    Written,
    create_memfd,
    describe_cuda_tensor,
    region_size,
)
from engram_store.v1 import store_pb2 as pb
from engram_store.v1 import store_pb2_grpc as pb_grpc

__all__ = ["Client", "PrefetchFuture", "RowFormat", "Stats", "TableInfo", "Written"]

#: Channel options: no message size limit either way (a batch of rows can be hundreds of MiB).
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
)
_U32 = 2**32


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """A call's details with metadata of our own added."""


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer TOKEN`` to every call."""

    def __init__(self, token: str):
        if not token or not token.isascii() or not token.isprintable() or " " in token:
            raise ValueError("a token is printable ASCII without spaces")
        self._header = ("authorization", f"Bearer {token}")

    def __repr__(self) -> str:
        return "_BearerToken(***)"

    def _details(self, d: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            d.method,
            d.timeout,
            [*(d.metadata or ()), self._header],
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):  # noqa: D102
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # noqa: D102
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):  # noqa: D102
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):  # noqa: D102
        return continuation(self._details(details), requests)


def _pem(value: bytes | str | os.PathLike[str] | None) -> bytes | None:
    """PEM bytes as given, or read from a path."""
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


def grpc_channel(
    addr: str,
    *,
    options: Sequence[tuple[str, Any]] = (),
    root_certificates: bytes | str | os.PathLike[str] | None = None,
    certificate_chain: bytes | str | os.PathLike[str] | None = None,
    private_key: bytes | str | os.PathLike[str] | None = None,
    tls_server_name: str | None = None,
    token: str | None = None,
) -> tuple[str, grpc.Channel, grpc.Channel]:
    """A channel to ``addr`` (``host:port``, or ``https://host:port``): TLS when a scheme or a
    certificate says so, the token on every call. Returns the target, the channel (to close) and
    the channel to call through (with the token)."""
    scheme, target = addr.split("://", 1) if "://" in addr else ("", addr)
    opts = [*CHANNEL_OPTIONS, *options]
    tls = scheme == "https" or any(
        v is not None for v in (root_certificates, certificate_chain, private_key)
    )
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("certificate_chain and private_key go together")
    if tls:
        if tls_server_name:
            opts.append(("grpc.ssl_target_name_override", tls_server_name))
        creds = grpc.ssl_channel_credentials(
            root_certificates=_pem(root_certificates),
            private_key=_pem(private_key),
            certificate_chain=_pem(certificate_chain),
        )
        channel = grpc.secure_channel(target, creds, options=opts)
    else:
        channel = grpc.insecure_channel(target, options=opts)
    calls = channel if token is None else grpc.intercept_channel(channel, _BearerToken(token))
    return target, channel, calls


@dataclasses.dataclass(frozen=True)
class RowFormat:
    """How a row's bytes hold its ``row_dim`` elements.

    ``kind`` is ``"plain"`` (``row_dim`` elements of the dtype), ``"fp8_block_scaled"`` (fp8
    e4m3 values, then one ue8m0 scale byte per ``scale_block`` values: DeepSeek-V4.1 Engram
    tables, 256 + 8 bytes) or ``"fp8_table_scaled"`` (fp8 values times ``table_scale``).
    """

    kind: str = "plain"
    scale_block: int = 0
    table_scale: float = 0.0

    @classmethod
    def from_message(cls, msg: Any, has: bool, row_dim: int, row_bytes: int) -> RowFormat:
        """The format a response or TableInfo reports; a server from before row formats
        reports none, and then 264-byte-style rows (more bytes than fp8 values) are taken to be
        block-scaled with the block their size implies."""
        kinds = {
            pb.ROW_FORMAT_KIND_PLAIN: "plain",
            pb.ROW_FORMAT_KIND_FP8_BLOCK_SCALED: "fp8_block_scaled",
            pb.ROW_FORMAT_KIND_FP8_TABLE_SCALED: "fp8_table_scaled",
        }
        if has and msg.kind in kinds:
            return cls(kinds[msg.kind], msg.scale_block, msg.table_scale)
        extra = row_bytes - row_dim
        if 0 < extra < row_dim and row_dim % extra == 0:
            return cls("fp8_block_scaled", row_dim // extra)
        return cls()


@dataclasses.dataclass(frozen=True)
class TableInfo:
    """One served table's shape and version."""

    name: str
    rows: int
    row_dim: int
    dtype: np.dtype
    row_bytes: int
    version: int
    data_bytes: int
    block_size: int
    checksum: str
    row_format: RowFormat = RowFormat()

    @classmethod
    def from_proto(cls, t: pb.TableInfo) -> TableInfo:
        return cls(
            name=t.name,
            rows=t.rows,
            row_dim=t.row_dim,
            dtype=dtypes.from_proto(t.dtype),
            row_bytes=t.row_bytes,
            version=t.version,
            data_bytes=t.data_bytes,
            block_size=t.block_size,
            checksum=t.checksum,
            row_format=RowFormat.from_message(
                t.row_format, t.HasField("row_format"), t.row_dim, t.row_bytes
            ),
        )


def _response_rows(r: pb.LookupResponse, dequantize: bool | str) -> Any:
    """The rows of a response, ``[n, width]``: plain rows as the table's dtype; fp8 rows with
    block scales as packed uint8 ``[n, row_bytes]`` and fp8 rows with a table scale as fp8
    ``[n, row_dim]``, or, with ``dequantize`` (True: numpy ``ml_dtypes.bfloat16``; ``"torch"``:
    a ``torch.bfloat16`` tensor), ``[n, row_dim]`` bf16 exactly as vLLM dequantizes them."""
    fmt = RowFormat.from_message(r.row_format, r.HasField("row_format"), r.row_dim, r.row_bytes)
    if dequantize not in (False, True, "torch"):
        raise ValueError(f"dequantize is {dequantize!r}; use False, True or 'torch'")
    if fmt.kind == "plain":
        if dequantize:
            raise ValueError("the table's rows carry no scales: look them up without dequantize")
        return dtypes.to_numpy(r.rows, r.dtype, r.row_dim)
    if fmt.kind == "fp8_block_scaled":
        raw = np.frombuffer(r.rows, dtype=np.uint8).reshape(-1, r.row_bytes)
        args = dict(row_dim=r.row_dim, block=fmt.scale_block)
    else:
        raw = np.frombuffer(r.rows, dtype=np.uint8).reshape(-1, r.row_dim)
        args = dict(row_dim=r.row_dim, block=None, table_scale=fmt.table_scale)
    if dequantize == "torch":
        return dequantize_torch(raw, **args)
    if dequantize:
        return dequantize_numpy(raw, **args)
    return raw if fmt.kind == "fp8_block_scaled" else dtypes.to_numpy(r.rows, r.dtype, r.row_dim)


@dataclasses.dataclass(frozen=True)
class Stats:
    """Server counters. ``tiers`` maps a tier name (``"ram"``, ``"nvme"``, ``"gpu"``) to its
    counters, with the field names of the protocol's ``TierStats`` (``hits``, ``misses``,
    ``prefetch_rows``, ``prefetch_hits``, ``latency``, ``device``...). A server with VRAM tiers on
    several devices (``--gpu-device 0,1``) has one entry per device, ``"gpu:0"``, ``"gpu:1"``..."""

    tiers: dict[str, dict[str, Any]]
    request_latency: dict[str, Any]
    requests: int
    rows_served: int
    bytes_served: int
    errors: int
    io_engine: str
    uptime_s: int
    #: Rows of prefetches queued or running now, and those dropped for want of queue room.
    prefetch_queued_rows: int = 0
    prefetch_dropped_rows: int = 0


class PrefetchFuture:
    """A prefetch in flight: the server answers as soon as it has accepted the rows."""

    def __init__(self, future: grpc.Future):
        self._future = future

    def done(self) -> bool:
        """True once the server has answered."""
        return self._future.done()

    def result(self, timeout: float | None = None) -> int:
        """Distinct rows the server accepted; raises ``EngramStoreError`` if it refused."""
        try:
            return self._future.result(timeout=timeout).accepted_rows
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None


def _tier_key(tier: Any, tiers: Sequence[Any]) -> str:
    """``Stats.tiers``' key of a tier: its name, and ``gpu:N`` for each of several VRAM tiers."""
    gpus = sum(1 for t in tiers if t.tier == "gpu")
    if tier.tier == "gpu" and gpus > 1 and tier.HasField("device"):
        return f"gpu:{tier.device}"
    return tier.tier


def _message_dict(msg: Any) -> dict[str, Any]:
    """Every field of a protobuf message (defaults included), nested messages as dicts."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.message_type is not None:
            value = _message_dict(value)
        out[field.name] = value
    return out


def _ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    """Row ids as a uint64 array, checked to be 1-D and within uint64."""
    a = np.asarray(ids)
    if a.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D sequence of integers, got shape {a.shape} {a.dtype}")
    if a.dtype.kind == "i" and (a < 0).any():
        raise ValueError(f"row id {int(a[np.argmax(a < 0)])} is negative")
    return a.astype(np.uint64, copy=False)


def _ids_le(ids: np.ndarray) -> bytes:
    """The ``ids_le`` field of a request: ids (from :func:`_ids`) as packed little-endian u64s,
    their bytes as they are on this machine's arrays, with no per-id encoding (a list of ints
    through protobuf's varints takes milliseconds for 65,536 ids)."""
    return ids.astype("<u8", copy=False).tobytes()


def _sequences(token_ids: Any, what: str) -> list[list[int]]:
    """A batch of token sequences: a 2-D array or a list of lists (a flat list is one)."""
    if isinstance(token_ids, np.ndarray):
        if token_ids.ndim == 1:
            token_ids = token_ids[None, :]
        if token_ids.ndim != 2 or (
            token_ids.size and not np.issubdtype(token_ids.dtype, np.integer)
        ):
            raise ValueError(f"{what} must be a 2-D integer array, got shape {token_ids.shape}")
        seqs = token_ids.tolist()
    else:
        seqs = [list(s) if isinstance(s, Iterable) else s for s in token_ids]
        if seqs and not any(isinstance(s, list) for s in seqs):
            seqs = [seqs]
        if not all(isinstance(s, list) for s in seqs):
            raise ValueError(f"{what} must be a list of lists of token ids (or a 2-D array)")
    for i, s in enumerate(seqs):
        for p, t in enumerate(s):
            if not isinstance(t, (int, np.integer)) or not 0 <= int(t) < _U32:
                raise ValueError(f"{what}[{i}][{p}] = {t!r} is not a token id (0 <= id < 2**32)")
    return [[int(t) for t in s] for s in seqs]


def _masks(mask: Any, n: int, what: str) -> list[bytes]:
    """Per-sequence dead masks as the wire's bytes (one byte per token, 1 = dead): a 2-D array
    or a list of per-sequence lists of bools or 0/1 (a flat list is one sequence), or None / empty
    for none dead. Their lengths are the server's to check (``INVALID_ARGUMENT`` naming the
    sequence)."""
    if mask is None or len(mask) == 0:
        return [b""] * n
    if isinstance(mask, np.ndarray):
        if mask.ndim not in (1, 2):
            raise ValueError(f"{what} must be a 2-D array of bools, got shape {mask.shape}")
        rows = list(mask[None, :] if mask.ndim == 1 else mask)
    else:
        rows = list(mask)
        if not any(isinstance(r, (list, tuple, np.ndarray)) for r in rows):
            rows = [rows]
    if len(rows) != n:
        raise ValueError(f"{what} has {len(rows)} sequences, token_ids has {n}")
    return [np.asarray(r, dtype=bool).reshape(-1).astype(np.uint8).tobytes() for r in rows]


def _columns(columns: Any) -> pb.ColumnRange | None:
    """A column range as the wire's ``ColumnRange``: a ``range`` (step 1) or ``(start, end)``;
    None for every column. Emptiness and the layer's bounds are the server's to check."""
    if columns is None:
        return None
    if isinstance(columns, range):
        if columns.step != 1:
            raise ValueError(f"columns {columns} must be contiguous (step 1)")
        start, end = columns.start, columns.stop
    else:
        start, end = columns
    if not 0 <= int(start) < _U32 or not 0 <= int(end) < _U32:
        raise ValueError(f"columns ({start}, {end}) are not column numbers")
    return pb.ColumnRange(start=int(start), end=int(end))


class Client:
    """A connection to an engram-store server.

    Args:
        addr: ``host:port`` (or ``http://host:port``; ``https://host:port`` is TLS).
        timeout: seconds each call may take (None: no limit). Default 60.
        options: extra gRPC channel options, after the unlimited message sizes.
        root_certificates: PEM of the CA the server's certificate must chain to (bytes, or a
            path): connects over TLS. ``https://`` without it trusts the system's CAs.
        certificate_chain, private_key: PEM of this client's certificate and key (bytes or
            paths), for a server that requires one (mutual TLS).
        tls_server_name: the name the server's certificate must carry, if not the host of
            ``addr``.
        token: sent as ``authorization: Bearer TOKEN`` with every call.
    """

    def __init__(
        self,
        addr: str,
        *,
        timeout: float | None = 60.0,
        options: Sequence[tuple[str, Any]] = (),
        root_certificates: bytes | str | os.PathLike[str] | None = None,
        certificate_chain: bytes | str | os.PathLike[str] | None = None,
        private_key: bytes | str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
    ):
        self.addr, self._channel, channel = grpc_channel(
            addr,
            options=options,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            tls_server_name=tls_server_name,
            token=token,
        )
        self.timeout = timeout
        self._token = token
        self._stub = pb_grpc.EmbeddingStoreStub(channel)
        self._server_info: Any = None

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def lookup(
        self,
        table: str,
        ids: Iterable[int] | np.ndarray,
        *,
        dequantize: bool | str = False,
        version: int | None = None,
        return_version: bool = False,
    ) -> Any:
        """Rows ``ids`` of ``table`` in order (duplicates repeated): ``[len(ids), row_dim]`` of
        the table's dtype; for fp8 tables with block scales, the packed rows ``[len(ids),
        row_bytes]`` (uint8), or with ``dequantize=True`` (``"torch"``) ``[len(ids), row_dim]``
        bf16 as vLLM dequantizes them (a ``torch.bfloat16`` tensor).

        Every row of one call comes from one version of the table, also while the server swaps
        in a new one. ``version`` pins it (None: the version served); the server keeps the last
        few versions, and one it no longer has raises :class:`FailedPreconditionError` naming
        it. With ``return_version=True`` the result is ``(rows, version)``."""
        ids = _ids(ids)
        req = pb.LookupRequest(table=table, ids_le=_ids_le(ids), version=version)
        r = self._call(self._stub.Lookup, req)
        rows = _response_rows(r, dequantize)
        if rows.shape[0] != len(ids):
            raise ProtocolError(f"asked for {len(ids)} rows, got {rows.shape[0]}")
        return (rows, r.version) if return_version else rows

    def _ngrams_request(
        self,
        group: str,
        layer: int,
        token_ids: Any,
        context: Any,
        compressed: bool,
        dead: Any = None,
        context_dead: Any = None,
        columns: Any = None,
        version: int | None = None,
    ) -> tuple[pb.LookupNgramsRequest, list[list[int]]]:
        seqs = _sequences(token_ids, "token_ids")
        if context is None or len(context) == 0:
            contexts: list[list[int]] = [[] for _ in seqs]
        else:
            contexts = _sequences(context, "context")
            if len(contexts) != len(seqs):
                raise ValueError(
                    f"context has {len(contexts)} sequences, token_ids has {len(seqs)}"
                )
        dead_masks = _masks(dead, len(seqs), "dead")
        context_masks = _masks(context_dead, len(seqs), "context_dead")
        req = pb.LookupNgramsRequest(
            group=group,
            layer_id=layer,
            sequences=[
                pb.TokenSequence(tokens=t, context=c, dead=d, context_dead=cd)
                for t, c, d, cd in zip(seqs, contexts, dead_masks, context_masks, strict=True)
            ],
            compressed=compressed,
            columns=_columns(columns),
            version=version,
        )
        return req, seqs

    def lookup_ngrams(
        self,
        group: str,
        layer: int,
        token_ids: Any,
        *,
        context: Any = None,
        compressed: bool = False,
        dequantize: bool | str = False,
        dead: Any = None,
        context_dead: Any = None,
        columns: Any = None,
        version: int | None = None,
        return_version: bool = False,
    ) -> Any:
        """The input of Engram layer ``layer`` of ``group`` for a batch of token sequences.

        Args:
            token_ids: raw tokenizer ids, ``[batch, T]`` (a 2-D array or a list of equally long
                lists; one flat list is a batch of one).
            context: per sequence, the tokens just before it (only the last
                ``max_ngram_size - 1`` matter), for continuing a sequence (e.g. decoding one
                token at a time). None: every sequence starts there.
            compressed: the ids are already compressed ids.
            dequantize: for fp8 tables with scales (DeepSeek-V4.1), return bf16 values as vLLM
                dequantizes them: True for a numpy ``ml_dtypes.bfloat16`` array, ``"torch"``
                for a ``torch.bfloat16`` tensor. False: the rows as stored.
            dead: dead tokens (DeepSeek-V4.1: image spans), bools shaped like ``token_ids``
                (None: none). A dead token takes no part in any n-gram: it pads its own position
                and every n-gram reaching through it; its id is never read (any placeholder
                will do), and its position returns the rows of an all-pad window, the rows vLLM
                reads there (the model's gate then ignores them).
            context_dead: the same for ``context``.
            columns: only these hash columns, a ``range`` or ``(start, end)`` within the layer's
                ``heads_total`` (a tensor-parallel rank's: ``layout.head_shard(24, ranks,
                rank)``). None: every column.
            version: the version of the layer's table to read (None: the version served), as
                in :meth:`lookup`.
            return_version: return ``(rows, version)``.

        Returns:
            ``[batch, T, columns * row_dim]`` of the layer table's dtype: per position the rows
            of every (n-gram order, head) asked for, concatenated. Packed fp8 rows with block
            scales come as ``[batch, T, columns * row_bytes]`` uint8 (each row its values, then
            its scales), and dequantized ones as ``[batch, T, columns * row_dim]`` bf16.
        """
        req, seqs = self._ngrams_request(
            group, layer, token_ids, context, compressed, dead, context_dead, columns, version
        )
        lengths = {len(s) for s in seqs}
        if len(lengths) > 1:
            raise ValueError(
                f"sequences have different lengths {sorted(lengths)}; pad them or look them "
                "up one call each"
            )
        batch, t = len(seqs), (lengths.pop() if lengths else 0)
        r = self._call(self._stub.LookupNgrams, req)
        rows = _response_rows(r, dequantize)
        positions = batch * t
        if positions == 0:
            out = rows.reshape(batch, t, 0)
        elif rows.shape[0] % positions:
            raise ProtocolError(f"{rows.shape[0]} rows do not divide into {positions} positions")
        else:
            heads = rows.shape[0] // positions
            out = rows.reshape(batch, t, heads * rows.shape[1])
        return (out, r.version) if return_version else out

    def prefetch(self, table: str, ids: Iterable[int] | np.ndarray) -> PrefetchFuture:
        """Asks the server to bring rows ``ids`` of ``table`` into its RAM tier; does not block.
        The server reads each disk block a request's rows share once: to warm many rows over
        several requests, send them sorted by id (neighbours together), not in rank order."""
        req = pb.PrefetchRequest(rows=pb.PrefetchRows(table=table, ids_le=_ids_le(_ids(ids))))
        return PrefetchFuture(self._stub.Prefetch.future(req, timeout=self.timeout))

    def prefetch_ngrams(
        self,
        group: str,
        layer: int,
        token_ids: Any,
        *,
        context: Any = None,
        compressed: bool = False,
        dead: Any = None,
        context_dead: Any = None,
        columns: Any = None,
    ) -> PrefetchFuture:
        """Asks the server to bring the rows a :meth:`lookup_ngrams` of the same arguments reads
        into its RAM tier; does not block (sequences may differ in length here)."""
        req, _ = self._ngrams_request(
            group, layer, token_ids, context, compressed, dead, context_dead, columns
        )
        return PrefetchFuture(
            self._stub.Prefetch.future(pb.PrefetchRequest(ngrams=req), timeout=self.timeout)
        )

    def describe_table(self, table: str) -> TableInfo:
        """One table's shape and version."""
        return TableInfo.from_proto(
            self._call(self._stub.DescribeTable, pb.DescribeTableRequest(table=table))
        )

    def share_table(
        self, table: str, device: int | None = None, *, timeout: float | None = 600.0
    ) -> Any:
        """Shares a table version with this process (``ShareTable``; the server must run on this
        host with ``--share-memory`` and a RAM budget that holds the table whole): the
        ``ShareTableResponse`` with ``host_path``, the server's shared-memory file of every row
        (row ``r`` at byte ``r * row_bytes``), and ``vram`` (if ``HasField("vram")``), its VRAM
        tier on ``device`` (None: the first device it serves) as CUDA IPC handles. The server
        loads the rows it lacks first, hence the long default ``timeout``. Admin. Use it through
        :class:`engram_store.torch.MappedTransport`."""
        req = pb.ShareTableRequest(table=table, device=device)
        return self._call(self._stub.ShareTable, req, timeout=timeout)

    def list_tables(self) -> list[TableInfo]:
        """Every table served (an Engram group's layer tables included)."""
        r = self._call(self._stub.ListTables, pb.ListTablesRequest())
        return [TableInfo.from_proto(t) for t in r.tables]

    def reload(self, tables: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Asks the server to look for new versions of ``tables`` (every table when empty) now
        rather than at its next look, and to try again versions it refused. Returns, per table
        looked at, ``table``, ``previous_version``, ``version`` (0: none), ``outcome``
        (``"UNCHANGED"``, ``"SWAPPED"``, ``"ADDED"`` or ``"REFUSED"``) and ``message`` (why a
        version was refused). Needs an admin token when the server checks tokens."""
        r = self._call(self._stub.Reload, pb.ReloadRequest(tables=list(tables)))
        return [
            {
                "table": t.table,
                "previous_version": t.previous_version,
                "version": t.version,
                "outcome": pb.ReloadOutcome.Name(t.outcome).removeprefix("RELOAD_OUTCOME_"),
                "message": t.message,
            }
            for t in r.tables
        ]

    def stats(self, reset: bool = False) -> Stats:
        """Server counters; ``reset`` zeroes them after reading."""
        r = self._call(self._stub.Stats, pb.StatsRequest(reset=reset))
        return Stats(
            tiers={_tier_key(t, r.tiers): _message_dict(t) for t in r.tiers},
            request_latency=_message_dict(r.request_latency),
            requests=r.requests,
            rows_served=r.rows_served,
            bytes_served=r.bytes_served,
            errors=r.errors,
            io_engine=r.io_engine,
            uptime_s=r.uptime_s,
            prefetch_queued_rows=r.prefetch_queued_rows,
            prefetch_dropped_rows=r.prefetch_dropped_rows,
        )

    # -- Delivery into registered memory (LookupInto) ------------------------------------------

    def shm_region(
        self,
        shape_or_nbytes: int | Sequence[int],
        dtype: Any = None,
        *,
        name: str | None = None,
    ) -> ShmRegion:
        """Creates a host shared-memory region and registers it with the server.

        Args:
            shape_or_nbytes: its size: a byte count, or a shape (a tuple) of ``dtype``.
            dtype: element type of a shape (default ``uint8``); also the default of
                :meth:`ShmRegion.array`.
            name: a name for the memory (shows in ``/proc/PID/fd``; no file is created).

        The server must run on this machine with a local socket (``serve --local-socket PATH``,
        or ``--listen unix:PATH``): the region is a sealed memfd handed to it there. Use it as a
        context manager or :meth:`ShmRegion.close` it to unregister it.
        """
        nbytes, shape = region_size(shape_or_nbytes, dtype)
        local_path = self.server_info().local_socket
        if not local_path:
            raise FailedPreconditionError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the server has no local socket (serve --local-socket PATH, or --listen "
                "unix:PATH), so it takes no shared-memory regions"
            )
        fd, mapping = create_memfd(nbytes, name)
        local = None
        try:
            local = LocalSocket(local_path)
            r = local.request(
                {"op": "register_memfd", "size": nbytes, "token": self._token}, fd
            )
        except BaseException:
            mapping.close()
            if local is not None:
                local.close()
            raise
        finally:
            os.close(fd)
        region_id, token = int(r["region_id"]), str(r["token"])

        def unregister() -> None:
            try:
                local.request({"op": "unregister", "region_id": region_id, "token": token})
            except (NotFoundError, OSError):
                pass  # already gone (unregistered elsewhere, or the server restarted)

        return ShmRegion(
            region_id, token, int(r["size"]), unregister, mapping, local, shape, dtype
        )

    def open_channel(
        self,
        region: Region,
        *,
        table: str | None = None,
        group: str | None = None,
        layer: int | None = None,
        compressed: bool = False,
        capacity: int,
        slots: int = 2,
    ) -> Channel:
        """Opens a sidecar channel (:class:`engram_store.channel.Channel`) that writes rows into
        ``region`` (from :meth:`shm_region` or :meth:`register_cuda_tensor`): rows of ``table`` by
        id, or of an Engram ``group``'s ``layer`` for token sequences; at most ``capacity`` rows
        (ids, or token positions) per request; ``slots`` requests in flight at once. The server
        must run on this machine with a local socket."""
        if (table is None) == (group is None or layer is None):
            raise ValueError("open_channel takes a table, or a group and a layer")
        local_path = self.server_info().local_socket
        if not local_path:
            raise FailedPreconditionError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the server has no local socket (serve --local-socket PATH, or --listen "
                "unix:PATH), so it opens no channels",
            )
        if table is not None:
            target: dict[str, Any] = {"table": table}
            payload = int(capacity) * 8
        else:
            target = {"group": group, "layer": int(layer), "compressed": bool(compressed)}
            payload = int(capacity) * 12 + 4096
        return Channel(local_path, self._token, target, region, capacity, slots, payload)

    def server_info(self) -> Any:
        """What the server says of itself: its local socket (for shared-memory regions),
        ``max_batch_rows``, ``max_regions_per_connection``, ``version``."""
        if self._server_info is None:
            self._server_info = self._call(self._stub.ServerInfo, pb.ServerInfoRequest())
        return self._server_info

    def register_cuda_tensor(self, tensor: Any, *, sync: bool = True) -> CudaRegion:
        """Registers a contiguous torch CUDA tensor, on the server's ``--gpu-device``, as a region
        the server writes rows into over CUDA IPC.

        The server must run on this machine, built with ``--features cuda`` and started with
        ``--gpu-budget`` (else ``FAILED_PRECONDITION``). ``sync``: before each write, wait for
        the work queued on the tensor's current stream. Needs torch (imported here, lazily).
        """
        fields = describe_cuda_tensor(tensor)
        r = self._call(
            self._stub.RegisterRegion,
            pb.RegisterRegionRequest(cuda_ipc=pb.CudaIpcRegion(**fields)),
        )
        return CudaRegion(
            r.region_id, r.token, r.size, self._unregisterer(r.region_id, r.token), tensor, sync
        )

    def unregister_region(self, region_id: int, token: str) -> None:
        """Forgets a region on the server (``NOT_FOUND`` if it is not registered). Regions made
        by this client are unregistered by their ``close``; this is for ids and tokens passed
        around."""
        self._call(
            self._stub.UnregisterRegion,
            pb.UnregisterRegionRequest(region_id=region_id, token=token),
        )

    def _unregisterer(self, region_id: int, token: str):
        def unregister() -> None:
            try:
                self.unregister_region(region_id, token)
            except (NotFoundError, UnavailableError):
                # Already gone: unregistered elsewhere, or the server restarted or stopped (its
                # regions went with it), so a region's close in a teardown after the server
                # went away does not raise over what the teardown was reporting.
                pass

        return unregister

    def _lookup_into(self, region: Region, offset: int, **source: Any) -> Written:
        if not isinstance(region, Region):
            raise TypeError(f"expected a region from this client, got {type(region).__name__}")
        if isinstance(region, CudaRegion):
            region.before_write()
        else:
            region._check_open()
        if not isinstance(offset, (int, np.integer)) or offset < 0:
            raise ValueError(f"offset must be a non-negative byte offset, got {offset!r}")
        r = self._call(
            self._stub.LookupInto,
            pb.LookupIntoRequest(
                region_id=region.region_id, token=region.token, offset=int(offset), **source
            ),
        )
        return Written(r.row_count, r.row_bytes, r.bytes_written, r.gpu_hits, r.version)

    def lookup_into(
        self, region: Region, table: str, ids: Iterable[int] | np.ndarray, offset: int = 0
    ) -> Written:
        """Writes rows ``ids`` of ``table`` into ``region``, packed in order from byte ``offset``
        (``len(ids) * row_bytes`` bytes; the server refuses a write past the region's end).

        Returns the number of rows written, as :class:`Written` (an ``int`` that also carries
        ``row_bytes``, ``bytes_written`` and ``gpu_hits``).
        """
        rows = pb.LookupRequest(table=table, ids_le=_ids_le(_ids(ids)))
        return self._lookup_into(region, offset, rows=rows)

    def lookup_ngrams_into(
        self,
        region: Region,
        group: str,
        layer: int,
        token_ids: Any,
        offset: int = 0,
        *,
        context: Any = None,
        compressed: bool = False,
        dead: Any = None,
        context_dead: Any = None,
        columns: Any = None,
    ) -> Written:
        """Writes the rows :meth:`lookup_ngrams` would return (same ``dead``, ``context_dead``
        and ``columns``) into ``region`` from byte ``offset``: ``[sequence][position][column]``
        rows, packed (sequences may differ in length here). Returns the number of rows written
        (positions x columns), as :class:`Written`."""
        req, _ = self._ngrams_request(
            group, layer, token_ids, context, compressed, dead, context_dead, columns
        )
        return self._lookup_into(region, offset, ngrams=req)
