"""Device memory shared between processes through the CUDA virtual memory API: an allocation
made with ``cuMemCreate`` and exported as a POSIX file descriptor
(``cuMemExportToShareableHandle``), imported in another process
(``cuMemImportFromShareableHandle``) and mapped there into an address range of its own
(``cuMemAddressReserve``, ``cuMemMap``, ``cuMemSetAccess``).

Why not CUDA IPC handles (``cuIpcOpenMemHandle``): on the H200, a kernel gathering rows at random
from ``cuMemAlloc`` memory opened over CUDA IPC took 172 us for 6,144 rows where the same kernel
over the same memory in the allocating process took 9.4 us (``benches/e2e/ipc_tier_cost.py``,
BENCHMARKS.md 10o): every access missed the GPU's TLB. Mapped here, the importer chooses the
mapping's granularity (the allocation's, 2 MiB), as the allocating process does.

:class:`SharedDeviceMemory` is one mapped allocation (imported, or created here for tests and
benchmarks); it unmaps and releases on :meth:`close`. :func:`collect_shared` takes such
allocations from a server's Unix socket (the token its ``ShareTable`` answer gave) and maps them.
"""

from __future__ import annotations

import ctypes
import os
import socket
from typing import Any

__all__ = ["SharedDeviceMemory", "collect_shared", "granularity"]

#: How long the server's socket is waited on.
COLLECT_TIMEOUT_S = 10.0

#: ``CU_MEM_ALLOCATION_TYPE_PINNED``, ``CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR``,
#: ``CU_MEM_LOCATION_TYPE_DEVICE``, ``CU_MEM_ACCESS_FLAGS_PROT_READWRITE``.
_PINNED, _POSIX_FD, _DEVICE, _READ_WRITE = 1, 1, 1, 3
#: ``CU_MEM_ALLOC_GRANULARITY_RECOMMENDED``.
_RECOMMENDED = 1


