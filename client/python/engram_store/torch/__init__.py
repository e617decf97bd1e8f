"""Engram rows from engram-store as torch tensors, for an inference engine's forward pass.

- :class:`EngramRowBackend` (``backend``): the three calls of vLLM's DeepSeek-V4.1 Mooncake Engram
  backend, ``prefetch`` at forward entry, ``wait`` and ``rows(layer)`` (bf16 ``[tokens, heads,
  head_dim]`` on the device), over double-buffered slots, for one tensor-parallel rank's columns.
- :class:`RowTransport` (``transport``): how rows reach the backend's buffers;
  :class:`GrpcTransport` (``LookupInto`` into a CUDA IPC or shared-memory region) today, the
  sidecar channel of issue #13 later.
- ``rows``: the V4.1 row format (256 fp8 e4m3 values + 8 ue8m0 block scales) and its
  dequantization on any device, with a Triton gather kernel for tables in VRAM or pinned host
  memory (UVA).
- ``hashing``: V4.1 row ids from token ids, batched (numpy and torch).
- :class:`MappedTransport` (``mapped``): rows read by this process's own kernel from the memory the
  server shares (``ShareTable``: its whole-table RAM file and its VRAM tier's allocations,
  handed over as file descriptors: ``vmm``).
- ``tiered``: that kernel (each row from the VRAM tier if it holds it, else from host memory).
- ``residency``: what a worker knows of the VRAM tier, for misses foreseen on the host.

Needs torch (``pip install "./client/python[torch]"``); ``import engram_store`` does not.
"""

from engram_store.torch.backend import EngramLayer, EngramRowBackend, head_shard
from engram_store.torch.hashing import V41_LAYER_IDS, NgramHasher, v41_layout
from engram_store.torch.mapped import MappedTable, MappedTransport, StagedGather
from engram_store.torch.residency import ResidencyMap
from engram_store.torch.rows import V41_ROWS, RowFormat, cuda_view, dequantize, gather_dequantize
from engram_store.torch.tiered import TieredRows, tiered_gather_dequantize, vram_misses
from engram_store.torch.transport import (
    ChannelTransport,
    Done,
    FillOnRead,
    GrpcTransport,
    KernelDone,
    Pending,
    RowBuffer,
    RowTransport,
)

__all__ = [
    "V41_LAYER_IDS",
    "V41_ROWS",
    "Done",
    "EngramLayer",
    "EngramRowBackend",
    "ChannelTransport",
    "FillOnRead",
    "GrpcTransport",
    "KernelDone",
    "MappedTable",
    "MappedTransport",
    "NgramHasher",
    "Pending",
    "ResidencyMap",
    "RowBuffer",
    "RowFormat",
    "RowTransport",
    "StagedGather",
    "TieredRows",
    "cuda_view",
    "dequantize",
    "gather_dequantize",
    "head_shard",
    "tiered_gather_dequantize",
    "v41_layout",
    "vram_misses",
]
