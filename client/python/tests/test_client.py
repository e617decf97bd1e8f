"""engram_store.Client against a live server (see conftest.py): lookups of every dtype against
the synthetic content formula of store/src/table/synth.rs, Engram n-gram lookups against local
hashing and the table's own files, errors with their status codes, prefetches, and the check that
the committed gRPC stubs match the proto.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import grpc
import ml_dtypes
import numpy as np
import pytest
from conftest import GROUP, GROUP_SEED, RAW_VOCAB, REPO, TABLES, V41_GROUP, engram_store_bin

from engram_store import Client
from engram_store import layout as L
from engram_store.errors import (
    EngramStoreError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
)
from engram_store.local_server import LocalServer
from engram_store.table_files import TableFiles

NUMPY_DTYPES = {
    "f32": np.float32,
    "f16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "i8": np.int8,
    "u8": np.uint8,
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
}
HEADS_TOTAL = 8
ROW_DIM = 16


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on uint64 arrays (wrapping)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def synth_values(seed: int, dtype: str, row_dim: int, rows: np.ndarray) -> np.ndarray:
    """Row values of a synthetic table (store/src/table/synth.rs) as float64 ``[n, row_dim]``.

    ``h = mix64(seed * 0x9E3779B97F4A7C15 ^ r * 0xC2B2AE3D27D4EB4F ^ (c // 8 + 1) *
    0x165667B19E3779F9)``, ``v = (h >> 8 * (c % 8)) & 0xFF``; the element is ``v`` as int8 for the
    float types and i8, ``v`` for u8, and ``v % 33 - 16`` for fp8 e4m3.
    """
    cols = np.arange(row_dim, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = mix64(
            (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15))
            ^ (np.asarray(rows, dtype=np.uint64)[:, None] * np.uint64(0xC2B2AE3D27D4EB4F))
            ^ ((cols[None, :] // np.uint64(8) + np.uint64(1)) * np.uint64(0x165667B19E3779F9))
        )
    v = ((h >> (np.uint64(8) * (cols % np.uint64(8)))[None, :]) & np.uint64(0xFF)).astype(np.uint8)
    if dtype == "u8":
        return v.astype(np.float64)
    if dtype == "fp8_e4m3":
        return (v % 33).astype(np.float64) - 16
    return v.view(np.int8).astype(np.float64)


@pytest.fixture(scope="module")
def client(served):
    with Client(served.addr) as c:
        yield c


def local_row_ids(served, layer: int, tokens: np.ndarray, context=None) -> np.ndarray:
    """``[batch, T, heads_total]`` row ids computed with numpy (layout.row_ids)."""
    out = []
    for i, seq in enumerate(tokens):
        ctx = () if context is None else served.compression_map[np.asarray(context[i])]
        out.append(L.row_ids(served.layout, served.compression_map[seq], layer, ctx))
    return np.stack(out)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_lookup_matches_the_synth_formula(client, name):
    dtype, rows, dim, seed = TABLES[name]
    rng = np.random.default_rng(1)
    ids = np.concatenate([[0, rows - 1, 5, 5], rng.integers(0, rows, size=300)])
    got = client.lookup(name, ids)
    assert got.shape == (ids.size, dim)
    assert got.dtype == np.dtype(NUMPY_DTYPES[dtype])
    np.testing.assert_array_equal(got.astype(np.float64), synth_values(seed, dtype, dim, ids))
    # A list of ints works as well as an array; no ids gives no rows.
    assert client.lookup(name, [1, 2]).tobytes() == client.lookup(name, np.array([1, 2])).tobytes()
    assert client.lookup(name, []).shape == (0, dim)


def test_tables_are_listed_and_described(client):
    names = [t.name for t in client.list_tables()]
    assert names == sorted(
        [*TABLES, f"{GROUP}.layer2", f"{GROUP}.layer5", f"{V41_GROUP}.layer1",
         f"{V41_GROUP}.layer14"]  # fmt: skip
    )
    info = client.describe_table("wide")
    assert (info.rows, info.row_dim, info.row_bytes) == (200, 1500, 6000)
    assert info.dtype == np.float32 and info.checksum == "crc32c" and info.version == 1
    layer = client.describe_table(f"{GROUP}.layer2")
    assert layer.row_dim == ROW_DIM and layer.dtype == np.dtype(ml_dtypes.bfloat16)


def test_lookup_ngrams_equals_local_hashing_and_the_table_files(client, served):
    rng = np.random.default_rng(7)
    tokens = rng.integers(0, RAW_VOCAB, size=(3, 10))
    tokens[2, 5:] = tokens[2, :5]  # repeated n-grams in the batch
    for layer in (2, 5):
        got = client.lookup_ngrams(GROUP, layer, tokens)
        assert got.shape == (3, 10, HEADS_TOTAL * ROW_DIM)
        assert got.dtype == np.dtype(ml_dtypes.bfloat16)
        ids = local_row_ids(served, layer, tokens)
        table = f"{GROUP}.layer{layer}"
        want = TableFiles(served.data_dir, table).gather(ids)
        assert got.tobytes() == want.tobytes()
        assert got.tobytes() == client.lookup(table, ids.reshape(-1)).tobytes()
        np.testing.assert_array_equal(
            got.reshape(-1, ROW_DIM).astype(np.float64),
            synth_values(GROUP_SEED, "bf16", ROW_DIM, ids.reshape(-1)),
        )
    # Lists of lists, and already compressed ids, give the same rows.
    as_lists = client.lookup_ngrams(GROUP, 2, tokens.tolist())
    compressed = client.lookup_ngrams(GROUP, 2, served.compression_map[tokens], compressed=True)
    direct = client.lookup_ngrams(GROUP, 2, tokens)
    assert as_lists.tobytes() == compressed.tobytes() == direct.tobytes()


def test_context_continues_a_sequence(client):
    rng = np.random.default_rng(8)
    tokens = rng.integers(0, RAW_VOCAB, size=(2, 12))
    whole = client.lookup_ngrams(GROUP, 5, tokens)
    rest = client.lookup_ngrams(GROUP, 5, tokens[:, 7:], context=tokens[:, :7])
    assert rest.tobytes() == whole[:, 7:].tobytes()
    # Decoding one token at a time.
    for p in range(12):
        context = tokens[:, max(0, p - 2) : p]
        step = client.lookup_ngrams(GROUP, 5, tokens[:, p : p + 1], context=context)
        assert step.tobytes() == whole[:, p : p + 1].tobytes(), p


def test_errors_carry_status_codes_and_name_the_value(client):
    with pytest.raises(NotFoundError) as e:
        client.lookup("nope", [1])
    assert e.value.code == grpc.StatusCode.NOT_FOUND and "nope" in e.value.details
    with pytest.raises(OutOfRangeError) as e:
        client.lookup("plain", [3000])
    assert "3000" in str(e.value)
    with pytest.raises(NotFoundError, match='unknown Engram group "nope"'):
        client.lookup_ngrams("nope", 2, [[1, 2]])
    with pytest.raises(NotFoundError, match=r"no layer 3; its layers: \[2, 5\]"):
        client.lookup_ngrams(GROUP, 3, [[1, 2]])
    with pytest.raises(InvalidArgumentError) as e:
        client.lookup_ngrams(GROUP, 2, [[1, 2, 3], [4, 5, RAW_VOCAB + 7]])
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "token id 2007 at sequence 1, position 2" in e.value.details
    assert isinstance(e.value, EngramStoreError)
    with pytest.raises(InvalidArgumentError, match="compressed token id 600"):
        client.lookup_ngrams(GROUP, 2, [[1, 600]], compressed=True)
    with pytest.raises(NotFoundError):
        client.prefetch_ngrams("nope", 2, [[1]]).result(timeout=10)
    with pytest.raises(ValueError, match="different lengths"):
        client.lookup_ngrams(GROUP, 2, [[1, 2], [3]])
    with pytest.raises(ValueError, match="negative"):
        client.lookup("plain", [-1])


def wait_for(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def fresh_client(served):
    """A client of a server of its own over the same data (an empty RAM tier, zero counters)."""
    with LocalServer(engram_store_bin(), served.data_dir, ram_cache="16MiB") as server:
        with Client(server.addr) as c:
            yield c


def test_prefetch_then_lookup_hits_ram(fresh_client, served):
    client = fresh_client
    rng = np.random.default_rng(9)
    tokens = rng.integers(0, RAW_VOCAB, size=(4, 16))
    distinct = np.unique(local_row_ids(served, 2, tokens)).size
    future = client.prefetch_ngrams(GROUP, 2, tokens)
    assert future.result(timeout=10) == distinct
    wait_for(lambda: client.stats().tiers["ram"]["prefetch_rows"] == distinct, "the prefetch")
    got = client.lookup_ngrams(GROUP, 2, tokens)
    assert got.shape == (4, 16, HEADS_TOTAL * ROW_DIM)
    ram = client.stats().tiers["ram"]
    assert (ram["hits"], ram["misses"], ram["prefetch_hits"]) == (distinct, 0, distinct)

    # Rows by id: accepted at once, then served from RAM.
    ids = [11, 12, 13, 2999]
    client.stats(reset=True)
    assert client.prefetch("plain", ids).result(timeout=10) == len(ids)
    wait_for(lambda: client.stats().tiers["ram"]["prefetch_rows"] == len(ids), "the prefetch")
    client.lookup("plain", ids)
    assert client.stats().tiers["ram"]["prefetch_hits"] == len(ids)


def test_committed_stubs_match_the_proto():
    pytest.importorskip("grpc_tools", reason="pip install './client/python[dev]' for this check")
    script = REPO / "client" / "python" / "scripts" / "gen_stubs.py"
    done = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_example_round_trip_is_byte_identical():
    """examples/ngrams_roundtrip.py end to end (tokenizer, or the shared trace without it)."""
    script = REPO / "client" / "python" / "examples" / "ngrams_roundtrip.py"
    env = {**os.environ, "ENGRAM_STORE_BIN": str(engram_store_bin())}
    done = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: the server's rows are byte-identical" in done.stdout
