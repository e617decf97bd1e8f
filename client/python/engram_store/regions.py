"""Memory the server writes rows into (``LookupInto``), instead of sending them in the reply.

- :class:`ShmRegion` (delivery mode 2): a memfd this process creates, sizes, seals against
  shrinking and growing, and maps; it is handed to the server over its local Unix socket
  (``SCM_RIGHTS``), the server maps the same memory and writes rows straight into it, and
  :meth:`ShmRegion.array` views them as a numpy array with no copy. No file name is involved: the
  server maps exactly the memory it was given.
- :class:`CudaRegion` (delivery mode 3): a contiguous torch CUDA tensor shared with the server
  through CUDA IPC; the server (built with ``--features cuda``, started with ``--gpu-budget``)
  gathers rows that sit in its VRAM tier straight into the tensor and copies the others from host
  memory, so the rows never pass through this process.

Both are made by the client (:meth:`engram_store.Client.shm_region`,
:meth:`engram_store.Client.register_cuda_tensor`) and filled by
:meth:`engram_store.Client.lookup_into` / :meth:`engram_store.Client.lookup_ngrams_into`.
Closing a region (or leaving its ``with`` block) unregisters it; a shared-memory region also
unmaps its memory (and a shared-memory region whose local-socket connection closes, say because
this process died, is released by the server). The server checks every write against the
registered size and refuses a write that overlaps another one in flight.

torch is imported only by :meth:`engram_store.Client.register_cuda_tensor`; it is not a dependency.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import socket
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["CudaRegion", "LocalSocket", "Region", "ShmRegion", "Written", "cuda_ipc_handle"]

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
#: The seals a region's memfd carries: it can neither shrink nor grow (nor be re-sealed).
_SEALS = getattr(os, "F_SEAL_SHRINK", 2) | getattr(os, "F_SEAL_GROW", 4) | getattr(
    os, "F_SEAL_SEAL", 1
)
#: ``sizeof(cudaIpcMemHandle_t)``.
CUDA_IPC_HANDLE_SIZE = 64
#: Type bytes of torch's versioned storage handles (c10's CUDACachingAllocator).
_TORCH_CUDA_MALLOC = ord("c")
_TORCH_EXPANDABLE_SEGMENT = ord("e")


class Written(int):
    """What one ``LookupInto`` wrote: an ``int`` equal to the row count, with the rest of the
    server's reply as attributes.

    Attributes:
        row_count: rows written (the int's value).
        row_bytes: bytes per row.
        bytes_written: ``row_count * row_bytes``.
        gpu_hits: rows served from the server's VRAM tier (CUDA regions; 0 otherwise).
        version: the version of the table that served the rows (0 from servers before
            version swaps).
    """

    row_bytes: int
    bytes_written: int
    gpu_hits: int
    version: int

    def __new__(
        cls, row_count: int, row_bytes: int, bytes_written: int, gpu_hits: int, version: int = 0
    ):
        self = super().__new__(cls, row_count)
        self.row_bytes = row_bytes
        self.bytes_written = bytes_written
        self.gpu_hits = gpu_hits
        self.version = version
        return self

    @property
    def row_count(self) -> int:
        return int(self)

    def __repr__(self) -> str:
        return (
            f"Written(row_count={int(self)}, row_bytes={self.row_bytes}, "
            f"bytes_written={self.bytes_written}, gpu_hits={self.gpu_hits}, "
            f"version={self.version})"
        )


class Region:
    """A registered region: its server-side id and token, and its size in bytes.

    ``unregister`` is the client's call that forgets the region on the server; the subclasses
    add what they own (a mapped file, a reference to a tensor).
    """

    kind = "region"

    def __init__(self, region_id: int, token: str, size: int, unregister: Callable[[], None]):
        self.region_id = region_id
        self.token = token
        self.size = size
        self._unregister: Callable[[], None] | None = unregister

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._unregister is None

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"{self.kind} region {self.region_id} is closed")

    def close(self) -> None:
        """Unregisters the region on the server; safe to call twice."""
        unregister, self._unregister = self._unregister, None
        if unregister is not None:
            unregister()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} id={self.region_id} size={self.size} {state}>"


def region_size(
    shape_or_nbytes: int | Sequence[int], dtype: Any
) -> tuple[int, tuple[int, ...] | None]:
    """Bytes (and shape, if given) of a region given as a byte count or a shape of ``dtype``."""
    if isinstance(shape_or_nbytes, (int, np.integer)):
        if dtype is not None:
            raise ValueError("give a shape (a tuple) with dtype, or a byte count without")
        nbytes, shape = int(shape_or_nbytes), None
    else:
        shape = tuple(int(d) for d in shape_or_nbytes)
        if any(d < 0 for d in shape):
            raise ValueError(f"shape {shape} has a negative dimension")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype or np.uint8).itemsize
    if nbytes <= 0:
        raise ValueError(f"a shared-memory region needs at least one byte, got {nbytes}")
    return nbytes, shape


def create_memfd(nbytes: int, name: str | None) -> tuple[int, mmap.mmap]:
    """A sealed memfd of ``nbytes`` bytes (``name`` shows in ``/proc/PID/fd``), mapped
    read-write: its descriptor and its mapping."""
    if not hasattr(os, "memfd_create"):
        raise OSError("host shared-memory regions need Linux (memfd_create)")
    if name is not None and not _NAME.match(name):
        raise ValueError(f"region name {name!r}: use letters, digits, '.', '_' or '-'")
    fd = os.memfd_create(name or "engram-store-region", os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, nbytes)
        import fcntl

        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        mapping = mmap.mmap(fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd, mapping


class LocalSocket:
    """A connection to the server's local socket: one request line out (with a descriptor
    attached when registering), one reply line back. Regions registered on it live as long as
    it does."""

    def __init__(self, path: str):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(path)
        except OSError as e:
            self._sock.close()
            raise OSError(f"connect to the server's local socket {path}: {e}") from e
        self._reader = self._sock.makefile("rb")

    def request(self, message: dict, fd: int | None = None) -> dict:
        """Sends ``message`` (with ``fd`` attached) and returns the reply, or raises the server's
        error as the client's exception for its code."""
        line = (json.dumps(message) + "\n").encode()
        if fd is None:
            self._sock.sendall(line)
        else:
            socket.send_fds(self._sock, [line], [fd])
        reply = self._reader.readline()
        if not reply:
            raise ConnectionError("the server closed its local socket")
        answer = json.loads(reply)
        if not answer.get("ok"):
            from .errors import error_for_code_name

            raise error_for_code_name(answer.get("code", "INTERNAL"), answer.get("message", ""))
        return answer

    def close(self) -> None:
        """Closes the connection (the server then releases what was registered on it)."""
        self._reader.close()
        self._sock.close()


