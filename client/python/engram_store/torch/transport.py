"""How Engram rows travel from engram-store into the row backend's buffers.

A :class:`RowTransport` hands out buffers the server can write into (:meth:`RowTransport.allocate`)
and fills them (:meth:`RowTransport.submit`: rows of one table, by id, packed from a byte offset),
returning a :class:`Pending` that says when the rows are there. The backend
(``engram_store.torch.backend``) calls ``submit`` from its own worker thread, never from the
forward pass, and asks the ``Pending`` to make the consuming stream wait.

:class:`GrpcTransport` is today's transport: one ``LookupInto`` call per submit, into a CUDA IPC
region (a torch CUDA tensor; the server gathers its VRAM hits on the device) or, on the CPU, a host
shared-memory region. The call returns once the server has written every row, so its ``Pending``
is already complete. The sidecar channel of issue #13 (requests in a shared-memory ring, completion
a CUDA stream can wait on) fits the same shape: ``submit`` writes a slot of the ring and returns at
once, and its ``Pending.wait(stream)`` enqueues a stream wait instead of blocking the host.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
from typing import Any

import numpy as np
import torch

from engram_store.client import Client
from engram_store.errors import ProtocolError
from engram_store.regions import Region

__all__ = [
    "ChannelTransport",
    "Done",
    "FillOnRead",
    "GrpcTransport",
    "KernelDone",
    "Pending",
    "RowBuffer",
    "RowTransport",
]


@dataclasses.dataclass
class RowBuffer:
    """Memory a transport writes rows into: a flat uint8 tensor on the backend's device and the
    transport's handle for it (a registered region for :class:`GrpcTransport`)."""

    tensor: torch.Tensor
    handle: Any


class Pending(abc.ABC):
    """Rows on their way into a buffer."""

    @abc.abstractmethod
    def wait(self, stream: torch.cuda.Stream | None = None) -> None:
        """Returns once work queued on ``stream`` after this call sees the rows (None: once the
        host does). A transport that completes on the device may make the stream wait instead of
        blocking; raises the transport's error if the rows will not come."""


class Done(Pending):
    """Rows that are already in place when ``submit`` returns."""

    def wait(self, stream: torch.cuda.Stream | None = None) -> None:
        return None


class KernelDone(Pending):
    """Rows a kernel of this process writes on some stream, ``event`` recorded after it: a
    stream waits for the event, the host synchronizes on it."""

    def __init__(self, event: torch.cuda.Event):
        self.event = event

    def wait(self, stream: torch.cuda.Stream | None = None) -> None:
        if stream is not None and stream.device.type == "cuda":
            stream.wait_event(self.event)
        else:
            self.event.synchronize()


class FillOnRead(KernelDone):
    """Rows whose inputs are on the device once ``event`` has passed, and whose last kernel is
    left to the reader: :meth:`fill` queues it on the stream that reads them, into the tensor it
    reads (the backend's ``rows`` does so each time it is called)."""

    @abc.abstractmethod
    def fill(self, dst: torch.Tensor, stream: torch.cuda.Stream) -> None:
        """Queues the rows into ``dst`` on ``stream``, after ``event``."""


class RowTransport(abc.ABC):
    """Moves rows of engram-store tables into buffers of the row backend."""

    #: A short name for logs and benchmark output.
    name = "transport"

    @abc.abstractmethod
    def allocate(self, nbytes: int, device: torch.device) -> RowBuffer:
        """A buffer of ``nbytes`` on ``device`` that :meth:`submit` can fill."""

    @abc.abstractmethod
    def submit(self, buffer: RowBuffer, offset: int, table: str, ids: np.ndarray) -> Pending:
        """Writes rows ``ids`` (uint64 or int64, 1-D) of ``table`` into ``buffer`` from byte
        ``offset``, packed in order. May block until they are written."""

    def release(self, buffer: RowBuffer) -> None:  # noqa: B027 (optional hook)
        """Gives back what :meth:`allocate` took on the server's side (default: nothing)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Releases the transport's connection (default: nothing)."""


