"""engram_store.torch.EngramRowBackend on the CPU against a live server (host shared-memory regions
through GrpcTransport): the rows of ``rows(layer)`` must be the dequantized table rows of the ids
prefetched (as row ids or as token ids hashed by V4.1's rule), for every tensor-parallel rank's
columns, with dead ids as zero rows, two slots in flight, and a server's refusal raised from
``rows``. Skipped without torch. The CUDA IPC path runs in benches/e2e/engram_offload.py on a GPU.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from conftest import REPO, engram_store_bin

torch = pytest.importorskip("torch", reason="engram_store.torch needs torch (pip install torch)")

from engram_store.errors import EngramStoreError  # noqa: E402
from engram_store.local_server import LocalServer, run_cli  # noqa: E402
from engram_store.torch import (  # noqa: E402
    EngramLayer,
    EngramRowBackend,
    GrpcTransport,
    NgramHasher,
    v41_layout,
)

CMAP = np.load(REPO / "testdata" / "engram" / "dsv3-compress.npy")
TRACE = np.fromfile(REPO / "testdata" / "traces" / "en-sample.tokens.u32", dtype="<u4")
ENGRAM_VOCAB = 200


def dequantized(rows: np.ndarray) -> np.ndarray:
    """V4.1 rows -> float32 values of their bf16 dequantization (an independent reference)."""
    values = rows[..., :256].view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    factor = np.exp2(rows[..., 256:].astype(np.float32) - 127)
    out = values.reshape(*values.shape[:-1], 8, 32) * factor[..., None]
    return out.reshape(values.shape).astype(ml_dtypes.bfloat16).astype(np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """Two V4.1-geometry tables (random fp8 rows, scales 2^-8..2^3) served on the loopback."""
    binary = engram_store_bin()
    root = tmp_path_factory.mktemp("v41")
    layout = v41_layout(ENGRAM_VOCAB, CMAP)
    hasher = NgramHasher(layout, CMAP)
    rng = np.random.default_rng(7)
    tables = {}
    for layer_id, rows in zip(hasher.layer_ids, hasher.table_rows, strict=True):
        data = rng.integers(0, 256, (rows, 264), dtype=np.uint8)
        data[:, :256][(data[:, :256] & 0x7F) == 0x7F] = 0  # no NaN codes
        data[:, 256:] = rng.integers(119, 131, (rows, 8), dtype=np.uint8)
        name = f"v41.layer{layer_id}"
        np.save(root / f"{name}.npy", data)
        run_cli(binary, "ingest", root / f"{name}.npy", "--name", name, "--data", root / "data")
        tables[layer_id] = (name, data)
    with LocalServer(binary, root / "data", ram_cache="8MiB") as server:
        yield server.addr, hasher, tables


def backend_for(store, **kwargs) -> EngramRowBackend:
    addr, hasher, tables = store
    layers = [EngramLayer(layer_id, name) for layer_id, (name, _) in tables.items()]
    kwargs.setdefault("max_tokens", 64)
    return EngramRowBackend(GrpcTransport(addr), layers, device="cpu", hasher=hasher, **kwargs)


def expected(store, ids: np.ndarray, layer_index: int, columns: slice) -> np.ndarray:
    """The dequantized rows of ``ids [tokens, layers, 24]``'s columns in one layer's table."""
    _, hasher, tables = store
    data = tables[hasher.layer_ids[layer_index]][1]
    picked = ids[:, layer_index, columns]
    out = dequantized(data[np.maximum(picked, 0)])
    out[picked < 0] = 0
    return out


def test_rows_of_prefetched_hash_ids(store):
    _, hasher, _ = store
    ids = hasher.row_ids(TRACE[:40].astype(np.int64).reshape(1, 40)).reshape(40, 2, 24)
    with backend_for(store) as backend:
        slot = backend.prefetch(torch.from_numpy(ids.astype(np.int32)))  # vLLM's hashes are int32
        backend.wait()
        for li, layer_id in enumerate(hasher.layer_ids):
            rows = backend.rows(layer_id, slot=slot)
            assert rows.dtype == torch.bfloat16 and rows.shape == (40, 24, 256)
            assert np.array_equal(rows.float().numpy(), expected(store, ids, li, slice(None)))


def test_token_ids_are_hashed_by_v41s_rule(store):
    _, hasher, _ = store
    tokens = TRACE[100:124].astype(np.int64).reshape(4, 6)
    context = TRACE[97:100].astype(np.int64)[None].repeat(4, 0)
    ids = hasher.row_ids(tokens, context).reshape(24, 2, 24)
    with backend_for(store) as backend:
        backend.prefetch(token_ids=tokens, context=context)
        for li, layer_id in enumerate(hasher.layer_ids):
            got = backend.rows(layer_id).float().numpy()
            assert np.array_equal(got, expected(store, ids, li, slice(None)))


@pytest.mark.parametrize("ranks", [2, 3, 5])
def test_each_tensor_parallel_rank_gets_its_columns(store, ranks):
    _, hasher, _ = store
    ids = hasher.row_ids(TRACE[200:230].astype(np.int64).reshape(1, 30)).reshape(30, 2, 24)
    per_rank = -(-24 // ranks)
    for rank in range(ranks):
        with backend_for(store, num_shards=ranks, shard_rank=rank) as backend:
            backend.prefetch(ids)
            first, count = rank * per_rank, min(per_rank, 24 - rank * per_rank)
            for li, layer_id in enumerate(hasher.layer_ids):
                rows = backend.rows(layer_id).float().numpy()
                assert rows.shape == (30, per_rank, 256)
                want = expected(store, ids, li, slice(first, first + count))
                assert np.array_equal(rows[:, :count], want)
                assert not rows[:, count:].any()  # padding of the last rank


def test_dead_ids_give_zero_rows(store):
    _, hasher, _ = store
    ids = hasher.row_ids(TRACE[:8].astype(np.int64).reshape(1, 8)).reshape(8, 2, 24)
    ids[2, :, :] = -1
    ids[5, 1, 7] = -1
    with backend_for(store) as backend:
        backend.prefetch(ids)
        for li, layer_id in enumerate(hasher.layer_ids):
            rows = backend.rows(layer_id).float().numpy()
            assert not rows[2].any()
            assert np.array_equal(rows, expected(store, ids, li, slice(None)))


def test_two_slots_in_flight_and_an_out_buffer(store):
    _, hasher, _ = store
    a = hasher.row_ids(TRACE[300:310].astype(np.int64).reshape(1, 10)).reshape(10, 2, 24)
    b = hasher.row_ids(TRACE[400:416].astype(np.int64).reshape(1, 16)).reshape(16, 2, 24)
    with backend_for(store) as backend:
        slot_a = backend.prefetch(a)
        slot_b = backend.prefetch(b)
        assert slot_a != slot_b
        out = torch.empty(16, 24, 256, dtype=torch.bfloat16)
        assert backend.rows(hasher.layer_ids[1], slot=slot_b, out=out) is out
        assert np.array_equal(out.float().numpy(), expected(store, b, 1, slice(None)))
        got = backend.rows(hasher.layer_ids[0], slot=slot_a).float().numpy()
        assert np.array_equal(got, expected(store, a, 0, slice(None)))
        # The next prefetch reuses the slot of ``a`` (round robin) after its rows were read.
        assert backend.prefetch(b) == slot_a
        got = backend.rows(hasher.layer_ids[0]).float().numpy()
        assert np.array_equal(got, expected(store, b, 0, slice(None)))


def test_refusals_and_misuse(store):
    _, hasher, tables = store
    with backend_for(store) as backend:
        ids = np.zeros((4, 2, 24), dtype=np.int64)
        ids[1, 1, 3] = hasher.table_rows[1]  # one past the end of layer 14's table
        backend.prefetch(ids)
        assert backend.rows(hasher.layer_ids[0]).shape == (4, 24, 256)
        with pytest.raises(EngramStoreError, match="out of range|OUT_OF_RANGE|outside"):
            backend.rows(hasher.layer_ids[1])
        with pytest.raises(KeyError, match="layer 7"):
            backend.rows(7)
        with pytest.raises(ValueError, match="max_tokens"):
            backend.prefetch(np.zeros((65, 2, 24), dtype=np.int64))
        with pytest.raises(ValueError, match="hash_ids must be"):
            backend.prefetch(np.zeros((4, 2, 23), dtype=np.int64))
        with pytest.raises(ValueError, match="not both"):
            backend.prefetch(ids, token_ids=[[1]])
        # The backend still works after a refused lookup.
        good = hasher.row_ids(TRACE[:4].astype(np.int64).reshape(1, 4)).reshape(4, 2, 24)
        backend.prefetch(good)
        got = backend.rows(hasher.layer_ids[1]).float().numpy()
        assert np.array_equal(got, expected(store, good, 1, slice(None)))