class _Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocFlags(ctypes.Structure):
    _fields_ = [
        ("compressionType", ctypes.c_ubyte),
        ("gpuDirectRDMACapable", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class _Prop(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("requestedHandleTypes", ctypes.c_int),
        ("location", _Location),
        ("win32HandleMetaData", ctypes.c_void_p),
        ("allocFlags", _AllocFlags),
    ]


class _AccessDesc(ctypes.Structure):
    _fields_ = [("location", _Location), ("flags", ctypes.c_int)]


_LIB: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    """libcuda with the calls used here typed (loaded once)."""
    global _LIB
    if _LIB is None:
        u64, size = ctypes.c_uint64, ctypes.c_size_t
        lib = ctypes.CDLL("libcuda.so.1")
        lib.cuMemGetAllocationGranularity.argtypes = [
            ctypes.POINTER(size),
            ctypes.POINTER(_Prop),
            ctypes.c_int,
        ]
        lib.cuMemCreate.argtypes = [ctypes.POINTER(u64), size, ctypes.POINTER(_Prop), u64]
        lib.cuMemExportToShareableHandle.argtypes = [ctypes.c_void_p, u64, ctypes.c_int, u64]
        lib.cuMemImportFromShareableHandle.argtypes = [
            ctypes.POINTER(u64),
            ctypes.c_void_p,
            ctypes.c_int,
        ]
        lib.cuMemAddressReserve.argtypes = [ctypes.POINTER(u64), size, size, u64, u64]
        lib.cuMemMap.argtypes = [u64, size, size, u64, u64]
        lib.cuMemSetAccess.argtypes = [u64, size, ctypes.POINTER(_AccessDesc), size]
        lib.cuMemUnmap.argtypes = [u64, size]
        lib.cuMemAddressFree.argtypes = [u64, size]
        lib.cuMemRelease.argtypes = [u64]
        _LIB = lib
    return _LIB


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"{what} failed with CUDA error {rc}")


def _prop(device: int) -> _Prop:
    prop = _Prop()
    prop.type = _PINNED
    prop.requestedHandleTypes = _POSIX_FD
    prop.location = _Location(_DEVICE, device)
    return prop


def granularity(device: int) -> int:
    """The recommended granularity (bytes) of a shareable allocation on ``device``: sizes and
    mappings are multiples of it."""
    g = ctypes.c_size_t()
    _check(
        _lib().cuMemGetAllocationGranularity(ctypes.byref(g), ctypes.byref(_prop(device)),
                                             _RECOMMENDED),
        "cuMemGetAllocationGranularity",
    )  # fmt: skip
    return g.value


class SharedDeviceMemory:
    """``size`` bytes of one allocation mapped read-write for ``device`` at :attr:`ptr` in this
    process. The device's primary context must be current (``torch.cuda.set_device`` and any
    CUDA call from torch make it so)."""

    def __init__(self, handle: int, size: int, device: int):
        lib = _lib()
        self.device, self.size, self._handle = device, size, handle
        self.ptr = 0
        ptr = ctypes.c_uint64()
        try:
            _check(lib.cuMemAddressReserve(ctypes.byref(ptr), size, granularity(device), 0, 0),
                   "cuMemAddressReserve")  # fmt: skip
            self._reserved = ptr.value
            _check(lib.cuMemMap(ptr.value, size, 0, handle, 0), "cuMemMap")
            self.ptr = ptr.value
            access = _AccessDesc(_Location(_DEVICE, device), _READ_WRITE)
            _check(lib.cuMemSetAccess(ptr.value, size, ctypes.byref(access), 1), "cuMemSetAccess")
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(cls, size: int, device: int) -> SharedDeviceMemory:
        """A new allocation of at least ``size`` bytes (rounded up to :func:`granularity`),
        exportable with :meth:`export_fd`. Its contents are undefined."""
        g = granularity(device)
        size = max(g, -(-size // g) * g)
        handle = ctypes.c_uint64()
        _check(_lib().cuMemCreate(ctypes.byref(handle), size, ctypes.byref(_prop(device)), 0),
               "cuMemCreate")  # fmt: skip
        return cls(handle.value, size, device)

    @classmethod
    def import_fd(cls, fd: int, size: int, device: int) -> SharedDeviceMemory:
        """Maps the allocation another process exported as ``fd`` (of ``size`` bytes, a multiple
        of :func:`granularity`). ``fd`` stays the caller's to close."""
        handle = ctypes.c_uint64()
        _check(
            _lib().cuMemImportFromShareableHandle(ctypes.byref(handle), ctypes.c_void_p(fd),
                                                  _POSIX_FD),
            f"cuMemImportFromShareableHandle of fd {fd}",
        )  # fmt: skip
        return cls(handle.value, size, device)

    def export_fd(self) -> int:
        """A new file descriptor naming this allocation, for another process to import (the
        caller closes it)."""
        fd = ctypes.c_int(-1)
        _check(_lib().cuMemExportToShareableHandle(ctypes.byref(fd), self._handle, _POSIX_FD, 0),
               "cuMemExportToShareableHandle")  # fmt: skip
        return fd.value

    def close(self) -> None:
        """Unmaps and releases (no kernel may still use the memory); safe to call twice."""
        lib = _lib()
        if self.ptr:
            lib.cuMemUnmap(self.ptr, self.size)
            self.ptr = 0
        if getattr(self, "_reserved", 0):
            lib.cuMemAddressFree(self._reserved, self.size)
            self._reserved = 0
        if self._handle:
            lib.cuMemRelease(self._handle)
            self._handle = 0

    def __enter__(self) -> SharedDeviceMemory:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def collect_shared(
    path: str, token: bytes, sizes: list[int], device: int
) -> list[SharedDeviceMemory]:
    """The allocations a server offered under ``token`` on its Unix socket ``path``, imported
    and mapped for ``device`` (``sizes[i]`` bytes of the ``i``-th, in the order they come): one
    connection, the token sent, one byte back (1: the file descriptors come with it; 0: the
    server's refusal follows as text, raised as RuntimeError). The descriptors are closed once
    imported (the mappings hold the memory)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(COLLECT_TIMEOUT_S)
        conn.connect(path)
        conn.sendall(token)
        msg, fds, _, _ = socket.recv_fds(conn, 512, max(len(sizes), 8))
        try:
            if msg[:1] != b"\x01":
                rest = msg[1:]
                while chunk := conn.recv(4096):
                    rest += chunk
                why = rest.decode(errors="replace") or "the server closed the connection"
                raise RuntimeError(f"the server handed over no device memory on {path}: {why}")
            if len(fds) != len(sizes):
                raise RuntimeError(
                    f"the server handed over {len(fds)} file descriptors on {path}, not "
                    f"{len(sizes)}"
                )
            mapped: list[SharedDeviceMemory] = []
            try:
                for fd, size in zip(fds, sizes, strict=True):
                    mapped.append(SharedDeviceMemory.import_fd(fd, int(size), device))
            except BaseException:
                for m in mapped:
                    m.close()
                raise
            return mapped
        finally:
            for fd in fds:
                os.close(fd)
