"""Delivery into registered memory (LookupInto) against a live server (see conftest.py): host
shared-memory regions must hold exactly what Lookup and LookupNgrams return, at any offset; the
server's refusals (out of bounds, wrong token, unregistered region, CUDA IPC without a GPU tier)
must arrive with their status codes; closing a region must delete its file without leaving numpy
views dangling. The CUDA IPC path against a GPU server is in test_cuda_regions.py.
"""

from __future__ import annotations

import os

import grpc
import numpy as np
import pytest
from conftest import GROUP, TABLES

from engram_store import Client
from engram_store.errors import EngramStoreError, InvalidArgumentError, NotFoundError
from engram_store.regions import Region, ShmRegion, Written, cuda_ipc_handle
from engram_store.v1 import store_pb2 as pb


@pytest.fixture(scope="module")
def client(served):
    with Client(served.addr) as c:
        yield c


@pytest.mark.parametrize("name", sorted(TABLES))
def test_lookup_into_equals_lookup_at_every_offset(client, name):
    info = client.describe_table(name)
    rows = TABLES[name][1]
    rng = np.random.default_rng(3)
    ids = np.concatenate([[0, rows - 1, 4, 4], rng.integers(0, rows, size=200)])
    expected = client.lookup(name, ids)
    with client.shm_region((2 * ids.size + 3, info.row_dim), info.dtype) as region:
        assert region.size == (2 * ids.size + 3) * info.row_bytes
        n = client.lookup_into(region, name, ids)
        assert n == ids.size and isinstance(n, Written)
        assert (n.row_bytes, n.bytes_written, n.gpu_hits) == (
            info.row_bytes,
            ids.size * info.row_bytes,
            0,
        )
        assert region.array()[: ids.size].tobytes() == expected.tobytes()
        # A second batch at an offset of 3 rows + the first batch's bytes: the first stays.
        offset = (ids.size + 3) * info.row_bytes
        assert client.lookup_into(region, name, ids[::-1], offset=offset) == ids.size
        view = region.array(info.dtype, (ids.size, info.row_dim), offset=offset)
        assert view.tobytes() == expected[::-1].tobytes()
        assert region.array()[: ids.size].tobytes() == expected.tobytes()
        # An unaligned byte offset is fine: rows are bytes.
        assert client.lookup_into(region, name, ids[:5], offset=1) == 5
        assert region.array(np.uint8, 5 * info.row_bytes, offset=1).tobytes() == (
            expected[:5].tobytes()
        )
    assert region.closed


def test_lookup_ngrams_into_equals_lookup_ngrams(client, served):
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, 2000, size=(3, 17))
    for layer in served.layout["layers"]:
        lid = layer["layer_id"]
        expected = client.lookup_ngrams(GROUP, lid, tokens)
        with client.shm_region(expected.nbytes + 64) as region:
            n = client.lookup_ngrams_into(region, GROUP, lid, tokens, offset=64)
            assert n == tokens.size * 8 and n.bytes_written == expected.nbytes
            assert region.array(offset=64).tobytes() == expected.tobytes()
            assert not region.array(np.uint8, 64).any()
            # With context, and sequences of different lengths (fine here, no reshape).
            ctx = [[7, 8], [9]]
            seqs = [tokens[0, :5].tolist(), tokens[1, :9].tolist()]
            n = client.lookup_ngrams_into(region, GROUP, lid, seqs, context=ctx)
            want = b"".join(
                client.lookup_ngrams(GROUP, lid, [s], context=[c]).tobytes()
                for s, c in zip(seqs, ctx, strict=True)
            )
            assert n == 14 * 8 and region.array(np.uint8, len(want)).tobytes() == want


def test_server_refuses_writes_past_the_end(client):
    info = client.describe_table("plain")
    with client.shm_region(10 * info.row_bytes) as region:
        assert client.lookup_into(region, "plain", range(10)) == 10
        with pytest.raises(InvalidArgumentError, match="region") as e:
            client.lookup_into(region, "plain", range(11))
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(InvalidArgumentError):
            client.lookup_into(region, "plain", [1], offset=9 * info.row_bytes + 1)
        with pytest.raises(InvalidArgumentError):
            client.lookup_into(region, "plain", [1], offset=2**64 - 1)
        # The refused writes left the rows in place.
        assert region.array().tobytes() == client.lookup("plain", range(10)).tobytes()
        with pytest.raises(ValueError, match="offset"):
            client.lookup_into(region, "plain", [1], offset=-1)