def _release_shm(mapping: mmap.mmap, local: LocalSocket) -> None:
    """Closes the local-socket connection (the server forgets the region) and unmaps the memory
    unless numpy views still use it (it is then unmapped when the last of them goes)."""
    local.close()
    try:
        mapping.close()
    except BufferError:
        pass


class ShmRegion(Region):
    """Host shared memory the server writes rows into: a sealed memfd, mapped here and by the
    server.

    Made by :meth:`engram_store.Client.shm_region`. :meth:`array` views its bytes as numpy
    arrays; :meth:`close` unregisters the region and unmaps it (numpy views taken before keep the
    mapping alive, so they never dangle). The region is also released if it is garbage-collected
    or this process exits without a close (the server sees its local-socket connection close).

    Attributes:
        size: bytes.
        shape: the shape it was made with, if one was given.
        dtype: the dtype it was made with, if one was given.
    """

    kind = "shared-memory"

    def __init__(
        self,
        region_id: int,
        token: str,
        size: int,
        unregister: Callable[[], None],
        mapping: mmap.mmap,
        local: LocalSocket,
        shape: tuple[int, ...] | None = None,
        dtype: Any = None,
    ):
        super().__init__(region_id, token, size, unregister)
        self.shape = shape
        self.dtype = None if dtype is None else np.dtype(dtype)
        self._mmap = mapping
        self._finalizer = weakref.finalize(self, _release_shm, mapping, local)

    def array(
        self,
        dtype: Any = None,
        shape: int | Sequence[int] | None = None,
        offset: int = 0,
    ) -> np.ndarray:
        """A writable numpy view of the region's bytes from ``offset`` (no copy).

        Args:
            dtype: element type (e.g. ``client.describe_table(t).dtype``); default: the dtype
                the region was made with, else ``uint8``.
            shape: default: the shape the region was made with when ``dtype`` and ``offset`` are
                the defaults, else as many elements as fit, flat.
            offset: byte offset of the first element.
        """
        self._check_open()
        made_with = dtype is None and shape is None and offset == 0
        dt = np.dtype(dtype if dtype is not None else (self.dtype or np.uint8))
        if made_with and self.shape is not None:
            shape = self.shape
        if not 0 <= offset <= self.size:
            raise ValueError(f"offset {offset} is outside the region's {self.size} bytes")
        if shape is None:
            count = (self.size - offset) // dt.itemsize
            return np.frombuffer(self._mmap, dtype=dt, count=count, offset=offset)
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape)
        count = int(np.prod(shape, dtype=np.int64))
        if offset + count * dt.itemsize > self.size:
            raise ValueError(
                f"{shape} of {dt} from byte {offset} needs {offset + count * dt.itemsize} bytes; "
                f"the region has {self.size}"
            )
        return np.frombuffer(self._mmap, dtype=dt, count=count, offset=offset).reshape(shape)

    def close(self) -> None:
        """Unregisters the region and unmaps it; safe to call twice."""
        try:
            super().close()
        finally:
            self._finalizer()


