"""An Engram row backend for an inference engine, shaped like vLLM's DeepSeek-V4.1 Mooncake
backend (``vllm/models/deepseek_v4_1/nvidia/engram_mooncake.py``): three calls per forward pass.

- :meth:`EngramRowBackend.prefetch` at forward entry, with the step's row ids (``hash_ids``, as
  the engine's hashing kernel makes them: ``[tokens, layers, columns]``, on the device or the host)
  or its token ids (hashed here, on the host, with an :class:`~engram_store.torch.hashing.
  NgramHasher`). It returns at once; a worker thread asks the transport for the rows.
- :meth:`EngramRowBackend.wait` blocks until the rows of a layer (or all) are in.
- :meth:`EngramRowBackend.rows` returns one layer's rows as bf16 ``[tokens, heads, head_dim]`` on
  the device, dequantized there from the packed fp8 rows (``engram_store.torch.rows``).

Slots: ``num_slots`` buffers (default 2) let the rows of the next step (a decode step and the next
prefill chunk, or two micro-batches) arrive while the current ones are read; each slot is reused
only after the reads of its previous rows have finished on the device (an event per slot and
layer). Tensor parallelism: a rank asks only for its own hash columns, ``ceil(columns / ranks)``
contiguous columns per rank as vLLM's ``engram_head_shard`` splits them; its rows come out padded
to that many heads (zeros past its last column), ready for an all-gather.

CUDA graphs: ``prefetch``, ``wait`` and ``rows`` do host work (a thread hand-off, a host wait for
the gRPC transport) and must run outside a captured graph, between graph pieces, as vLLM's
breakable CUDA graphs run its Engram lookups.

A transport with ``device_gather`` (:class:`~engram_store.torch.mapped.MappedTransport`) reads rows
with a kernel of this process: ``prefetch`` then queues, on the backend's side stream after the
work queued so far on the current one, one gather-and-dequantize kernel per layer straight into
the slot's bf16 rows, with no worker thread and no host wait; ``rows`` makes the current stream
wait for that layer's kernel. Give it the step's ``hash_ids`` on the device (token ids are hashed
on the host first). On the CPU such a transport reads the rows at once, in ``prefetch``. A gather
``ahead`` (a later step's) may come back from the transport as a :class:`~engram_store.torch.
transport.FillOnRead` (``MappedTransport``'s staged gathers): ``rows`` then queues its kernel
on the reading stream, into the tensor read; so may a gather for the current step when the
transport foresees its misses (``MappedTransport(predict_misses=True)``) and the step's ids are on
the host (``hash_ids`` as a numpy array or CPU tensor, or ``token_ids``): its misses are copied up
in ``prefetch``, its kernel runs in ``rows``; and so may a gather on the side stream when the
transport fetches its misses ahead (``MappedTransport(fetch_misses=True)``): ``prefetch`` queues
the kernels that read the rows the VRAM tier lacks over PCIe, ``rows`` the gather of the rest
from VRAM. ``inline_min_tokens`` puts large steps' gathers on
the current stream instead of the side stream. Before queueing a layer's gather the backend asks
the transport (``check``) whether an earlier gather of that table was given a row id past its
end (the kernel reads a zero row there and flags it): that step's ``rows`` then raises it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from engram_store.torch.hashing import NgramHasher
from engram_store.torch.rows import V41_ROWS, RowFormat, dequantize
from engram_store.torch.tiered import FetchScratch
from engram_store.torch.transport import (
    Done,
    FillOnRead,
    KernelDone,
    Pending,
    RowBuffer,
    RowTransport,
)

__all__ = ["EngramLayer", "EngramRowBackend", "head_shard"]

#: Captured gathers kept at most (slots x layers x the distinct buffers they are given).
MAX_GATHER_GRAPHS = 64


def head_shard(columns: int, num_shards: int, shard_rank: int) -> tuple[int, int, int]:
    """``(first column, columns of this rank, columns per rank)`` when ``columns`` hash columns
    are split over ``num_shards`` ranks: ``ceil(columns / num_shards)`` contiguous columns each,
    the last rank possibly fewer (as vLLM's ``engram_head_shard``)."""
    if columns < 1 or num_shards < 1 or not 0 <= shard_rank < num_shards:
        raise ValueError(f"no shard {shard_rank} of {num_shards} over {columns} columns")
    per_rank = -(-columns // num_shards)
    start = shard_rank * per_rank
    if start >= columns:
        raise ValueError(f"{num_shards} ranks over {columns} columns leave rank {shard_rank} none")
    return start, min(per_rank, columns - start), per_rank


class _Resolved:
    """A lookup's outcome known when it is made (a device gather's: its kernel is queued, or
    its launch failed), kept in a slot where a transport's lookups keep a Future, without a
    Future's lock and condition (host time before the model's next launch)."""

    __slots__ = ("_error", "_value")

    def __init__(self, value: Pending | None = None, error: BaseException | None = None):
        self._value, self._error = value, error

    def done(self) -> bool:
        return True

    def exception(self) -> BaseException | None:
        return self._error

    def result(self) -> Pending:
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


@dataclasses.dataclass(frozen=True)
class EngramLayer:
    """One Engram layer the backend serves: the model layer id and the table holding its rows
    (e.g. ``"v41.layer14"``), whose rows are addressed by the global row ids of ``columns``
    hash columns."""

    layer_id: int
    table: str
    columns: int = 24


@dataclasses.dataclass
class _Slot:
    """One buffer set: packed rows as the transport wrote them, and dequantized bf16 rows."""

    buffer: RowBuffer
    packed: list[torch.Tensor]  # per layer [max_tokens, local columns, row_bytes] uint8
    out: list[torch.Tensor]  # per layer [max_tokens, columns per rank, head_dim] bf16
    host_ids: torch.Tensor  # [max_tokens, layers, local columns] int64 (pinned on CUDA)
    ids_ready: torch.cuda.Event | None
    consumed: list[torch.cuda.Event | None]
    futures: list[concurrent.futures.Future[Pending] | _Resolved]
    dead: list[np.ndarray | None]
    fetched_at: list[float | None]
    num_tokens: int = 0
    # Device gathers: per layer, where the rows land and the event recorded once they have.
    target: list[torch.Tensor] = dataclasses.field(default_factory=list)
    done: list[torch.cuda.Event] = dataclasses.field(default_factory=list)
    # Staggered device gathers: the slot's position, per layer the ids of a gather not yet
    # queued, and the ids tensor they view (kept alive until the slot is reused).
    index: int = 0
    deferred: list[torch.Tensor | None] = dataclasses.field(default_factory=list)
    #: A staggered layer's ids on the host, for a transport that foresees misses from them.
    deferred_host: list[np.ndarray | None] = dataclasses.field(default_factory=list)
    ids_keep: torch.Tensor | None = None


class EngramRowBackend:
    """Engram rows of some layers, for one tensor-parallel rank, through ``transport``.

    Args:
        transport: how rows arrive (e.g. :class:`~engram_store.torch.transport.GrpcTransport`).
        layers: the Engram layers, in the order of ``hash_ids``' layer axis.
        max_tokens: most tokens one step looks up.
        device: where :meth:`rows` returns rows (a CUDA device, or the CPU).
        hasher: turns token ids into row ids, for ``prefetch(token_ids=...)``.
        row_format: the tables' packed rows (V4.1: 256 fp8 values + 8 scale bytes).
        num_shards, shard_rank: the tensor-parallel split of each layer's hash columns.
        num_slots: buffer sets in flight.
        stagger_gathers: with a transport that gathers on the device, ``prefetch`` queues only
            the first layer's gather (the lowest layer id); each later layer's is queued when
            :meth:`rows` of the layer before it is called, after the work queued so far. The
            forward's entry then spends the host time of one launch, not one per layer, and
            the later layers' gathers run beside the layers between instead of beside the
            first. ``hash_ids`` must then stay unchanged until the last layer's ``rows``. With
            a transport that foresees misses, a later layer's copy-up (host work) so waits
            until the layer before it is read.
        inline_min_tokens: with a transport that gathers on a GPU, a step of at least this many
            tokens gathers on the current stream, before the model's next kernels, instead of
            beside them on the side stream (never staggered); gathers ahead stay on the side.
            For large decode batches, whose GEMMs a kernel running beside them slows by more
            than the gather takes alone. None (default): always on the side stream.
        side_priority: CUDA priority of the side stream the gathers run on (lower is higher;
            ``torch.cuda.Stream``'s, clamped to the device's range). 0 (default): the same as
            a model's streams. A higher one (e.g. -1) has the GPU start a gather's programs
            before the model's waiting ones, meant to have the gather hold SMs for a moment
            rather than beside the model's kernels for its whole length (on the H200, with
            short programs, it gained nothing measurable: BENCHMARKS.md 10f).
        stage_min_tokens: with a transport that stages gathers (``MappedTransport``), a step of
            at least this many tokens is staged as a gather ahead is: the rows the VRAM tier
            lacks are copied up in bulk by the transport's thread (through the host: a kernel
            lists them, the host waits for that list) and the gather, from VRAM and that copy
            only, runs in :meth:`rows` on the reading stream; no kernel reads host memory
            beside the model's. :meth:`rows` blocks until the copy is queued, so it suits steps
            whose first Engram layer comes later than that round trip (~0.3-0.5 ms). Takes
            precedence over ``inline_min_tokens``; never staggered. ``hash_ids`` must stay
            unchanged until the step's last :meth:`rows`. None (default): never. On the H200 a
            decode step so staged ran at 0.45-0.67x the tok/s (the round trip took ~10 ms,
            BENCHMARKS.md 10g): for large steps only.
    """

    def __init__(
        self,
        transport: RowTransport,
        layers: Sequence[EngramLayer],
        *,
        max_tokens: int,
        device: torch.device | str = "cuda",
        hasher: NgramHasher | None = None,
        row_format: RowFormat = V41_ROWS,
        num_shards: int = 1,
        shard_rank: int = 0,
        num_slots: int = 2,
        stagger_gathers: bool = False,
        inline_min_tokens: int | None = None,
        side_priority: int = 0,
        stage_min_tokens: int | None = None,
    ):
        if not layers or len({layer.columns for layer in layers}) != 1:
            raise ValueError("give at least one layer, all with the same number of columns")
        if max_tokens < 1 or num_slots < 1:
            raise ValueError(f"max_tokens {max_tokens} and num_slots {num_slots} must be >= 1")
        self.transport = transport
        self.layers = tuple(layers)
        self.max_tokens = max_tokens
        self.device = torch.device(device)
        self.hasher = hasher
        self.row_format = row_format
        self.column_start, self.local_columns, self.part_columns = head_shard(
            self.layers[0].columns, num_shards, shard_rank
        )
        self._layer_index = {layer.layer_id: i for i, layer in enumerate(self.layers)}
        order = sorted(range(len(self.layers)), key=lambda i: self.layers[i].layer_id)
        #: Per layer index, the layer whose gather a staggered ``rows`` queues next.
        self._after = dict(zip(order, order[1:], strict=False))
        self._first = order[0]
        self._layer_bytes = max_tokens * self.local_columns * row_format.row_bytes
        self._cuda = self.device.type == "cuda"
        self._device_gather = bool(getattr(transport, "device_gather", False))
        cuda_gather = self._device_gather and self._cuda
        self._side = (
            torch.cuda.Stream(self.device, priority=side_priority) if cuda_gather else None
        )
        #: A transport's bulk-staged gather for a later step (``MappedTransport.gather_staged``).
        self._gather_staged = getattr(transport, "gather_staged", None)
        #: Host time spent hashing ``token_ids`` into row ids for gathers on the device, s.
        self.hash_seconds = 0.0
        #: A transport's gather whose misses the host foresees (``MappedTransport(
        #: predict_misses=True).gather_predicted``), for steps whose row ids are on the host.
        self._gather_predicted = (
            getattr(transport, "gather_predicted", None)
            if getattr(transport, "predict_misses", False)
            else None
        )
        #: Whether the transport fetches a gather's misses on the side stream and leaves the
        #: rest to where the rows are read (``MappedTransport(fetch_misses=True)``), and the
        #: scratch of those fetches per (slot, layer) (outgrown ones kept while graphs that
        #: captured them may replay).
        self._fetching = bool(getattr(transport, "fetch_misses", False)) and hasattr(
            transport, "fetch"
        )
        self._fetch_scratch: dict[tuple[int, int], FetchScratch] = {}
        self._outgrown_fetch_scratch: list[FetchScratch] = []
        #: Device gathers on a GPU: replay each slot and layer's gather as a CUDA graph once its
        #: buffers repeat (see ``_launch``).
        self.graph_gathers = cuda_gather
        self.stagger_gathers = stagger_gathers and self._device_gather
        self.inline_min_tokens = inline_min_tokens
        self.stage_min_tokens = stage_min_tokens
        self._graphs: dict[tuple[Any, ...], torch.cuda.CUDAGraph] = {}
        self._seen: set[tuple[Any, ...]] = set()
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engram-rows")
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._next_slot = 0
        self._latest: int | None = None
        try:
            for _ in range(num_slots):
                self._slots.append(self._make_slot())
        except BaseException:
            self.close()
            raise

    def _make_slot(self) -> _Slot:
        fmt = self.row_format
        n_layers = len(self.layers)
        if self._device_gather:  # rows land dequantized: no packed buffer
            buffer = RowBuffer(torch.empty(0, dtype=torch.uint8, device=self.device), None)
            packed = []
        else:
            buffer = self.transport.allocate(n_layers * self._layer_bytes, self.device)
            packed = [
                buffer.tensor[i * self._layer_bytes : (i + 1) * self._layer_bytes].view(
                    self.max_tokens, self.local_columns, fmt.row_bytes
                )
                for i in range(n_layers)
            ]
        out = [
            torch.zeros(
                self.max_tokens,
                self.part_columns,
                fmt.head_dim,
                dtype=torch.bfloat16,
                device=self.device,
            )
            for _ in range(n_layers)
        ]
        host_ids = torch.empty(
            (self.max_tokens, n_layers, self.local_columns),
            dtype=torch.int64,
            pin_memory=self._cuda,
        )
        done = _Resolved(error=RuntimeError("no rows were prefetched into this slot"))
        return _Slot(
            buffer=buffer,
            packed=packed,
            out=out,
            host_ids=host_ids,
            ids_ready=torch.cuda.Event() if self._cuda else None,
            consumed=[torch.cuda.Event() if self._cuda else None for _ in range(n_layers)],
            futures=[done] * n_layers,
            dead=[None] * n_layers,
            fetched_at=[None] * n_layers,
            done=[torch.cuda.Event(enable_timing=True) for _ in range(n_layers)]
            if self._device_gather and self._cuda
            else [],
            index=len(self._slots),
            deferred=[None] * n_layers,
            deferred_host=[None] * n_layers,
        )

    # -- the three calls ---------------------------------------------------------------------

    def prefetch(
        self,
        hash_ids: Any = None,
        *,
        token_ids: Any = None,
        context: Any = None,
        slot: int | None = None,
        out: Sequence[torch.Tensor] | None = None,
        ahead: bool = False,
        after: Any = None,
    ) -> int:
        """Starts fetching the rows of one step into a slot; returns the slot.

        Give either ``hash_ids`` (global row ids ``[tokens, layers, columns]``, int, -1 for a
        dead position; a torch tensor on any device or a numpy array) or raw ``token_ids
        [N, T]`` with their ``context [N, k]`` (see :meth:`NgramHasher.row_ids`), which need a
        ``hasher``. ``slot``: which buffer set (default: the next one in turn). A slot still
        holding rows of an earlier prefetch is reused once those are read on the device.
        ``out`` (a transport that gathers on the device only): per layer, the bf16 tensor
        ``[tokens, columns per rank, head_dim]`` the rows land in instead of the slot's, to be
        passed again to :meth:`rows` (which then copies nothing). ``ahead``: the rows are for a
        later step (a prefill's next chunk), so a transport that gathers on the device may take
        longer and leave more of the device to the model (short programs the GPU interleaves
        with the model's kernels; see :class:`MappedTransport`'s ``ahead_programs``); such a
        gather is never staggered nor captured as a graph. ``after`` (a transport that gathers on
        the device, on its side stream): a ``torch.cuda.Event`` recorded once ``hash_ids`` were
        made; the gather waits for it instead of for everything queued on the current stream, so
        an engine may queue its first layers before calling ``prefetch`` and the device runs
        them while this call's host work goes on (the rows still land beside those layers).
        """
        if (hash_ids is None) == (token_ids is None):
            raise ValueError("give hash_ids or token_ids, not both or neither")
        index = self._next_slot if slot is None else slot
        if not 0 <= index < len(self._slots):
            raise ValueError(f"slot {index} is not one of the {len(self._slots)} slots")
        s = self._slots[index]
        for future in s.futures:  # a step never read: let its lookups end before reusing
            if not future.done():
                concurrent.futures.wait([future])
        if out is not None and not self._device_gather:
            raise ValueError("prefetch(out=...) needs a transport that gathers on the device")
        if self._device_gather:
            self._gather_on_device(index, hash_ids, token_ids, context, out, ahead, after)
            with self._lock:
                self._latest = index
                self._next_slot = (index + 1) % len(self._slots)
            return index
        if hash_ids is not None:
            tokens = self._stage_hash_ids(s, hash_ids)
            ids_source: Any = None
        else:
            if self.hasher is None:
                raise ValueError("prefetch(token_ids=...) needs a hasher")
            token_ids = np.array(token_ids, dtype=np.int64, ndmin=2)
            tokens = token_ids.size
            ids_source = (token_ids, None if context is None else np.array(context, np.int64))
        if tokens > self.max_tokens:
            raise ValueError(f"{tokens} tokens exceed max_tokens {self.max_tokens}")
        s.num_tokens = tokens
        s.futures = [concurrent.futures.Future() for _ in self.layers]
        s.fetched_at = [None] * len(self.layers)
        self._worker.submit(self._fetch, s, ids_source)
        with self._lock:
            self._latest = index
            self._next_slot = (index + 1) % len(self._slots)
        return index

    def wait(self, layer: int | None = None, slot: int | None = None) -> None:
        """Blocks until the rows of ``layer`` (a model layer id; None: every layer) of ``slot``
        (default: the latest prefetch) are in its buffer; raises the lookup's error if any."""
        s = self._slot(slot)
        indices = range(len(self.layers)) if layer is None else [self._index(layer)]
        for i in indices:
            if s.deferred[i] is not None:
                self._queue_deferred(s, i)
            s.futures[i].result().wait()

    def rows(
        self, layer: int, slot: int | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Layer ``layer``'s rows of ``slot`` (default: the latest prefetch) as bf16
        ``[tokens, columns per rank, head_dim]`` on the device, after waiting for them.

        The dequantization is queued on the current stream; ``out`` (same shape) receives the
        rows instead of the slot's own buffer, which the next prefetch into this slot reuses.
        """
        s = self._slot(slot)
        i = self._index(layer)
        if s.deferred[i] is not None:  # staggered, and the layer before was not read
            self._queue_deferred(s, i)
        stream = torch.cuda.current_stream(self.device) if self._cuda else None
        pending = s.futures[i].result()
        n = s.num_tokens
        if out is not None:
            dst = out
        else:
            dst = s.target[i] if self._device_gather else s.out[i][:n]
        if tuple(dst.shape) != (n, self.part_columns, self.row_format.head_dim):
            raise ValueError(
                f"out must be [{n}, {self.part_columns}, {self.row_format.head_dim}], got "
                f"{tuple(dst.shape)}"
            )
        if isinstance(pending, FillOnRead) and stream is not None:
            # A gather whose kernel is left to the reader (MappedTransport's staged gathers
            # ahead): it runs here, on this stream, straight into dst (each time rows are read).
            pending.fill(dst, stream)
        elif self._device_gather:
            pending.wait(stream)
            if dst is not s.target[i]:
                dst.copy_(s.target[i])
        else:
            pending.wait(stream)
            dequantize(s.packed[i][:n], dst[:, : self.local_columns], self.row_format)
        if s.dead[i] is not None:
            dead = torch.from_numpy(s.dead[i]).to(self.device)
            dst[:, : self.local_columns].masked_fill_(dead.unsqueeze(-1), 0)
        if s.consumed[i] is not None:
            s.consumed[i].record(stream)
        after = self._after.get(i)
        if after is not None and s.deferred[after] is not None:
            self._queue_deferred(s, after)
        return dst

    def ready_event(self, layer: int, slot: int | None = None) -> torch.cuda.Event | None:
        """The CUDA event recorded when the rows of ``layer`` of ``slot`` are in place, for a
        transport that gathers on the device (timing enabled); None for the others."""
        s = self._slot(slot)
        future = s.futures[self._index(layer)]
        if not future.done() or future.exception() is not None:
            return None
        pending = future.result()
        return pending.event if isinstance(pending, KernelDone) else None

    def fetched_at(self, layer: int, slot: int | None = None) -> float | None:
        """``time.perf_counter()`` when the transport had handled the rows of ``layer`` of
        ``slot`` (default: the latest prefetch): written, for a transport whose ``submit``
        blocks until then; None while not yet. For timelines of a step."""
        return self._slot(slot).fetched_at[self._index(layer)]

    # -- internals ---------------------------------------------------------------------------

    def _slot(self, slot: int | None) -> _Slot:
        with self._lock:
            index = self._latest if slot is None else slot
        if index is None:
            raise RuntimeError("rows were never prefetched")
        return self._slots[index]

    def _index(self, layer: int) -> int:
        try:
            return self._layer_index[layer]
        except KeyError:
            known = sorted(self._layer_index)
            raise KeyError(f"layer {layer} is not one of this backend's layers {known}") from None

    def _gather_on_device(
        self,
        index: int,
        hash_ids: Any,
        token_ids: Any,
        context: Any,
        out: Any,
        ahead: bool,
        after: Any = None,
    ) -> None:
        """Queues each layer's gather kernel into slot ``index`` on the side stream (staggered:
        the first layer's only, the others kept for :meth:`rows`), after the work queued so far
        on the current stream (which made the ids), or only after event ``after``, and after
        the slot's last reads."""
        s = self._slots[index]
        if hash_ids is None:
            if self.hasher is None:
                raise ValueError("prefetch(token_ids=...) needs a hasher")
            started = time.perf_counter()
            token_ids = np.array(token_ids, dtype=np.int64, ndmin=2)
            ctx = None if context is None else np.array(context, np.int64)
            hash_ids = self.hasher.row_ids(token_ids, ctx).reshape(
                token_ids.size, len(self.layers), -1
            )
            self.hash_seconds += time.perf_counter() - started
        checked = self._checked_hash_ids(hash_ids)
        n = checked.shape[0]
        s.num_tokens = n
        s.dead = [None] * len(self.layers)
        if out is None:
            s.target = [o[:n] for o in s.out]
        else:
            if len(out) != len(self.layers) or any(
                tuple(o.shape) != (n, self.part_columns, self.row_format.head_dim) for o in out
            ):
                raise ValueError(
                    f"out must hold {len(self.layers)} tensors of "
                    f"[{n}, {self.part_columns}, {self.row_format.head_dim}]"
                )
            s.target = list(out)
        # A step whose misses the host foresees from its own ids (copied up at once, the
        # gather where the layer reads its rows: its ids move on the reading stream).
        predict = (
            self._side is not None
            and not ahead
            and self._gather_predicted is not None
            and not checked.is_cuda
        )
        # A step whose misses go through the host (as a gather ahead's do), not row by row.
        stage = not predict and (
            ahead
            or (
                self._side is not None
                and self.stage_min_tokens is not None
                and n >= self.stage_min_tokens
            )
        )
        inline = predict or (
            self._side is not None
            and not stage
            and self.inline_min_tokens is not None
            and n >= self.inline_min_tokens
        )
        stagger = self.stagger_gathers and not stage and (predict or not inline)
        not_queued = _Resolved(error=RuntimeError("this layer's gather was never queued"))
        s.futures = [not_queued] * len(self.layers)
        s.deferred = [None] * len(self.layers)
        s.deferred_host = [None] * len(self.layers)
        side = None if inline else self._side
        # Host ids go up from page-locked memory: from pageable memory the copy would make the
        # host wait for the work queued on its stream so far (an engine's first layers).
        moving = checked.pin_memory() if self._cuda and not checked.is_cuda else checked
        if side is not None and after is not None:
            # Behind ``after`` alone; ids that must move to the device move on the side stream.
            side.wait_event(after)
            with torch.cuda.stream(side):
                ids = moving.to(self.device, torch.int64, non_blocking=True)
        else:
            ids = moving.to(self.device, torch.int64, non_blocking=True)
            if side is not None:
                side.wait_stream(torch.cuda.current_stream(self.device))
        columns = slice(self.column_start, self.column_start + self.local_columns)
        local = ids[:, :, columns]
        host_local = checked[:, :, columns].numpy() if predict else None
        s.ids_keep = ids if stagger else None
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            for i in range(len(self.layers)):
                host_ids = None if host_local is None else host_local[:, i]
                if stagger and i != self._first:
                    s.deferred[i], s.deferred_host[i] = local[:, i], host_ids
                else:
                    s.futures[i] = self._queue_gather(
                        s, i, local[:, i], ahead, side, stage, host_ids
                    )
        if side is not None:  # keep the ids alive until the kernels have read them
            ids.record_stream(side)

    def _queue_gather(
        self, s: _Slot, i: int, layer_ids: torch.Tensor, ahead: bool, side: Any,
        stage: bool = False, host_ids: np.ndarray | None = None,
    ) -> _Resolved | concurrent.futures.Future[Pending]:  # fmt: skip
        """Layer ``i``'s gather into slot ``s`` on the current stream (``side``, the side stream,
        or, inline, None), after the slot's last reads of that layer; its outcome (the launch's
        error, if any). A gather to ``stage`` that the transport stages (``gather_staged``) is
        queued by the transport's thread: a Future of its outcome. With ``host_ids`` (the same
        ids on the host) a transport that foresees misses (``gather_predicted``) copies them up
        now and leaves the kernel to :meth:`rows`."""
        on = side
        if on is None and self._cuda:  # inline: the reading stream itself
            on = torch.cuda.current_stream(self.device)
        layer = self.layers[i]
        try:
            self.transport.check(layer.table)  # an earlier gather's row id past the end
            if on is not None and s.consumed[i] is not None:
                on.wait_event(s.consumed[i])
            if layer_ids.stride(-1) != 1:
                layer_ids = layer_ids.contiguous()
            if host_ids is not None and self._gather_predicted is not None:
                predicted = self._gather_predicted(
                    layer.table, host_ids, layer_ids, s.target[i], self.row_format, s.done[i]
                )
                if predicted is not None:  # the kernel is queued by rows
                    self.transport.record(layer.table, layer_ids)
                    return _Resolved(predicted)
            if stage and side is not None and self._gather_staged is not None:
                staged = self._gather_staged(
                    layer.table, layer_ids, s.target[i], self.row_format, s.done[i]
                )
                if staged is not None:  # queued by the transport's thread (a Future)
                    self.transport.record(layer.table, layer_ids)
                    return staged
            if (
                side is not None
                and not ahead
                and self._fetching
                and self.transport.can_fetch(layer.table, layer_ids.device)
            ):  # the misses read now, on the side stream; the rest by rows, where it reads
                scratch = self._scratch_for(s.index, i, layer_ids.numel())
                self._launch(s.index, i, layer.table, layer_ids, s.target[i], False, scratch)
                s.done[i].record(side)
                self.transport.record(layer.table, layer_ids)
                return _Resolved(
                    self.transport.fetched(
                        layer.table, layer_ids, s.target[i], self.row_format, s.done[i], scratch
                    )
                )
            self._launch(s.index, i, layer.table, layer_ids, s.target[i], ahead)
            self.transport.record(layer.table, layer_ids)
            if on is not None:
                s.done[i].record(on)
        except BaseException as e:
            return _Resolved(error=e)
        finally:
            s.fetched_at[i] = time.perf_counter()
        return _Resolved(KernelDone(s.done[i]) if on is not None else Done())

    def _queue_deferred(self, s: _Slot, i: int) -> None:
        """A staggered layer's gather, queued now: after everything queued on the current
        stream so far."""
        layer_ids, s.deferred[i] = s.deferred[i], None
        host_ids, s.deferred_host[i] = s.deferred_host[i], None
        assert layer_ids is not None
        side = self._side
        if side is None or host_ids is not None:  # the CPU, or misses foreseen: no side stream
            s.futures[i] = self._queue_gather(s, i, layer_ids, False, None, host_ids=host_ids)
            return
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            s.futures[i] = self._queue_gather(s, i, layer_ids, False, side)
        if s.ids_keep is not None:
            s.ids_keep.record_stream(side)

    def _scratch_for(self, slot: int, i: int, rows: int) -> FetchScratch:
        """The fetch scratch of ``slot``'s layer ``i``, for at least ``rows`` rows (allocated on
        the current stream; an outgrown one is kept while the graphs that may have captured it
        are)."""
        scratch = self._fetch_scratch.get((slot, i))
        if scratch is None or scratch.rows < rows:
            if scratch is not None:
                self._outgrown_fetch_scratch.append(scratch)
            scratch = FetchScratch.allocate(rows, self.row_format, self.device)
            self._fetch_scratch[(slot, i)] = scratch
        return scratch

    def _launch(
        self, slot: int, i: int, table: str, ids: torch.Tensor, target: torch.Tensor, ahead: bool,
        scratch: FetchScratch | None = None,
    ) -> None:  # fmt: skip
        """Layer ``i``'s gather kernel on the current (side) stream (with ``scratch``: only the
        kernels that fetch its misses into it, ``transport.fetch``). The second time the same
        slot and layer gather the same buffers (the same ids buffer and target, as an engine's
        static buffers are), the launch is captured as a CUDA graph, replayed from then on: one
        graph launch instead of a Triton launch's host work, which would delay the model's own
        launches behind it. A gather ``ahead`` (for a later step: its ids are new each time, and
        it has time) is never captured.

        The capture is begun and ended on the side stream alone: ``torch.cuda.graph`` would
        synchronize the whole device and empty the allocator's cache first, which in the middle
        of a model's step stalls it and makes its next allocations real ``cudaMalloc`` calls."""
        def launch() -> None:
            if scratch is not None:
                self.transport.fetch(table, ids, self.row_format, scratch)
            else:
                self.transport.gather(table, ids, target, self.row_format, ahead=ahead)

        if not self.graph_gathers or ahead:
            launch()
            return
        # Captured or replayed from here on: never ahead.
        key = (
            slot, i, table, ids.data_ptr(), tuple(ids.shape), tuple(ids.stride()),
            target.data_ptr(), tuple(target.shape), self.transport.graph_key(table, target),
            None if scratch is None else scratch.staged.data_ptr(),
        )  # fmt: skip
        graph = self._graphs.get(key)
        if graph is not None:
            graph.replay()
            return
        if key not in self._seen:  # first time: eager (Triton compiles and caches the kernel)
            if len(self._seen) >= 4 * MAX_GATHER_GRAPHS:
                self._seen.clear()
            self._seen.add(key)
            launch()
            return
        if len(self._graphs) >= MAX_GATHER_GRAPHS:  # buffers that keep changing: start over
            self._graphs.clear()
            self._seen.clear()
            self._outgrown_fetch_scratch.clear()
        graph = torch.cuda.CUDAGraph()
        # Captured on the side stream (an inline gather's stream may be the default stream,
        # where no capture can run), replayed on the caller's.
        with torch.cuda.stream(self._side) if self._side is not None else contextlib.nullcontext():
            graph.capture_begin(capture_error_mode="thread_local")
            try:
                launch()
            finally:
                graph.capture_end()
        self._graphs[key] = graph
        graph.replay()

    def _checked_hash_ids(self, hash_ids: Any) -> torch.Tensor:
        """``hash_ids`` as a tensor, checked to be ``[tokens <= max_tokens, layers, columns]``."""
        ids = (
            hash_ids
            if isinstance(hash_ids, torch.Tensor)
            else torch.from_numpy(np.asarray(hash_ids, dtype=np.int64))
        )
        if ids.dim() != 3 or ids.shape[1:] != (len(self.layers), self.layers[0].columns):
            raise ValueError(
                f"hash_ids must be [tokens, {len(self.layers)}, {self.layers[0].columns}], "
                f"got {tuple(ids.shape)}"
            )
        if ids.shape[0] > self.max_tokens:
            raise ValueError(f"{ids.shape[0]} tokens exceed max_tokens {self.max_tokens}")
        return ids

    def _stage_hash_ids(self, s: _Slot, hash_ids: Any) -> int:
        """Copies this rank's columns of ``hash_ids`` into the slot's host ids (from the device
        without blocking: the worker waits for the copy's event)."""
        ids = self._checked_hash_ids(hash_ids)
        n = ids.shape[0]
        local = ids[:, :, self.column_start : self.column_start + self.local_columns]
        if ids.is_cuda:
            s.host_ids[:n].copy_(local, non_blocking=True)
            s.ids_ready.record(torch.cuda.current_stream(ids.device))
        else:
            s.host_ids[:n].copy_(local)
        return n

    def _fetch(self, s: _Slot, token_source: tuple[np.ndarray, np.ndarray | None] | None) -> None:
        """Worker thread: row ids of every layer, then one transport submit per layer, in layer
        order; each layer's future gets its ``Pending`` (or the error)."""
        try:
            n = s.num_tokens
            if token_source is None:
                if s.ids_ready is not None:
                    s.ids_ready.synchronize()
                ids = s.host_ids[:n].numpy()
            else:
                all_ids = self.hasher.row_ids(*token_source).reshape(n, len(self.layers), -1)
                ids = all_ids[:, :, self.column_start : self.column_start + self.local_columns]
        except BaseException as e:
            for future in s.futures:
                future.set_exception(e)
            return
        for i, layer in enumerate(self.layers):
            try:
                if s.consumed[i] is not None:
                    s.consumed[i].synchronize()
                layer_ids = np.ascontiguousarray(ids[:, i])
                dead = layer_ids < 0
                s.dead[i] = dead if dead.any() else None
                if s.dead[i] is not None:
                    layer_ids[dead] = 0
                pending = self.transport.submit(
                    s.buffer, i * self._layer_bytes, layer.table, layer_ids.reshape(-1)
                )
                s.fetched_at[i] = time.perf_counter()
            except BaseException as e:
                s.futures[i].set_exception(e)
            else:
                s.futures[i].set_result(pending)

    def close(self) -> None:
        """Stops the worker and gives the slots' buffers back; safe to call twice."""
        self._worker.shutdown(wait=True)
        self._graphs.clear()
        slots, self._slots = self._slots, []
        for s in slots:
            if not self._device_gather:
                self.transport.release(s.buffer)

    def __enter__(self) -> EngramRowBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
