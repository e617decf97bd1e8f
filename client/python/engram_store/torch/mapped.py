"""Rows read by the worker's own kernel from the memory engram-store shares (``ShareTable``).

The server, on this host, keeps a table held whole in RAM as one shared-memory file (row ``r`` at
byte ``r * row_bytes``) and its VRAM tier in device memory it hands over as file descriptors on a
Unix socket (:func:`engram_store.torch.vmm.collect_shared`; CUDA IPC handles from servers before
that): the slot arena, two hash indexes (row id -> slot; the active one named by a control word),
and a tag per slot (the row id it holds). :class:`MappedTable` maps both into this process: the
file read-only and page-locked (``cudaHostRegister``, read-only), so a kernel reads it over UVA as
vLLM's pinned-table path does, and the device allocations (mapped at their own 2 MiB pages: over
CUDA IPC a random gather missed the GPU's TLB on every row, 19x slower, BENCHMARKS.md 10o).

:func:`~engram_store.torch.tiered.tiered_gather_dequantize` (:mod:`engram_store.torch.tiered`) is
one Triton kernel per lookup, on the caller's stream: per row it probes the active index; a row
found whose slot tag matches its id before and after the copy comes from VRAM, any other from
host memory over PCIe; then it dequantizes to bf16 as
:func:`engram_store.torch.rows.gather_dequantize` does. No request reaches the server, no other
process's kernel runs for the lookup: a decode step pays its PCIe reads for the misses only.
A gather for a later step (a prefill's next chunk) takes its misses another way
(:meth:`MappedTransport.gather_staged`): :func:`vram_misses` lists them, they are copied out of
the file in bulk and up in one transfer, and the kernel reads them from that copy
(:class:`StagedGather`, whose kernel the reader queues when it reads the rows). With
``predict_misses`` a gather for the current step goes so too, its misses foreseen on the host
from what the worker's earlier gathers found in VRAM (:meth:`MappedTransport.gather_predicted`,
:mod:`engram_store.torch.residency`), so no kernel reads host memory beside the model's.

:class:`MappedTransport` is the :class:`~engram_store.torch.transport.RowTransport` of it for
:class:`~engram_store.torch.EngramRowBackend` (``device_gather``: the backend hands it device ids
and output tensors). Since the server no longer sees the lookups, every ``record_every``-th
lookup's ids go to it as a ``Prefetch`` (which only counts them when every row is in RAM), so the
VRAM tier keeps following the traffic; the same thread follows new versions of the table (shares
the new one, swaps it in, closes the old one), which the server's retired-tier mark makes safe.

Correctness does not depend on timing alone: the server rewrites a freed slot or an index buffer
only ``grace_ms`` after it stopped referencing it, and a row whose tag does not match (a slot
rewritten under a preempted kernel) is read from host memory, which never changes for a version.
"""

from __future__ import annotations

import concurrent.futures
import copy
import ctypes
import itertools
import mmap
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from engram_store.torch.residency import ResidencyMap
from engram_store.torch.rows import (
    V41_ROWS,
    RowFormat,
    _CudaArray,
    cuda_view,
    triton,
)
from engram_store.torch.tiered import (
    DEFAULT_BLOCK_ROWS,
    UNCAPPED,
    FetchScratch,
    TieredRows,
    check_kernel_shape,
    fetch_misses,
    gather_fetched_rows,
    tiered_gather_dequantize,
    vram_misses,
)
from engram_store.torch.transport import (
    Done,
    FillOnRead,
    KernelDone,
    Pending,
    RowBuffer,
    RowTransport,
)
from engram_store.torch.vmm import SharedDeviceMemory, collect_shared

__all__ = ["FetchedGather", "MappedTable", "MappedTransport", "StagedGather"]

#: cudaHostRegisterPortable | cudaHostRegisterMapped | cudaHostRegisterReadOnly
_REGISTER_READ_ONLY = 1 | 2 | 8

#: Numbers of MappedTable instances, never reused (what captured gathers are keyed by).
_SERIALS = itertools.count()

#: Seconds between the recording thread's looks at a mapped table's version.
VERSION_CHECK_S = 1.0


#: What :meth:`MappedTransport.view` may change.
_VIEW_SETTINGS = {
    "max_programs",
    "record_every",
    "block_rows",
    "num_warps",
    "table_programs",
    "predict_misses",
    "copy_threads",
    "split_misses",
    "fetch_misses",
    "count_hits",
}

#: Fewest rows a foreseen copy-up splits over threads (fewer: the hand-off costs what the
#: split saves; 1,500 rows took the same with two threads on the dev machine, 4,500 half).
MIN_SPLIT_ROWS = 2048
#: Most ``copy_threads`` (the calling thread and the transport's copying threads).
MAX_COPY_THREADS = 16
#: The parts of :meth:`MappedTransport.gather_predicted`'s host time (``predict_seconds``).
PREDICT_PARTS = ("foresee", "take", "queue")


def _check_copy_threads(copy_threads: Any) -> None:
    """ValueError naming a ``copy_threads`` that is not an int from 1 to
    :data:`MAX_COPY_THREADS`."""
    if (
        isinstance(copy_threads, bool)
        or not isinstance(copy_threads, int)
        or not 1 <= copy_threads <= MAX_COPY_THREADS
    ):
        raise ValueError(
            f"copy_threads must be an int from 1 to {MAX_COPY_THREADS}, got {copy_threads!r}"
        )


def _checked_table_programs(table_programs: dict[str, int | None] | None) -> dict[str, int | None]:
    """``table_programs`` as a new dict; ValueError naming a cap that is not a positive int or
    None."""
    out = dict(table_programs or {})
    for table, cap in out.items():
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(
                f"table_programs[{table!r}] must be a positive int or None, got {cap!r}"
            )
    return out


