"""The sidecar channel: requests in a shared-memory ring instead of gRPC calls.

A :class:`Channel` is opened once (:meth:`engram_store.Client.open_channel`) on the server's local
socket with an output region (host shared memory, or a CUDA tensor registered over CUDA IPC); the
ring itself is a sealed memfd this process creates. Then:

- :meth:`Channel.submit` writes a request (row ids, or token sequences for an Engram layer) into a
  slot and wakes the server only if it sleeps: no syscall per request while it is busy;
- :meth:`Channel.wait` waits on the host for the slot's completion (spinning briefly, then
  sleeping on a futex), and raises the server's error for a bad request;
- :meth:`Channel.stream_wait` makes a CUDA stream wait for it (``cuStreamWaitValue32`` on the
  slot's sequence word, which the ring exposes to the GPU through ``cuMemHostRegister``): work
  queued on the stream afterwards sees the rows, with no host round trip.

The ring's layout is documented in the server's ``store/src/channel/ring.rs``. Several slots may be
in flight at once (double buffering: a decode step and the next prefill chunk).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import EngramStoreError, FailedPreconditionError, error_for_code_name
from .regions import LocalSocket, Region

__all__ = ["Channel", "SlotDone"]

MAGIC = b"ENGRRING"
VERSION = 1
HEADER_BYTES = 4096
REQUEST_OFFSET = 320
PAYLOAD_OFFSET = 384
FREE, SUBMITTED, TAKEN, DONE = 0, 1, 2, 3
KIND_ROWS, KIND_SEQUENCES = 1, 2
SPIN_S = 50e-6
_SYS_FUTEX = 202  # x86-64
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1
_CODE_NAMES = {
    3: "INVALID_ARGUMENT",
    5: "NOT_FOUND",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    11: "OUT_OF_RANGE",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
}


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_libc = ctypes.CDLL(None, use_errno=True)


class SlotDone(int):
    """A completed slot: an ``int`` equal to the rows written, with ``gpu_hits`` and ``version``."""

    gpu_hits: int
    version: int

    def __new__(cls, rows: int, gpu_hits: int, version: int):
        self = super().__new__(cls, rows)
        self.gpu_hits = gpu_hits
        self.version = version
        return self


class Channel:
    """An open channel. Made by :meth:`engram_store.Client.open_channel`; :meth:`close` it (or
    use it as a context manager). Not thread-safe: one submitter."""

    def __init__(
        self,
        local_socket: str,
        token: str | None,
        target: dict[str, Any],
        region: Region,
        capacity: int,
        slots: int,
        payload_bytes: int,
    ):
        if not 1 <= slots <= 64:
            raise ValueError(f"a channel has 1 to 64 slots, not {slots}")
        self.region = region
        self.serves_rows = "table" in target
        self.capacity = int(capacity)
        self.slots = int(slots)
        self.payload_bytes = int(payload_bytes)
        self.stride = (PAYLOAD_OFFSET + self.payload_bytes + 63) // 64 * 64
        size = HEADER_BYTES + self.slots * self.stride
        fd = os.memfd_create("engram-ring", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.pwrite(
                fd,
                MAGIC + struct.pack("<IIII", VERSION, self.slots, self.stride, self.payload_bytes),
                0,
            )
            import fcntl

            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
            self._mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._local = LocalSocket(local_socket)
            message = {
                "op": "open_channel",
                "capacity": self.capacity,
                "region_id": region.region_id,
                "region_token": region.token,
                "token": token,
                **target,
            }
            reply = self._local.request(message, fd)
        finally:
            os.close(fd)
        self.channel_id = int(reply["channel_id"])
        self._words = np.frombuffer(self._mmap, dtype=np.uint32)
        self._base = ctypes.addressof(ctypes.c_char.from_buffer(self._mmap))
        self._next_seq = 1
        self._pending: list[int | None] = [None] * self.slots
        self._device_base: int | None = None
        self._closed = False

    # -- layout -----------------------------------------------------------------------------

    def _slot_word(self, slot: int, offset: int) -> int:
        return (HEADER_BYTES + slot * self.stride + offset) // 4

    def _check_slot(self, slot: int) -> None:
        if self._closed:
            raise ValueError(f"channel {self.channel_id} is closed")
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot}: the channel has {self.slots} slots")

    # -- submitting -------------------------------------------------------------------------

    def submit(
        self,
        ids_or_tokens: Any,
        slot: int = 0,
        offset: int = 0,
        *,
        context: Sequence[Sequence[int]] | None = None,
    ) -> int:
        """Asks for rows into the output region from byte ``offset``, in ``slot``; returns the
        submission's sequence number. For a table's channel ``ids_or_tokens`` are row ids (1-D);
        for an Engram layer's, token sequences (a list of lists, or one flat sequence), each
        continuing after ``context[i]`` when given."""
        self._check_slot(slot)
        state = int(self._words[self._slot_word(slot, 0)])
        if state not in (FREE, DONE):
            raise RuntimeError(f"slot {slot} is still in flight: wait() for it first")
        if self.serves_rows:
            ids = np.ascontiguousarray(np.asarray(ids_or_tokens).reshape(-1), dtype="<u8")
            kind, count, payload = KIND_ROWS, ids.size, ids.tobytes()
        else:
            seqs = ids_or_tokens
            if len(seqs) and np.isscalar(seqs[0]):
                seqs = [seqs]
            ctx = context or [[]] * len(seqs)
            if len(ctx) != len(seqs):
                raise ValueError(
                    f"context must give one list per sequence: {len(ctx)} for {len(seqs)}"
                )
            parts = []
            for tokens, before in zip(seqs, ctx, strict=True):
                t = np.asarray(tokens, dtype="<u4").reshape(-1)
                c = np.asarray(before, dtype="<u4").reshape(-1)
                parts += [struct.pack("<II", t.size, c.size), t.tobytes(), c.tobytes()]
            kind, count, payload = KIND_SEQUENCES, len(seqs), b"".join(parts)
        if len(payload) > self.payload_bytes:
            raise ValueError(
                f"a request of {len(payload)} bytes does not fit a slot of {self.payload_bytes}"
            )
        seq = self._next_seq
        self._next_seq = (self._next_seq + 1) % (1 << 32) or 1
        at = HEADER_BYTES + slot * self.stride
        self._mmap[at + PAYLOAD_OFFSET : at + PAYLOAD_OFFSET + len(payload)] = payload
        w = self._words
        w[self._slot_word(slot, 4)] = seq
        w[self._slot_word(slot, REQUEST_OFFSET)] = kind
        w[self._slot_word(slot, REQUEST_OFFSET + 4)] = count
        struct.pack_into("<Q", self._mmap, at + REQUEST_OFFSET + 8, int(offset))
        w[self._slot_word(slot, REQUEST_OFFSET + 16)] = len(payload)
        # x86 keeps stores in order: the state is seen after the request.
        w[self._slot_word(slot, 0)] = SUBMITTED
        w[24 // 4] = (int(w[24 // 4]) + 1) % (1 << 32)
        if int(w[28 // 4]):
            _libc.syscall(_SYS_FUTEX, ctypes.c_void_p(self._base + 24), _FUTEX_WAKE, 1 << 30)
        self._pending[slot] = seq
        return seq

    # -- waiting ----------------------------------------------------------------------------

    def wait(self, slot: int = 0, timeout: float = 30.0) -> SlotDone:
        """Waits on the host for ``slot``'s submission; its rows are then in the output region.
        Raises the server's error if the request was refused."""
        self._check_slot(slot)
        seq = self._pending[slot]
        if seq is None:
            raise RuntimeError(f"slot {slot} has nothing in flight")
        word = self._slot_word(slot, 64)
        start = time.perf_counter()
        while int(self._words[word]) != seq:
            if int(self._words[36 // 4]):
                raise EngramStoreError(_grpc_code("UNAVAILABLE"), "the server closed the channel")
            waited = time.perf_counter() - start
            if waited > timeout:
                raise TimeoutError(f"slot {slot} not done after {waited:.3f} s")
            if waited < SPIN_S:
                continue
            seen = int(self._words[word])
            if seen == seq:
                break
            self._words[32 // 4] += 1
            ts = _Timespec(0, 10_000_000)
            _libc.syscall(
                _SYS_FUTEX,
                ctypes.c_void_p(self._base + word * 4),
                _FUTEX_WAIT,
                ctypes.c_uint32(seen),
                ctypes.byref(ts),
            )
            self._words[32 // 4] -= 1
        return self._finish(slot)

    def _finish(self, slot: int) -> SlotDone:
        self._pending[slot] = None
        w = self._words
        status = int(w[self._slot_word(slot, 68)])
        rows = int(w[self._slot_word(slot, 72)])
        gpu_hits = int(w[self._slot_word(slot, 76)])
        at = HEADER_BYTES + slot * self.stride
        (version,) = struct.unpack_from("<Q", self._mmap, at + 80)
        if status:
            n = min(int(w[self._slot_word(slot, 88)]), REQUEST_OFFSET - 92)
            message = bytes(self._mmap[at + 92 : at + 92 + n]).decode("utf-8", "replace")
            raise error_for_code_name(_CODE_NAMES.get(status, "INTERNAL"), message)
        return SlotDone(rows, gpu_hits, version)

    def stream_wait(self, slot: int, stream: Any) -> None:
        """Makes the CUDA ``stream`` (a ``torch.cuda.Stream``) wait until ``slot``'s submission
        completes, without blocking the host (``cuStreamWaitValue32``). The slot's completion
        record can then be read with :meth:`wait`, which returns at once. Errors surface there."""
        self._check_slot(slot)
        seq = self._pending[slot]
        if seq is None:
            raise RuntimeError(f"slot {slot} has nothing in flight")
        cuda = _driver()
        if self._device_base is None:
            size = HEADER_BYTES + self.slots * self.stride
            _check(cuda.cuMemHostRegister_v2(ctypes.c_void_p(self._base), size, 0x02), "register")
            dptr = ctypes.c_uint64()
            base = ctypes.c_void_p(self._base)
            _check(
                cuda.cuMemHostGetDevicePointer_v2(ctypes.byref(dptr), base, 0),
                "device pointer of the ring",
            )
            self._device_base = dptr.value
        addr = self._device_base + self._slot_word(slot, 64) * 4
        # CU_STREAM_WAIT_VALUE_EQ (1): the sequence word equals this submission's.
        _check(
            cuda.cuStreamWaitValue32_v2(
                ctypes.c_void_p(stream.cuda_stream), ctypes.c_uint64(addr), ctypes.c_uint32(seq), 1
            ),
            "cuStreamWaitValue32",
        )

    def done(self, slot: int) -> bool:
        """True once ``slot``'s submission has completed."""
        seq = self._pending[slot]
        return seq is not None and int(self._words[self._slot_word(slot, 64)]) == seq

    # -- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the channel on the server and unmaps the ring; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._local.request({"op": "close_channel", "channel_id": self.channel_id})
        except (EngramStoreError, OSError, ConnectionError):
            pass
        self._local.close()
        if self._device_base is not None:
            _driver().cuMemHostUnregister(ctypes.c_void_p(self._base))
        self._words = None
        try:
            self._mmap.close()
        except BufferError:
            pass

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _grpc_code(name: str) -> Any:
    import grpc

    return getattr(grpc.StatusCode, name)


_CUDA: Any = None


def _driver() -> Any:
    """libcuda (the driver API), loaded once."""
    global _CUDA
    if _CUDA is None:
        try:
            _CUDA = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise FailedPreconditionError(
                _grpc_code("FAILED_PRECONDITION"),
                f"stream_wait needs the CUDA driver (libcuda.so.1): {e}",
            ) from e
    return _CUDA


def _check(result: int, what: str) -> None:
    if result != 0:
        raise RuntimeError(f"CUDA {what} failed with error {result}")
