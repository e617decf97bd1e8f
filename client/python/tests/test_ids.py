"""How the client puts row ids on the wire: any 1-D integer input becomes a uint64 array, bad input
is refused before a request is made, and ``ids_le`` carries exactly those ids as little-endian
u64s (what the server decodes), for ids of every size up to 2**64 - 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from engram_store.client import _ids, _ids_le
from engram_store.v1 import store_pb2 as pb


def test_ids_of_any_integer_dtype_become_uint64_and_bad_ones_are_refused():
    for dtype in (np.int32, np.int64, np.uint32, np.uint16, np.uint64):
        assert _ids(np.arange(5, dtype=dtype)).dtype == np.uint64
    assert _ids([3, 1, 2]).tolist() == [3, 1, 2]
    assert _ids([]).size == 0
    with pytest.raises(ValueError, match="negative"):
        _ids(np.array([3, -1]))
    with pytest.raises(ValueError, match="1-D"):
        _ids(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="integers"):
        _ids([1.5])
    with pytest.raises(ValueError, match="integers"):
        _ids([2**64])  # beyond uint64: numpy makes it an object array


def test_ids_le_is_the_ids_as_little_endian_u64s_through_protobuf():
    rng = np.random.default_rng(4)
    edges = np.array([0, 1, 127, 128, 2**32, 2**63, 2**64 - 1], dtype=np.uint64)
    for ids in (edges, rng.integers(0, 2**64 - 1, size=4096, dtype=np.uint64), _ids([])):
        raw = pb.LookupRequest(table="t", ids_le=_ids_le(ids)).SerializeToString()
        back = pb.LookupRequest.FromString(raw)
        assert len(back.ids) == 0 and len(back.ids_le) == 8 * ids.size
        assert np.frombuffer(back.ids_le, dtype="<u8").tolist() == ids.tolist()
    # A big-endian input array is converted, not sent as is.
    assert _ids_le(np.array([1], dtype=">u8")) == (1).to_bytes(8, "little")