class GrpcTransport(RowTransport):
    """``LookupInto`` over gRPC into a CUDA IPC region (CUDA devices) or a host shared-memory
    region (the CPU). The server must run on this machine; for CUDA it must be built with
    ``--features cuda``, started with ``--gpu-budget``, on the buffer's GPU.

    Args:
        client: a :class:`engram_store.Client`, or an address to connect one to (closed with the
            transport).
    """

    name = "grpc-lookup-into"

    def __init__(self, client: Client | str):
        self._owns_client = isinstance(client, str)
        self.client = Client(client) if isinstance(client, str) else client

    def allocate(self, nbytes: int, device: torch.device) -> RowBuffer:
        device = torch.device(device)
        if device.type == "cuda":
            tensor = torch.empty(nbytes, dtype=torch.uint8, device=device)
            # The backend orders writes after the reads of a slot itself (an event per slot), so
            # the region must not synchronize the device's stream before each write.
            return RowBuffer(tensor, self.client.register_cuda_tensor(tensor, sync=False))
        if device.type == "cpu":
            region = self.client.shm_region(nbytes)
            return RowBuffer(torch.from_numpy(region.array(np.uint8)), region)
        raise ValueError(f"GrpcTransport delivers into CUDA or CPU memory, not {device}")

    def submit(self, buffer: RowBuffer, offset: int, table: str, ids: np.ndarray) -> Pending:
        region: Region = buffer.handle
        written = self.client.lookup_into(region, table, ids, offset=offset)
        if written != len(ids):
            raise ProtocolError(f"asked {table} for {len(ids)} rows, {int(written)} written")
        return Done()

    def release(self, buffer: RowBuffer) -> None:
        buffer.handle.close()

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


class ChannelPending(Pending):
    """Rows asked for in one slot of a channel: a CUDA stream waits on the slot's sequence word
    (no host round trip), the host waits on its futex."""

    def __init__(self, transport: ChannelTransport, channel: Any, slot: int):
        self._transport = transport
        self._channel = channel
        self._slot = slot
        self._checked = False

    def wait(self, stream: torch.cuda.Stream | None = None) -> None:
        with self._transport._lock:
            if self._checked:
                return
            if stream is not None and stream.device.type == "cuda":
                self._channel.stream_wait(self._slot, stream)
                # The record is read once the slot has completed: at the next submit into this
                # slot at the latest (which waits for it), or here if it already has.
                if not self._channel.done(self._slot):
                    return
            self._checked = True
            self._channel.wait(self._slot)


class ChannelTransport(RowTransport):
    """The sidecar channel (issue #13): each submit writes a request into a slot of a
    shared-memory ring and returns at once; the server writes the rows into the buffer (a CUDA
    IPC region, or host shared memory) and completes the slot, which the consuming CUDA stream
    waits on. One channel per (buffer, table), with ``ring_slots`` slots used in turn.

    Args:
        client: a :class:`engram_store.Client` (or an address), on this machine.
        ring_slots: requests in flight per channel.
    """

    name = "channel"

    def __init__(self, client: Client | str, ring_slots: int = 4):
        self._grpc = GrpcTransport(client)
        self.client = self._grpc.client
        self.ring_slots = ring_slots
        self._channels: dict[tuple[int, str], tuple[Any, int, int]] = {}
        self._lock = threading.Lock()

    def allocate(self, nbytes: int, device: torch.device) -> RowBuffer:
        return self._grpc.allocate(nbytes, device)

    def _channel(self, buffer: RowBuffer, table: str, rows: int) -> tuple[Any, int]:
        key = (id(buffer.handle), table)
        entry = self._channels.get(key)
        if entry is None or entry[1] < rows:
            if entry is not None:
                entry[0].close()
            capacity = max(rows, 1)
            channel = self.client.open_channel(
                buffer.handle, table=table, capacity=capacity, slots=self.ring_slots
            )
            entry = (channel, capacity, 0)
        channel, capacity, turn = entry
        self._channels[key] = (channel, capacity, (turn + 1) % self.ring_slots)
        return channel, turn

    def submit(self, buffer: RowBuffer, offset: int, table: str, ids: np.ndarray) -> Pending:
        with self._lock:
            channel, slot = self._channel(buffer, table, len(ids))
            if channel._pending[slot] is not None:
                channel.wait(slot)
            channel.submit(np.ascontiguousarray(ids, dtype=np.uint64), slot, offset)
        return ChannelPending(self, channel, slot)

    def release(self, buffer: RowBuffer) -> None:
        with self._lock:
            for key in [k for k in self._channels if k[0] == id(buffer.handle)]:
                self._channels.pop(key)[0].close()
        self._grpc.release(buffer)

    def close(self) -> None:
        with self._lock:
            for channel, _, _ in self._channels.values():
                channel.close()
            self._channels.clear()
        self._grpc.close()