def cuda_ipc_handle(shared: bytes) -> bytes:
    """The 64-byte ``cudaIpcMemHandle_t`` in a handle from torch's ``_share_cuda_``.

    torch before 2.2 returns the bare 64 bytes; later versions prefix a version byte and a type
    byte, ``'c'`` for memory from ``cudaMalloc`` (which CUDA IPC can share) and ``'e'`` for an
    expandable segment (which it cannot).
    """
    if len(shared) == CUDA_IPC_HANDLE_SIZE:
        return bytes(shared)
    if len(shared) == CUDA_IPC_HANDLE_SIZE + 2 and shared[1] == _TORCH_CUDA_MALLOC:
        return bytes(shared[2:])
    if len(shared) >= 2 and shared[1] == _TORCH_EXPANDABLE_SEGMENT:
        raise ValueError(
            "the tensor lives in an expandable segment of torch's CUDA allocator, which CUDA IPC "
            "cannot share: allocate it with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:False"
        )
    raise ValueError(f"unrecognised torch CUDA IPC handle of {len(shared)} bytes")


class CudaRegion(Region):
    """A torch CUDA tensor the server writes rows into over CUDA IPC.

    Made by :meth:`engram_store.Client.register_cuda_tensor`, which checks the tensor is
    contiguous and registers exactly its bytes. The region keeps the tensor alive until closed;
    keep using the same tensor (allocate once, look up into it many times): torch holds memory it
    has shared through IPC until the process exits, even after the tensor is freed.

    Before each write the client waits for the work queued on the tensor's device (``sync``), so
    the server never overwrites rows a kernel is still reading; the server finishes its copies
    before it answers, so the rows are in place when ``lookup_into`` returns.

    Attributes:
        tensor: the registered tensor.
        device: its CUDA device ordinal.
        sync: whether each write first synchronizes the tensor's current stream.
    """

    kind = "CUDA"

    def __init__(
        self,
        region_id: int,
        token: str,
        size: int,
        unregister: Callable[[], None],
        tensor: Any,
        sync: bool = True,
    ):
        super().__init__(region_id, token, size, unregister)
        self.tensor = tensor
        self.device = tensor.device.index
        self.sync = sync

    def before_write(self) -> None:
        """Waits for the work queued on the tensor's current stream (when ``sync``)."""
        self._check_open()
        if self.sync:
            import torch

            torch.cuda.current_stream(self.tensor.device).synchronize()

    def close(self) -> None:
        """Unregisters the region and drops the reference to the tensor; safe to call twice."""
        try:
            super().close()
        finally:
            self.tensor = None


def import_torch() -> Any:
    """torch, or an ImportError that says what needs it."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "register_cuda_tensor needs PyTorch with CUDA (pip install torch); engram-store does "
            "not depend on it"
        ) from e
    return torch


def describe_cuda_tensor(tensor: Any) -> dict[str, Any]:
    """The ``CudaIpcRegion`` fields of a contiguous CUDA tensor: device, the 64-byte handle of
    its allocation, the byte offset of its first element in that allocation, and its bytes."""
    torch = import_torch()
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_cuda:
        raise ValueError(f"the tensor is on {tensor.device}, not a CUDA device")
    if not tensor.is_contiguous():
        raise ValueError("the tensor is not contiguous: rows are written packed, row-major")
    size = tensor.numel() * tensor.element_size()
    if size == 0:
        raise ValueError("the tensor is empty")
    shared = tensor.untyped_storage()._share_cuda_()
    device, handle, _storage_bytes, storage_offset_bytes = shared[:4]
    return {
        "device": int(device),
        "ipc_handle": cuda_ipc_handle(handle),
        "offset": int(storage_offset_bytes) + tensor.storage_offset() * tensor.element_size(),
        "size": size,
    }