def test_wrong_token_and_unregistered_regions(client):
    with client.shm_region(4096) as region:
        forged = Region(region.region_id, "0" * 32, region.size, lambda: None)
        with pytest.raises(InvalidArgumentError, match="token") as e:
            client.lookup_into(forged, "plain", [1])
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(InvalidArgumentError, match="token"):
            client.unregister_region(region.region_id, "0" * 32)
        # Forgotten on the server: NOT_FOUND from then on.
        client.unregister_region(region.region_id, region.token)
        with pytest.raises(NotFoundError) as e:
            client.lookup_into(region, "plain", [1])
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(NotFoundError):
            client.unregister_region(region.region_id, region.token)
    # close() after the server forgot the region still unmaps it, without raising.
    assert region.closed
    with pytest.raises(NotFoundError):
        client.lookup_into(Region(10**12, "x", 1, lambda: None), "plain", [1])


def test_bad_requests_name_what_is_wrong(client):
    with client.shm_region(1 << 16) as region:
        with pytest.raises(NotFoundError, match="nope"):
            client.lookup_into(region, "nope", [1])
        with pytest.raises(EngramStoreError, match="9999"):
            client.lookup_into(region, "plain", [9999])
        with pytest.raises(NotFoundError):
            client.lookup_ngrams_into(region, "no-group", 2, [[1, 2]])
        with pytest.raises(TypeError):
            client.lookup_into(object(), "plain", [1])


def test_closed_regions_keep_their_views_and_refuse_writes(client):
    region = client.shm_region((4, 3), np.float32)
    view = region.array()
    assert view.shape == (4, 3) and view.dtype == np.float32
    view[:] = 1.5
    region.close()
    region.close()
    assert float(view.sum()) == 18.0  # the mapping lives as long as the view
    with pytest.raises(ValueError, match="closed"):
        client.lookup_into(region, "plain", [1])
    with pytest.raises(ValueError, match="closed"):
        region.array()


def test_region_arguments_are_checked(client):
    with pytest.raises(ValueError):
        client.shm_region(0)
    with pytest.raises(ValueError):
        client.shm_region(16, np.float32)
    with pytest.raises(ValueError, match="name"):
        client.shm_region(16, name="../etc/passwd")
    name = f"engram-store-test-{os.getpid()}"
    with client.shm_region(16, name=name) as region:
        with pytest.raises(ValueError, match="needs"):
            region.array(np.float32, 5)


def test_regions_left_open_are_released_when_collected(client):
    region = client.shm_region(64)
    rid, token = region.region_id, region.token
    assert isinstance(region, ShmRegion)
    del region
    import gc
    import time

    gc.collect()
    # The local-socket connection closed with the region: the server releases it.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            client.unregister_region(rid, token)
        except NotFoundError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the region outlived its connection")


def test_path_regions_are_refused_without_a_word_about_the_path(client):
    for path in ["/etc/passwd", "/dev/shm/does-not-exist"]:
        req = pb.RegisterRegionRequest(shm=pb.SharedMemoryRegion(path=path, size=10))
        with pytest.raises(grpc.RpcError) as e:
            client._stub.RegisterRegion(req)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert path not in e.value.details()


def test_cuda_ipc_regions_need_a_gpu_server(client):
    """The CI server has no VRAM tier (no cuda build or no --gpu-budget)."""
    req = pb.RegisterRegionRequest(
        cuda_ipc=pb.CudaIpcRegion(ipc_handle=bytes(64), offset=0, size=1024, device=0)
    )
    with pytest.raises(EngramStoreError) as e:
        client._call(client._stub.RegisterRegion, req)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "gpu-budget" in e.value.details


def test_torch_ipc_handles_are_unwrapped():
    raw = bytes(range(64))
    assert cuda_ipc_handle(raw) == raw
    assert cuda_ipc_handle(b"\x02c" + raw) == raw
    with pytest.raises(ValueError, match="expandable_segments:False"):
        cuda_ipc_handle(b"\x02e" + raw + b"more")
    with pytest.raises(ValueError, match="unrecognised"):
        cuda_ipc_handle(b"\x02x" + raw)


def test_register_cuda_tensor_without_torch_says_so(client, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(ImportError, match="PyTorch"):
        client.register_cuda_tensor(object())


def test_a_region_closes_quietly_after_its_server_stopped(tmp_path):
    """Closing a region once the server is gone (a teardown after a time limit stopped both)
    raises nothing: its regions went with the server. An explicit ``unregister_region`` still
    says the server is unavailable."""
    from conftest import engram_store_bin

    from engram_store.errors import UnavailableError
    from engram_store.local_server import LocalServer, run_cli

    binary = engram_store_bin()
    data = tmp_path / "data"
    run_cli(binary, "synth", "--name", "t", "--rows", 64, "--dim", 8, "--dtype", "bf16",
            "--data", data)  # fmt: skip
    server = LocalServer(binary, data, ram_cache="1MiB")
    with server, Client(server.addr, timeout=2) as client:
        unregister = client._unregisterer(1, "any")
        server.stop()
        unregister()  # no raise
        with pytest.raises(UnavailableError):
            client.unregister_region(1, "any")
