"""The sidecar channel from Python (CPU: host shared memory): rows land in the region as
``lookup`` returns them, several slots in flight, an Engram layer's channel serves the rows
``lookup_ngrams`` does, and a bad request raises the server's error from ``wait`` while the
channel goes on."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GROUP, TABLES

from engram_store import Client
from engram_store.errors import InvalidArgumentError, OutOfRangeError


@pytest.fixture()
def client(served):
    with Client(served.addr) as c:
        yield c


def test_rows_land_in_the_region(client):
    info = client.describe_table("plain")
    rows = TABLES["plain"][1]
    with client.shm_region(64 * info.row_bytes) as region, client.open_channel(
        region, table="plain", capacity=32, slots=2
    ) as channel:
        a = np.array([0, rows - 1, 7, 7], dtype=np.uint64)
        b = np.array([3, 2, 1], dtype=np.uint64)
        channel.submit(a, slot=0, offset=0)
        channel.submit(b, slot=1, offset=10 * info.row_bytes)
        assert channel.wait(1) == 3
        done = channel.wait(0)
        assert done == 4 and done.version >= 1
        got = region.array(np.uint8)
        assert got[: 4 * info.row_bytes].tobytes() == client.lookup("plain", a).tobytes()
        at = 10 * info.row_bytes
        assert got[at : at + 3 * info.row_bytes].tobytes() == client.lookup("plain", b).tobytes()


def test_an_engram_layer_channel_serves_lookup_ngrams(client):
    sequences = [[5, 17, 300, 5], [9, 9, 1, 2]]
    want = client.lookup_ngrams(GROUP, 2, sequences)
    nbytes = want.size * want.itemsize
    with client.shm_region(nbytes) as region, client.open_channel(
        region, group=GROUP, layer=2, capacity=64
    ) as channel:
        channel.submit(sequences, slot=0)
        channel.wait(0)
        assert region.array(np.uint8)[:nbytes].tobytes() == want.tobytes()
        # A context for each sequence, or none: one list for two sequences is refused.
        with pytest.raises(ValueError, match="one list per sequence: 1 for 2"):
            channel.submit(sequences, slot=1, context=[[1, 2, 3]])


def test_bad_requests_raise_and_the_channel_goes_on(client):
    rows = TABLES["plain"][1]
    info = client.describe_table("plain")
    with client.shm_region(4 * info.row_bytes) as region, client.open_channel(
        region, table="plain", capacity=4
    ) as channel:
        channel.submit([rows], slot=0)
        with pytest.raises(OutOfRangeError, match=str(rows)):
            channel.wait(0)
        channel.submit([1, 2], slot=0, offset=3 * info.row_bytes)
        with pytest.raises(InvalidArgumentError, match="region"):
            channel.wait(0)
        with pytest.raises(ValueError, match="does not fit"):
            channel.submit(list(range(5)), slot=0)
        channel.submit([1], slot=0)
        assert channel.wait(0) == 1