def _copy_up(
    mapped: MappedTable, n: int, at: np.ndarray, row_ids: np.ndarray, device: torch.device,
    take: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Rows ``row_ids`` of ``mapped`` (int64, one per position ``at`` of a gather of ``n``
    rows) copied out of its host file into page-locked memory, and queued to go up to
    ``device`` on the current stream: ``staged`` ``[max(1, len(at)), row_bytes]`` (one row at
    least: a kernel argument is never an empty allocation) and ``stage_index`` int32 ``[n]``
    (the staged row of each position, -1 where none), for :func:`tiered_gather_dequantize`.
    The copy is torch's ``index_select`` (on torch's threads), or ``take(host, row_ids, out)``
    (numpy arrays; :func:`take_rows`): numpy's ``take`` copied 1,500 rows in ~0.1-0.2 ms where
    ``index_select`` took 7.5 ms on a host whose cores were busy (its threads waiting for
    them)."""
    index = torch.full((n,), -1, dtype=torch.int32, pin_memory=True)
    index.numpy()[at] = np.arange(at.size, dtype=np.int32)
    rows = torch.empty((max(1, at.size), mapped.row_bytes), dtype=torch.uint8, pin_memory=True)
    if take is not None:
        take(mapped.host_rows.numpy(), row_ids, rows.numpy()[: at.size])
    else:
        torch.index_select(mapped.host_rows, 0, torch.from_numpy(row_ids), out=rows[: at.size])
    return rows.to(device, non_blocking=True), index.to(device, non_blocking=True)


def take_rows(
    host: np.ndarray,
    row_ids: np.ndarray,
    out: np.ndarray,
    pool: concurrent.futures.Executor | None = None,
    parts: int = 1,
) -> None:
    """``out[k] = host[row_ids[k]]`` (numpy's ``take`` along rows), in ``parts`` contiguous
    pieces: the first on this thread, the others on ``pool`` at once (numpy releases the GIL
    while it copies), all done on return."""
    n = row_ids.size
    if pool is None or parts <= 1 or n < 2:
        np.take(host, row_ids, axis=0, out=out)
        return
    bounds = np.linspace(0, n, min(parts, n) + 1).astype(np.int64)
    pieces = [
        pool.submit(np.take, host, row_ids[a:b], 0, out[a:b])
        for a, b in zip(bounds[1:-1], bounds[2:], strict=True)
    ]
    np.take(host, row_ids[: bounds[1]], axis=0, out=out[: bounds[1]])
    for piece in pieces:
        piece.result()


# --- mapping what the server shares -------------------------------------------------------------


class _IpcHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * 64)]


def _libcuda() -> ctypes.CDLL:
    lib = ctypes.CDLL("libcuda.so.1")
    lib.cuIpcOpenMemHandle_v2.argtypes = [
        ctypes.POINTER(ctypes.c_uint64),
        _IpcHandle,
        ctypes.c_uint,
    ]
    lib.cuIpcCloseMemHandle.argtypes = [ctypes.c_uint64]
    return lib


def _cudart(call: str, *args: Any) -> None:
    err = getattr(torch.cuda.cudart(), call)(*args)
    code = int(getattr(err, "value", err))
    if code != 0:
        raise RuntimeError(f"{call} failed with CUDA error {code}")


def _grown_size(current: torch.Tensor | None, rows: int) -> int | None:
    """Entries of a per-gather scratch buffer that must hold ``rows``, given the ``current``
    one: None while it is large enough, else ``rows`` or twice its size if more (a buffer is
    replaced, never resized: graphs captured with the old one may still replay)."""
    if current is not None and current.numel() >= rows:
        return None
    return max(rows, 0 if current is None else 2 * current.numel())


def _with_index(device: torch.device) -> torch.device:
    """``device`` with its CUDA index filled in (the current device's when it has none)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class MappedTable:
    """One table version as the server shares it, mapped into this process on ``device``: on a
    CUDA device the host file page-locked for kernels and the VRAM tier opened; on the CPU the
    host file alone (``rows_view.host`` is then a read-only CPU tensor over it).

    Args:
        client: an :class:`engram_store.Client` of the server on this host (admin token if the
            server checks tokens).
        table: the table.
        device: the worker's device (a CUDA one: also the server's VRAM tier to use).
        row_format: the rows' format (its ``row_bytes`` must be the table's).
    """

    def __init__(
        self,
        client: Any,
        table: str,
        device: torch.device | str = "cuda",
        row_format: RowFormat = V41_ROWS,
    ):
        self.device = _with_index(torch.device(device))
        if self.device.type not in ("cuda", "cpu"):
            raise ValueError(f"MappedTable maps rows for a CUDA device or the CPU, not {device}")
        index = self.device.index if self.device.type == "cuda" else None
        shared = client.share_table(table, device=index)
        if shared.row_bytes != row_format.row_bytes:
            raise ValueError(
                f"table {table!r} has rows of {shared.row_bytes} B, not the format's "
                f"{row_format.row_bytes}"
            )
        self.table = table
        self.serial = next(_SERIALS)
        self.version = shared.version
        self.rows = shared.rows
        self.row_bytes = shared.row_bytes
        self._opened: list[int] = []
        self._imported: list[SharedDeviceMemory] = []
        self._registered: int | None = None
        self.host_rows: torch.Tensor | None = None
        # A page-locked int64 the tiered kernel writes a row id past the table's end to.
        self._errors_host: torch.Tensor | None = None
        self._errors: np.ndarray | None = None
        fd = os.open(shared.host_path, os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, shared.host_bytes, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        try:
            self._host_array = np.frombuffer(self._map, dtype=np.uint8)
            rows = self._host_array[: self.rows * self.row_bytes]
            with warnings.catch_warnings():  # read-only memory: nothing writes through it
                warnings.simplefilter("ignore", UserWarning)
                #: Every row, ``[rows, row_bytes]`` uint8, as a CPU tensor over the file.
                self.host_rows = torch.from_numpy(rows).view(self.rows, self.row_bytes)
            if index is None:
                self.rows_view = TieredRows(host=self.host_rows)
                return
            address = self._host_array.ctypes.data
            torch.cuda.set_device(self.device)
            _cudart("cudaHostRegister", address, self._map.size(), _REGISTER_READ_ONLY)
            self._registered = address
            host = torch.as_tensor(
                _CudaArray(address, (self.rows, self.row_bytes)), device=self.device
            )
            self.rows_view = TieredRows(host=host)
            if shared.HasField("vram"):
                self._open_vram(shared.vram)
        except BaseException:
            self.close()
            raise

    def _open_ipc(self, handle: bytes) -> int:
        """The address of an allocation a server before the file-descriptor handoff exported as
        a CUDA IPC handle, opened here (closed by :meth:`close`)."""
        h = _IpcHandle()
        ctypes.memmove(ctypes.addressof(h), handle, 64)
        ptr = ctypes.c_uint64()
        rc = _libcuda().cuIpcOpenMemHandle_v2(ctypes.byref(ptr), h, 1)
        if rc != 0:
            raise RuntimeError(f"cuIpcOpenMemHandle failed with CUDA error {rc}")
        self._opened.append(ptr.value)
        return ptr.value

    def _open_vram(self, v: Any) -> None:
        capacity, buckets = int(v.capacity), int(v.buckets)
        if v.fd_socket:  # the allocations handed over as file descriptors
            index = self.device.index or 0
            self._imported = collect_shared(v.fd_socket, v.fd_token, list(v.fd_bytes), index)
            if len(self._imported) != 5:
                raise RuntimeError(f"the server shared {len(self._imported)} buffers, not 5")
            addresses = [m.ptr for m in self._imported]
        else:
            handles = (v.arena, v.index_keys, v.index_slots, v.tags, v.control)
            addresses = [self._open_ipc(h) for h in handles]

        def view(ptr: int, count: int, typestr: str) -> torch.Tensor:
            return torch.as_tensor(_CudaArray(ptr, (count,), typestr), device=self.device)

        self._errors_host = torch.zeros(8, dtype=torch.uint8, pin_memory=True)
        self._errors = self._errors_host.numpy().view(np.int64)
        errors = torch.as_tensor(
            _CudaArray(self._errors_host.data_ptr(), (1,), "<i8"), device=self.device
        )
        arena = view(addresses[0], capacity * self.row_bytes, "|u1")
        self.rows_view = TieredRows(
            host=self.rows_view.host,
            arena=arena.view(capacity, self.row_bytes),
            keys=view(addresses[1], 2 * buckets, "<i8"),
            slots=view(addresses[2], 2 * buckets, "<i4"),
            tags=view(addresses[3], capacity, "<i8"),
            control=view(addresses[4], 16, "<i4"),
            buckets=buckets,
            errors=errors,
        )
        self.grace_ms = int(v.grace_ms)

    def take_error(self) -> int | None:
        """A row id past the table's end that a gather over :attr:`rows_view` was given since the
        last call (that position got a zero row), cleared; None if none (or no VRAM tier: the
        gather without one does not check)."""
        flag = self._errors
        if flag is None or flag[0] == 0:
            return None
        bad, flag[0] = int(flag[0]), 0
        return bad

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (its rows are no longer mapped here)."""
        return getattr(self, "rows_view", None) is None

    def close(self) -> None:
        """Unmaps everything; safe to call twice. No kernel may still read the table."""
        if self._opened or self._imported:
            torch.cuda.synchronize(self.device)
            lib = _libcuda()
            for ptr in self._opened:
                lib.cuIpcCloseMemHandle(ptr)
            self._opened = []
            for memory in self._imported:
                memory.close()
            self._imported = []
        if self._registered is not None:
            torch.cuda.synchronize(self.device)
            _cudart("cudaHostUnregister", self._registered)
            self._registered = None
        self.rows_view = None  # type: ignore[assignment]
        self.host_rows = None  # type: ignore[assignment]
        self._errors = None
        self._host_array = None
        if getattr(self, "_map", None) is not None:
            try:
                self._map.close()
            except BufferError:  # a tensor over the rows is still alive: closed when it goes
                pass
            self._map = None


class StagedGather(FillOnRead):
    """A gather whose misses were copied up (by :meth:`MappedTransport.gather_staged` or
    :meth:`MappedTransport.gather_predicted`; ``event`` recorded once they are on the device),
    waiting for its kernel: :meth:`fill` queues it on the stream that reads the rows, straight
    into the tensor it reads (where the model runs it alone, as a gather from VRAM tables is
    run, instead of beside the model's kernels). With ``hits`` (uint8, page-locked), each fill
    writes there which rows came from VRAM and hands ``report`` an event recorded after it."""

    def __init__(
        self, event: torch.cuda.Event, mapped: MappedTable, ids: torch.Tensor,
        staged: torch.Tensor, stage_index: torch.Tensor, target: torch.Tensor, fmt: RowFormat,
        hits: torch.Tensor | None = None,
        report: Callable[[torch.cuda.Event], None] | None = None,
        programs: int | None = None,
    ):  # fmt: skip
        super().__init__(event)
        #: The fill's grid cap when :meth:`fill` is given none (None: one program per SM).
        self.programs = programs
        self.mapped, self.ids, self.target, self.fmt = mapped, ids, target, fmt
        self.staged, self.stage_index = staged, stage_index
        self.hits = hits
        self._hits_view = None if hits is None else cuda_view(hits)
        self.report = report

    def fill(
        self, dst: torch.Tensor, stream: torch.cuda.Stream, max_programs: int | None = None
    ) -> None:
        """Queues the gather into ``dst`` on ``stream``: rows the VRAM tier holds now from VRAM,
        the others from the staged copy (or, dropped from the tier since, over PCIe). If the
        table's mapping was closed since (a new version swapped in), it raises: the staged rows
        are the old version's."""
        if self.mapped.closed:
            raise RuntimeError(
                f"table {self.mapped.table!r} version {self.mapped.version} was unmapped before "
                "its staged rows were read (a new version came in): prefetch them again"
            )
        stream.wait_event(self.event)
        if max_programs is None:
            max_programs = self.programs
        with torch.cuda.stream(stream):
            self._gather(dst, max_programs)
        for t in (self.ids, self.staged, self.stage_index, dst):
            t.record_stream(stream)
        if self.report is not None:
            filled = torch.cuda.Event()
            filled.record(stream)
            self.report(filled)

    def _gather(self, dst: torch.Tensor, max_programs: int | None) -> None:
        """The gather kernel, on the current stream."""
        tiered_gather_dequantize(self.mapped.rows_view, self.ids, dst, self.fmt,
                                 max_programs=max_programs, staged=self.staged,
                                 stage_index=self.stage_index, hits=self._hits_view)  # fmt: skip

    def wait(self, stream: torch.cuda.Stream | None = None) -> None:
        """Fills the gather's own target on ``stream`` (None: on the current stream, then waits
        for it on the host)."""
        on = stream if stream is not None else torch.cuda.current_stream(self.target.device)
        self.fill(self.target, on)
        if stream is None:
            on.synchronize()


class FetchedGather(StagedGather):
    """A gather whose misses :meth:`MappedTransport.fetch` read into device memory and whose
    index positions it noted (``stage_index``: a fetched row's place in ``staged``, or the slot
    of a row the tier held), waiting for the kernel that gathers the rest:
    :func:`~engram_store.torch.tiered.gather_fetched_rows`, which reads the tier's rows from
    their slots without probing the index again."""

    def _gather(self, dst: torch.Tensor, max_programs: int | None) -> None:
        gather_fetched_rows(self.mapped.rows_view, self.ids, dst, self.staged, self.stage_index,
                            self.fmt, max_programs=max_programs)  # fmt: skip


class MappedTransport(RowTransport):
    """Rows gathered by this process's own kernel from what the server shares (see the module
    doc): :meth:`gather` queues the kernel on the current stream, writing bf16 rows straight into
    the caller's tensor (on the CPU: the rows are read from the shared file at once). For
    :class:`~engram_store.torch.EngramRowBackend`.

    Args:
        client: an :class:`engram_store.Client` (or an address) of a server on this host started
            with ``--share-memory``.
        record_every: every this many gathers of a table, its ids go to the server as a
            ``Prefetch`` so its VRAM tier follows the traffic, and the recording thread looks
            (at most once a second) for a new version of the table to map (0: never, and new
            versions are not followed: the old one's rows keep being read from its file).
        max_programs: cap on the kernel's grid (None: every SM); a lookup beside the model on a
            side stream may leave SMs to it. On an H200 (132 SMs) 16 programs measured best
            beside a decode step (BENCHMARKS.md 10g: 1-2% more tok/s than 66 or uncapped): the
            misses' PCIe reads then hold few SMs while the rows still land well before layer 1.
        ahead_programs: cap on the grid of a gather for a later step (``prefetch(ahead=True)``:
            a prefill's next chunk, which has the whole of this chunk to land). None (default):
            no cap, one short program per block of rows. A capped grid's programs loop over the
            blocks and hold their SMs for the whole gather, and a GEMM of the model's that wants
            those SMs waits for them; short programs free them as they end, so the block
            scheduler interleaves the gather with the model's work instead.
        stage_ahead: how a gather for a later step goes on a GPU with the VRAM tier mapped.
            ``"inline"`` (default): through :meth:`gather_staged`, its misses copied from the
            host file in bulk by the copy engine, and its kernel left for the reading stream
            (:class:`StagedGather`: run where the rows are read, alone, not beside the model's
            kernels, whose waves a kernel beside them breaks up). ``"side"``: the same, the
            kernel on the transport's stream as soon as the copy is up. ``"off"``: read row by
            row over PCIe by one kernel, as the other gathers.
        block_rows, num_warps: the gather kernel's rows per block (a power of two, default
            16) and warps per program (1, 2, 4, 8 or 16; default 4), for :meth:`gather`'s
            direct gathers (:func:`tiered_gather_dequantize`): a smaller program holds fewer
            registers on its SM beside the model's kernels.
        table_programs: per table, a grid cap of its own for :meth:`gather`'s direct gathers in
            place of ``max_programs`` (a positive int, or None: every SM). A later Engram
            layer's rows are needed layers after the first's: its gather can hold fewer SMs
            for longer, the first layer's more for a shorter time.
        predict_misses: the backend's gathers for the current step go through
            :meth:`gather_predicted` when it has the step's row ids on the host: the misses
            foreseen there (:class:`~engram_store.torch.residency.ResidencyMap`, one byte of
            host memory per table row) are copied up by the copy engine at ``prefetch`` and the
            gather runs, from VRAM and that copy, where the layer reads its rows. Default off:
            on the H200 it ran at 0.79-0.86x the default's decode tok/s (BENCHMARKS.md 10l; ~1
            ms of host work a layer before its gather can go, see ``predict_seconds``).
        copy_threads: threads that copy a foreseen copy-up of at least :data:`MIN_SPLIT_ROWS`
            rows out of the host file (numpy releases the GIL while it copies; the calling
            thread is one of them; 1 to :data:`MAX_COPY_THREADS`). Default 1: on the dev
            machine two threads halved a copy of 4,500 rows but gained nothing on a decode-256
            layer's ~2,200 (``benches/e2e/foresee_cost.py``); an A/B knob for bigger hosts.
        split_misses: :meth:`gather` runs as two kernels where the table has a VRAM tier (see
            :func:`tiered_gather_dequantize`'s ``split``): the tier's rows, listing the others,
            on one short program per block (every SM for the moment it lasts, as a gather of
            tables in VRAM), then those from host memory on the capped grid, so only blocks of
            misses wait on PCIe reads and hold their SMs beside the model meanwhile. Scratch:
            a 4-byte list entry per row of the largest gather, per table and device. Default
            off (not yet measured on a GPU).
        fetch_misses: the backend's gathers for the current step on its side stream fetch
            their misses ahead (:meth:`fetch`, :meth:`fetched`; :meth:`gather_fetched` for a
            caller of its own): at ``prefetch`` two kernels there list the rows the VRAM
            tier lacks and read them over PCIe into device memory (on the capped grid, as the
            default's gathers; no host work, unlike ``predict_misses``), and the gather of the
            rest, from VRAM only, runs where the layer reads its rows, on one short program per
            block (every SM for the moment it lasts, as a gather of tables in VRAM, never
            beside the model's kernels). Scratch: a row's packed bytes and 12 bytes per row of
            a gather, the backend's per slot and layer. ``hash_ids`` must stay unchanged until
            the step's last ``rows``. Default off (not yet measured on a GPU). Takes precedence
            over ``split_misses`` for those gathers.
        count_hits: :meth:`gather`'s kernels also flag each row they read from the VRAM tier
            (a byte a row, device memory) and add the flags up on the device, per table and
            device: :meth:`take_vram_hits` reads the sums. The server counts no lookup this
            transport makes (the worker reads the tier itself), so this is how a worker learns
            what share of its rows the tier gave it. Costs three small kernels a gather (the
            sum and two adds), captured with it in a graph; not for split gathers (which flag
            nothing). Default off.
    """

    name = "mapped"
    #: The backend passes device ids and output tensors to :meth:`gather` instead of submitting.
    device_gather = True

    def __init__(
        self,
        client: Any,
        record_every: int = 32,
        max_programs: int | None = None,
        ahead_programs: int | None = None,
        stage_ahead: str = "inline",
        block_rows: int = DEFAULT_BLOCK_ROWS,
        num_warps: int = 4,
        table_programs: dict[str, int | None] | None = None,
        predict_misses: bool = False,
        copy_threads: int = 1,
        split_misses: bool = False,
        fetch_misses: bool = False,
        count_hits: bool = False,
    ):
        from engram_store.client import Client

        check_kernel_shape(block_rows, num_warps)
        table_programs = _checked_table_programs(table_programs)

        self._owns_client = isinstance(client, str)
        self.client = Client(client) if isinstance(client, str) else client
        self.record_every = record_every
        self.max_programs = max_programs
        self.ahead_programs = ahead_programs
        if stage_ahead not in ("inline", "side", "off"):
            raise ValueError(f"stage_ahead must be inline, side or off, not {stage_ahead!r}")
        self.stage_ahead = stage_ahead
        self.block_rows = block_rows
        self.num_warps = num_warps
        self.table_programs = table_programs
        self.predict_misses = predict_misses
        _check_copy_threads(copy_threads)
        self.copy_threads = copy_threads
        self.split_misses = split_misses
        self.fetch_misses = fetch_misses
        self.count_hits = count_hits
        #: Per table and device (``count_hits``): the gathers' hit flags, and int64 [rows read
        #: from the VRAM tier, rows gathered] on the device (this transport's or view's own).
        self._hit_counts: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._outgrown_flags: list[torch.Tensor] = []
        #: Per table and device, the split gathers' miss list and count (``split_misses``).
        self._split_scratch: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._outgrown_scratch: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._copiers: concurrent.futures.ThreadPoolExecutor | None = None
        self._stager = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engram-stage")
        self._stage_streams: dict[torch.device, torch.cuda.Stream] = {}
        self._copy_streams: dict[torch.device, torch.cuda.Stream] = {}
        #: Gathers that went through :meth:`gather_staged`, and the rows they copied up.
        self.staged_gathers = 0
        self.staged_rows = 0
        #: :meth:`gather_predicted`'s calls and their host time in seconds, by part: foreseeing
        #: the misses, copying them out of the host file, allocating and queueing the rest
        #: (this transport's or view's own).
        self.predicted_gathers = 0
        self.predict_seconds = dict.fromkeys(PREDICT_PARTS, 0.0)
        #: Per table and device, the mapping's serial and what :meth:`gather_predicted` knows
        #: of its VRAM tier (a new version's mapping starts afresh).
        self._residency: dict[tuple[str, str], tuple[int, ResidencyMap]] = {}
        self._tables: dict[tuple[str, str], MappedTable] = {}
        self._gathers: dict[str, int] = {}
        self._recording: dict[str, concurrent.futures.Future[None]] = {}
        self._recorder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engram-rec")
        self._version_checked: dict[str, float] = {}
        #: The transport this one is a view of (:meth:`with_programs`), else None.
        self._view_of: MappedTransport | None = None

    def table(self, table: str, device: torch.device) -> MappedTable:
        """The table mapped on ``device`` (shared and mapped on first use)."""
        device = _with_index(device)
        key = (table, str(device))
        if key not in self._tables:
            self._tables[key] = MappedTable(self.client, table, device)
        return self._tables[key]

    def with_programs(self, max_programs: int | None) -> MappedTransport:
        """A view of this transport whose gathers run on a grid of ``max_programs`` (None: every
        SM); see :meth:`view`."""
        return self.view(max_programs=max_programs)

    def view(self, **settings: Any) -> MappedTransport:
        """A view of this transport with some of its settings changed (``max_programs``,
        ``record_every``, ``block_rows``, ``num_warps``, ``table_programs``,
        ``predict_misses``, ``copy_threads``, ``split_misses``, ``fetch_misses``): it shares this
        one's mappings, threads, client and recording state (an A/B of a setting in one process
        needs no second mapping). Close this transport, not the view: the view's own
        :meth:`close` does nothing."""
        unknown = sorted(set(settings) - _VIEW_SETTINGS)
        if unknown:
            raise TypeError(f"MappedTransport.view: no setting {', '.join(unknown)}")
        check_kernel_shape(
            settings.get("block_rows", self.block_rows), settings.get("num_warps", self.num_warps)
        )
        if "table_programs" in settings:
            settings["table_programs"] = _checked_table_programs(settings["table_programs"])
        if "copy_threads" in settings:
            _check_copy_threads(settings["copy_threads"])
        view = copy.copy(self)
        for name, value in settings.items():
            setattr(view, name, value)
        view._view_of = self
        view._hit_counts = {}
        view._outgrown_flags = []
        view.predicted_gathers = 0
        view.predict_seconds = dict.fromkeys(PREDICT_PARTS, 0.0)
        return view

    def gather(
        self,
        table: str,
        ids: torch.Tensor,
        out: torch.Tensor,
        fmt: RowFormat,
        *,
        ahead: bool = False,
    ) -> None:
        """Queues ``out[t, h] = dequantize(row ids[t, h] of table)`` on the current stream
        (ids int64 ``[T, heads]`` on ``out``'s device, -1: a zero row): one kernel launch and
        nothing else, so it can be captured in a CUDA graph. ``ahead``: for a later step, on
        the grid of ``ahead_programs`` (uncapped by default). A row id past the table's end gets a
        zero row, reported by :meth:`check`."""
        mapped = self.table(table, out.device)
        split = None
        tiered = out.is_cuda and mapped.rows_view.arena is not None
        if self.split_misses and tiered:
            split = self._scratch(table, out.device, ids.numel())
        flags = counts = None
        if self.count_hits and tiered and split is None:
            flags, counts = self._hit_flags(table, out.device, ids.numel())
        tiered_gather_dequantize(
            mapped.rows_view, ids, out, fmt, max_programs=self.programs_for(table, ahead),
            block_rows=self.block_rows, num_warps=self.num_warps, split=split, hits=flags,
        )  # fmt: skip
        if counts is not None:
            n = ids.numel()
            counts[0].add_(flags[:n].sum(dtype=torch.int64))
            counts[1].add_(n)

    def _hit_flags(
        self, table: str, device: torch.device, rows: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``count_hits``: the hit flags (at least ``rows`` bytes) and the counts of ``table``
        on ``device``. Flags outgrown by a larger gather are kept (graphs captured with them
        may still replay); the counts never move."""
        key = (table, str(device))
        entry = self._hit_counts.get(key)
        size = _grown_size(None if entry is None else entry[0], rows)
        if size is not None:
            if entry is not None:  # graphs captured with them may still replay: kept alive
                self._outgrown_flags.append(entry[0])
            counts = torch.zeros(2, dtype=torch.int64, device=device) if entry is None else entry[1]
            entry = (torch.zeros(size, dtype=torch.uint8, device=device), counts)
            self._hit_counts[key] = entry
        return entry

    def take_vram_hits(self) -> tuple[int, int]:
        """``count_hits``: the rows this transport's (or view's) gathers read from the VRAM
        tier and the positions they gathered (dead ones, -1, included), over every table and
        device since the last call, which zeroes them; waits for the devices' queued work."""
        hits = rows = 0
        for _, counts in self._hit_counts.values():
            h, r = counts.tolist()
            counts.zero_()
            hits, rows = hits + h, rows + r
        return hits, rows

    def _scratch(
        self, table: str, device: torch.device, rows: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The split gathers' miss list (at least ``rows`` entries) and count for ``table`` on
        ``device``, shared with this transport's views: one table's gathers run one after
        another on a stream, and its graphs replay them so. A list outgrown by a larger gather
        is kept (at most doubling each time): graphs captured with it may still replay."""
        owner = self._view_of or self
        key = (table, str(device))
        scratch = owner._split_scratch.get(key)
        size = _grown_size(None if scratch is None else scratch[0], rows)
        if size is not None:
            if scratch is not None:  # graphs captured with it may still replay: kept alive
                owner._outgrown_scratch.append(scratch)
            scratch = (
                torch.empty(size, dtype=torch.int32, device=device),
                torch.zeros(1, dtype=torch.int32, device=device),
            )
            owner._split_scratch[key] = scratch
        return scratch

    def programs_for(self, table: str, ahead: bool = False) -> int | None:
        """The grid cap of :meth:`gather` for ``table`` (None: every SM): ``ahead_programs``
        (uncapped when None) for a gather ahead, else the table's own in ``table_programs``,
        else ``max_programs``."""
        if ahead:
            return UNCAPPED if self.ahead_programs is None else self.ahead_programs
        if table in self.table_programs:
            return self.table_programs[table]
        return self.max_programs

    def can_fetch(self, table: str, device: torch.device) -> bool:
        """Whether gathers of ``table`` on ``device`` can fetch their misses ahead
        (:meth:`fetch`): a CUDA device, Triton, and a VRAM tier shared for the table."""
        if device.type != "cuda" or triton is None:
            return False
        return self.table(table, device).rows_view.arena is not None

    def fetch(self, table: str, ids: torch.Tensor, fmt: RowFormat, scratch: FetchScratch) -> None:
        """Queues :func:`~engram_store.torch.tiered.fetch_misses` for ``ids`` on the current
        stream, into ``scratch``: the rows the VRAM tier does not hold read over PCIe into it,
        on this table's grid cap. Kernel launches and nothing else (no allocation), so it can be
        captured in a CUDA graph. Needs :meth:`can_fetch`."""
        mapped = self.table(table, ids.device)
        fetch_misses(
            mapped.rows_view, ids, fmt, scratch=scratch, max_programs=self.programs_for(table),
            block_rows=self.block_rows, num_warps=self.num_warps,
        )  # fmt: skip

    def fetched(
        self, table: str, ids: torch.Tensor, out: torch.Tensor, fmt: RowFormat,
        done: torch.cuda.Event, scratch: FetchScratch,
    ) -> FetchedGather:  # fmt: skip
        """The rest of a gather whose misses :meth:`fetch` queued into ``scratch`` (``done``
        recorded after it): a :class:`FetchedGather` whose ``fill`` gathers the tier's rows from
        their slots in VRAM, the fetched ones from ``scratch``, on the reading stream, one
        short program per block."""
        return FetchedGather(
            done, self.table(table, out.device), ids, scratch.staged, scratch.stage_index, out,
            fmt, programs=UNCAPPED,
        )  # fmt: skip

    def gather_fetched(
        self, table: str, ids: torch.Tensor, out: torch.Tensor, fmt: RowFormat,
        done: torch.cuda.Event,
    ) -> FetchedGather | None:  # fmt: skip
        """A gather for the current step into ``out`` whose misses are read now and the rest
        where the rows are read (``fetch_misses``), with scratch of its own: :meth:`fetch` on
        the current stream, then ``done`` recorded, and :meth:`fetched`'s gather returned; or
        None where there is nothing to fetch ahead (not :meth:`can_fetch`): gather it with
        :meth:`gather` instead. (The backend keeps scratch per slot and layer, and replays the
        fetch as a CUDA graph.)"""
        if not self.can_fetch(table, out.device):
            return None
        scratch = FetchScratch.allocate(ids.numel(), fmt, out.device)
        self.fetch(table, ids, fmt, scratch)
        done.record()
        return self.fetched(table, ids, out, fmt, done, scratch)

    def gather_staged(
        self, table: str, ids: torch.Tensor, out: torch.Tensor, fmt: RowFormat,
        done: torch.cuda.Event,
    ) -> concurrent.futures.Future[Pending] | None:  # fmt: skip
        """A gather for a later step (a prefill's next chunk) into ``out``, in moves on a stream
        of the transport's after the work queued so far on the current stream (which made
        ``ids``): a kernel lists the rows the VRAM tier does not hold (:func:`vram_misses`); the
        transport's thread waits for that list, copies those rows out of the host file into
        page-locked memory (``index_select``, the GIL released) and has the copy engine take
        them up in one transfer, then records ``done``. The gather itself (the tier's rows from
        VRAM, the others from that copy: :func:`tiered_gather_dequantize` with ``staged``) is
        left to the reader (``stage_ahead="inline"``: the future's result is a
        :class:`StagedGather`, whose ``wait(stream)`` or ``fill(dst, stream)`` queues it) or
        queued on the transport's stream at once (``"side"``: a :class:`KernelDone`, ``done``
        recorded after the kernel). Returns at once: a future of that result, there once those
        moves are queued, or None when this table cannot be staged here (no VRAM tier, the CPU,
        ``stage_ahead="off"``): gather it with :meth:`gather` instead."""
        if self.stage_ahead == "off" or not out.is_cuda or triton is None:
            return None
        mapped = self.table(table, out.device)
        if mapped.rows_view.arena is None:
            return None
        ready = torch.cuda.Event()
        ready.record()
        return self._stager.submit(self._stage, table, ids, out, fmt, ready, done)

    def _stage(
        self, table: str, ids: torch.Tensor, out: torch.Tensor, fmt: RowFormat,
        ready: torch.cuda.Event, done: torch.cuda.Event,
    ) -> Pending:  # fmt: skip
        """The transport's thread: :meth:`gather_staged`'s moves, queued on its stream."""
        device = out.device
        stream = self._stage_streams.get(device)
        if stream is None:
            stream = self._stage_streams[device] = torch.cuda.Stream(device)
        mapped = self.table(table, device)  # the latest version's mapping
        n = ids.numel()
        with torch.cuda.stream(stream):
            stream.wait_event(ready)
            misses = torch.empty(n, dtype=torch.int64, device=device)
            vram_misses(mapped.rows_view, ids, misses)
            listed = torch.empty(n, dtype=torch.int64, pin_memory=True)
            listed.copy_(misses, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(stream)
            copied.synchronize()
            miss = listed.numpy()
            at = np.flatnonzero(miss >= 0)
            staged, stage_index = _copy_up(mapped, n, at, miss[at], device)
            self.staged_gathers += 1
            self.staged_rows += int(at.size)
            done.record(stream)
            ids.record_stream(stream)  # (the copies were allocated on this stream)
        gather = StagedGather(done, mapped, ids, staged, stage_index, out, fmt)
        if self.stage_ahead == "side":  # the kernel now, here; `done` again after it
            programs = UNCAPPED if self.ahead_programs is None else self.ahead_programs
            gather.fill(out, stream, max_programs=programs)
            done.record(stream)
            return KernelDone(done)
        return gather

    def gather_predicted(
        self, table: str, host_ids: np.ndarray, ids: torch.Tensor, out: torch.Tensor,
        fmt: RowFormat, done: torch.cuda.Event,
    ) -> StagedGather | None:  # fmt: skip
        """A gather for the current step whose misses this worker foresees (``predict_misses``):
        of ``host_ids`` (the same row ids as ``ids``, on the host), the rows not known to be in
        the VRAM tier (:class:`~engram_store.torch.residency.ResidencyMap`) are copied out of the
        host file into page-locked memory here, on the calling thread alone, and queued to go up on
        a stream of the transport's (the copy engine's, beside whatever the device runs);
        ``done`` is recorded once they are up. Returns the :class:`StagedGather` whose
        :meth:`~StagedGather.fill` queues the kernel where the rows are read (from VRAM and
        that copy; a row the tier dropped since, over PCIe), reporting which rows came from
        VRAM for the next foresight; or None where this table cannot be gathered so (no VRAM
        tier, the CPU, no Triton): gather it with :meth:`gather` instead."""
        if not out.is_cuda or triton is None:
            return None
        mapped = self.table(table, out.device)
        if mapped.rows_view.arena is None:
            return None
        flat = np.ascontiguousarray(host_ids, dtype=np.int64).reshape(-1)
        if flat.size != ids.numel():
            raise ValueError(
                f"host_ids has {flat.size} row ids, the device ids {ids.numel()}: give the same"
            )
        key = (table, str(mapped.device))
        known = self._residency.get(key)
        if known is None or known[0] != mapped.serial:
            known = self._residency[key] = (mapped.serial, ResidencyMap(mapped.rows))
        residency = known[1]
        started = time.perf_counter()
        misses = residency.foresee(flat)
        at = np.flatnonzero(misses)
        foreseen = time.perf_counter()
        taking = self.predict_seconds["take"]
        device = out.device
        stream = self._copy_streams.get(device)
        if stream is None:
            stream = self._copy_streams[device] = torch.cuda.Stream(device)
        with torch.cuda.stream(stream):
            staged, stage_index = _copy_up(
                mapped, flat.size, at, flat[at], device, take=self._take_rows
            )
            done.record(stream)
        hits = torch.empty(flat.size, dtype=torch.uint8, pin_memory=True)
        took = self.predict_seconds["take"] - taking
        self.predicted_gathers += 1
        self.predict_seconds["foresee"] += foreseen - started
        self.predict_seconds["queue"] += time.perf_counter() - foreseen - took

        def report(filled: torch.cuda.Event) -> None:
            residency.expect(flat, misses, hits, filled)

        return StagedGather(done, mapped, ids, staged, stage_index, out, fmt, hits, report)

    def _take_rows(self, host: np.ndarray, row_ids: np.ndarray, out: np.ndarray) -> None:
        """``out[k] = host[row_ids[k]]``, in ``copy_threads`` parts when there are enough rows:
        the first on this thread, the others on the transport's copying threads."""
        parts = self.copy_threads if row_ids.size >= MIN_SPLIT_ROWS else 1
        owner = self._view_of or self  # views share the transport's threads
        if parts > 1 and owner._copiers is None:
            owner._copiers = concurrent.futures.ThreadPoolExecutor(
                MAX_COPY_THREADS - 1, thread_name_prefix="engram-copy"
            )
        started = time.perf_counter()
        take_rows(host, row_ids, out, owner._copiers, parts)
        self.predict_seconds["take"] += time.perf_counter() - started

    def residency(self, table: str, device: torch.device) -> ResidencyMap | None:
        """What :meth:`gather_predicted` knows of ``table``'s VRAM tier on ``device`` (its
        current mapping's), or None before its first such gather."""
        known = self._residency.get((table, str(_with_index(device))))
        mapped = self._tables.get((table, str(_with_index(device))))
        if known is None or mapped is None or known[0] != mapped.serial:
            return None
        return known[1]

    def residency_maps(self) -> list[ResidencyMap]:
        """Every :class:`ResidencyMap` of this transport (and its views), for counters."""
        return [known for _, known in self._residency.values()]

    def graph_key(self, table: str, out: torch.Tensor) -> int:
        """What a captured gather of ``table`` depends on besides its buffers: the mapping (a
        new one, after the table was shared again, needs a new capture)."""
        return self.table(table, out.device).serial

    def check(self, table: str) -> None:
        """Raises ValueError if a gather of ``table`` that has run since the last call was given
        a row id past the table's end (it read a zero row for it, and the flag is cleared): the
        kernels do not stop for it, so a caller hears of it here, before its next gather of
        the table (the backend calls this before queueing each one)."""
        for (name, _), mapped in self._tables.items():
            bad = mapped.take_error() if name == table else None
            if bad is not None:
                raise ValueError(
                    f"a gather of table {table!r} was given row id {bad}, past its end "
                    f"({mapped.rows:,} rows): it read a zero row there"
                )

    def record(self, table: str, ids: torch.Tensor) -> None:
        """Every ``record_every``-th gather of a table: copies its ids to the host on the current
        stream (no wait) and has the recording thread send them, once copied, as a Prefetch.
        At most one recording per table is in flight; a gather finding one skips its turn."""
        if self.record_every <= 0 or (ids.is_cuda and torch.cuda.is_current_stream_capturing()):
            return
        n = self._gathers.get(table, 0)
        self._gathers[table] = n + 1
        if n % self.record_every:
            return
        busy = self._recording.get(table)
        if busy is not None and not busy.done():
            return
        flat = ids.reshape(-1)
        if ids.is_cuda:
            host = torch.empty(flat.numel(), dtype=torch.int64, pin_memory=True)
            host.copy_(flat, non_blocking=True)
            event: torch.cuda.Event | None = torch.cuda.Event()
            event.record()
        else:
            host, event = flat.clone(), None
        self._recording[table] = self._recorder.submit(self._send, table, host, event)

    def _send(self, table: str, host: torch.Tensor, event: torch.cuda.Event | None) -> None:
        if event is not None:
            event.synchronize()
        live = host.numpy()
        live = live[live >= 0]
        if live.size:
            self.client.prefetch(table, live.astype(np.uint64)).result()
        self._follow_version(table)

    def _follow_version(self, table: str) -> None:
        """Recording thread, at most every :data:`VERSION_CHECK_S`: if the server serves a newer
        version of ``table``, shares and maps it here, swaps it in for the next gathers, then
        closes the old mapping once the device has finished every kernel queued before the
        swap. Until then the old version's rows are read from its host file (the server marks
        its VRAM tier retired and frees it only later, ``retire_ms``)."""
        now = time.monotonic()
        if now - self._version_checked.get(table, 0.0) < VERSION_CHECK_S:
            return
        self._version_checked[table] = now
        version = self.client.describe_table(table).version
        for key, old in list(self._tables.items()):
            if key[0] != table or old.version == version:
                continue
            self._tables[key] = MappedTable(self.client, table, old.device)
            # A gather that took the old mapping just before the swap has queued its kernel
            # (or, on the CPU, read its rows) well within this pause; then the device finishes
            # everything queued.
            time.sleep(1.0)
            if old.device.type == "cuda":
                torch.cuda.synchronize(old.device)
            old.close()

    def allocate(self, nbytes: int, device: torch.device) -> RowBuffer:
        return RowBuffer(torch.empty(nbytes, dtype=torch.uint8, device=device), None)

    def submit(self, buffer: RowBuffer, offset: int, table: str, ids: np.ndarray) -> Pending:
        """Packed rows into ``buffer`` (the generic transport call): from the host copy alone,
        for callers that do not use :meth:`gather`."""
        mapped = self.table(table, buffer.tensor.device)
        host = mapped._host_array.reshape(mapped.rows, mapped.row_bytes)
        rows = host[np.asarray(ids, dtype=np.int64)]
        dst = buffer.tensor[offset : offset + rows.nbytes]
        dst.copy_(torch.from_numpy(rows.reshape(-1)))
        return Done()

    def close(self) -> None:
        if self._view_of is not None:  # a view (with_programs): the transport it views owns all
            return
        self._stager.shutdown(wait=True)
        self._recorder.shutdown(wait=True)
        if self._copiers is not None:
            self._copiers.shutdown(wait=True)
        for mapped in self._tables.values():
            mapped.close()
        self._tables.clear()
        if self._owns_client:
            self.client.close()
