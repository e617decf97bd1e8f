"""engram_store.torch.mapped without a GPU: the tiered gather kernel in Triton's interpreter over a
VRAM tier laid out as the server shares it (arena, two indexes and the control word naming the
active one, slot tags) and a host table, against numpy. A row is taken from the arena only when
the active index finds it and its slot's tag is its id: rows of a stale tag, a slot past the
capacity, the inactive index, no entry, or a retired tier come from the host; the misses a bulk
copy-up takes (``vram_misses``) and the kernel reading them from such a copy; and ShareTable's
file on the CPU. With a GPU and ``ENGRAM_STORE_GPU_BIN``, mapped rows against a real server's VRAM
tier and shared file. Skipped without torch (the kernel: without triton).
"""

from __future__ import annotations

import contextlib
import os
import re
import textwrap
import time

import numpy as np
import pytest
from conftest import assert_interpreted_ok

torch = pytest.importorskip("torch", reason="engram_store.torch needs torch (pip install torch)")

M64 = (1 << 64) - 1


def mix64(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def test_mix64_matches_the_servers():
    # The values cache/src/key_hash.rs pins for the server's mix64.
    assert mix64(1) == 0x5692161D100B05E5
    assert mix64(12345) == 0xF36CF1164265DD51
    assert mix64(383_999_999) == 0xC00605D70F67BAC2


def test_tiered_kernel_in_the_interpreter_reads_vram_only_for_rows_it_really_holds():
    pytest.importorskip("triton", reason="the Triton kernel needs triton (comes with CUDA torch)")
    script = textwrap.dedent(
        """
        import numpy as np, torch
        from engram_store.torch import rows as R
        from engram_store.torch.tiered import (FetchScratch, TieredRows, fetch_misses,
                                               gather_fetched_rows, tiered_gather_dequantize,
                                               vram_misses)

        M64 = (1 << 64) - 1
        def mix64(x):
            x ^= x >> 30; x = (x * 0xBF58476D1CE4E5B9) & M64
            x ^= x >> 27; x = (x * 0x94D049BB133111EB) & M64
            return x ^ (x >> 31)

        def refused(call, what):
            try:
                call()
            except ValueError:
                return
            raise AssertionError(f"{what} was not refused")

        def index(entries, buckets):
            keys = np.full(buckets, -1, np.int64); slots = np.zeros(buckets, np.int32)
            for i, s in entries.items():
                b = mix64(i) & (buckets - 1)
                while keys[b] != -1:
                    b = (b + 1) & (buckets - 1)
                keys[b] = i; slots[b] = s
            return keys, slots

        rng = np.random.default_rng(7)
        rows, capacity, buckets = 400, 60, 64
        host = rng.integers(0, 256, (rows, 264), dtype=np.uint8)
        host[:, 256:] = rng.integers(100, 150, (rows, 8), dtype=np.uint8)
        host[:, :256][(host[:, :256] & 0x7F) == 0x7F] = 0
        # The arena's rows differ from the host's, so the output shows where each row came from.
        arena = rng.integers(0, 256, (capacity, 264), dtype=np.uint8)
        arena[:, 256:] = rng.integers(100, 150, (capacity, 8), dtype=np.uint8)
        arena[:, :256][(arena[:, :256] & 0x7F) == 0x7F] = 0
        tags = np.full(capacity, -1, np.int64)
        resident = {int(i): s for s, i in enumerate(rng.choice(rows, 45, replace=False))}
        for i, s in resident.items():
            tags[s] = i
        entries = dict(resident)
        stale = next(i for i in range(rows) if i not in resident)
        far = next(i for i in range(rows) if i not in resident and i != stale)
        entries[stale] = 50   # the index points at slot 50, whose tag names no row
        entries[far] = 5000   # a slot past the capacity
        k1, s1 = index(entries, buckets)
        # Index 0 (inactive) maps every row to slot 0: never used.
        k0, s0 = index({i: 0 for i in range(0, rows, 7)}, buckets)
        keys = np.concatenate([k0, k1]); slots = np.concatenate([s0, s1])
        control = np.zeros(16, np.int32); control[0] = 1
        src = TieredRows(
            host=torch.from_numpy(host), arena=torch.from_numpy(arena),
            keys=torch.from_numpy(keys), slots=torch.from_numpy(slots),
            tags=torch.from_numpy(tags), control=torch.from_numpy(control), buckets=buckets,
        )
        ids = rng.integers(0, rows, (29, 6))
        ids[:6, 0] = list(resident)[:6]
        ids[7, 1], ids[8, 2], ids[9, 3] = stale, far, -1
        past = ids.copy()  # with an id past the table's end: a zero row, the id in `errors`
        past[11, 4] = rows + 5
        from_vram = np.vectorize(lambda i: i in resident)(ids)
        assert from_vram.sum() > 5 and (~from_vram).sum() > 5
        want_packed = np.where(
            from_vram[..., None],
            arena[np.vectorize(lambda i: resident.get(int(i), 0))(ids)],
            host[np.maximum(ids, 0)],
        )
        want = R.dequantize(torch.from_numpy(want_packed))
        want[9, 3] = 0
        for programs, block_rows, warps in ((1, 16, 4), (4, 16, 4), (2, 64, 4), (4, 4, 1),
                                            (3, 8, 2)):  # fmt: skip
            got = torch.full((29, 7, 256), 3.0, dtype=torch.bfloat16)
            tiered_gather_dequantize(src, torch.from_numpy(ids), got, max_programs=programs,
                                     block_rows=block_rows, num_warps=warps)
            assert torch.equal(got[:, :6].view(torch.int16), want.view(torch.int16)), programs
            assert (got[:, 6] == 3.0).all()
        errors = torch.zeros(1, dtype=torch.int64)
        checked = TieredRows(**{**src.__dict__, "errors": errors})
        got = torch.full((29, 6, 256), 3.0, dtype=torch.bfloat16)
        tiered_gather_dequantize(checked, torch.from_numpy(past), got)
        want_past = want.clone()
        want_past[11, 4] = 0
        assert torch.equal(got.view(torch.int16), want_past.view(torch.int16))
        assert int(errors[0]) == rows + 5
        errors.zero_()
        tiered_gather_dequantize(checked, torch.from_numpy(ids), got)
        assert int(errors[0]) == 0
        # Split in two kernels (the tier's rows, listing the others; then those from the host):
        # the same rows, the list exactly the live positions the tier does not hold.
        lacking = np.flatnonzero(~from_vram.reshape(-1) & (ids.reshape(-1) >= 0)).tolist()
        miss_list = torch.full((29 * 6 + 4,), -7, dtype=torch.int32)
        miss_count = torch.full((1,), 99, dtype=torch.int32)
        for programs, block_rows, warps in ((1, 16, 4), (4, 8, 2), (3, 64, 4), (64, 4, 1)):
            got = torch.full((29, 7, 256), 3.0, dtype=torch.bfloat16)
            tiered_gather_dequantize(src, torch.from_numpy(ids), got, max_programs=programs,
                                     block_rows=block_rows, num_warps=warps,
                                     split=(miss_list, miss_count))  # fmt: skip
            assert torch.equal(got[:, :6].view(torch.int16), want.view(torch.int16)), programs
            assert (got[:, 6] == 3.0).all()
            n = int(miss_count[0])
            assert sorted(miss_list[:n].tolist()) == lacking, programs
        got = torch.full((29, 6, 256), 3.0, dtype=torch.bfloat16)
        tiered_gather_dequantize(checked, torch.from_numpy(past), got,
                                 split=(miss_list, miss_count))  # fmt: skip
        assert torch.equal(got.view(torch.int16), want_past.view(torch.int16))
        assert int(errors[0]) == rows + 5
        errors.zero_()
        for bad in ({"hits": torch.zeros(29 * 6, dtype=torch.uint8)},
                    {"split": (miss_list[:10], miss_count)},
                    {"split": (miss_list.long(), miss_count)}):  # fmt: skip
            refused(lambda: tiered_gather_dequantize(
                src, torch.from_numpy(ids), got, **{"split": (miss_list, miss_count), **bad}),
                f"split with {list(bad)}")  # fmt: skip
        # The misses a bulk copy-up would take: every live row the tier does not hold.
        misses = torch.full((29 * 6 + 3,), 7, dtype=torch.int64)
        vram_misses(src, torch.from_numpy(ids), misses)
        want_misses = np.where(from_vram | (ids < 0), -1, ids).reshape(-1)
        assert (misses[:174].numpy() == want_misses).all() and (misses[174:] == 7).all()
        vram_misses(src, torch.from_numpy(past), misses)  # past the end: not a miss to copy
        assert misses[11 * 6 + 4] == -1
        assert (np.delete(misses[:174].numpy(), 11 * 6 + 4)
                == np.delete(want_misses, 11 * 6 + 4)).all()  # fmt: skip
        # Fetched (the misses read into device memory by two kernels, no host work between):
        # listed exactly the live rows the tier lacks (not one past the end), each once, their
        # packed bytes the host's; the tier's rows noted by slot (-2 - slot), the rest -1; the
        # gather reading the rows from there gives the same rows.
        flat_past = past.reshape(-1)
        want_listed = np.flatnonzero(~from_vram.reshape(-1) & (flat_past >= 0)
                                     & (flat_past < rows))  # fmt: skip
        held = np.flatnonzero(from_vram.reshape(-1))
        held_slots = np.array([-2 - resident[int(i)] for i in flat_past[held]])
        for programs, block_rows, warps in ((1, 16, 4), (3, 8, 2), (64, 4, 1)):
            staged_f, index_f = fetch_misses(src, torch.from_numpy(past), max_programs=programs,
                                             block_rows=block_rows, num_warps=warps)
            at = index_f.numpy()
            assert at.shape == (174,) and (np.flatnonzero(at >= 0) == want_listed).all()
            assert sorted(at[want_listed].tolist()) == list(range(want_listed.size))
            assert (staged_f[at[want_listed]].numpy() == host[flat_past[want_listed]]).all()
            assert (at[held] == held_slots).all()
            assert (np.delete(at, np.concatenate([held, want_listed])) == -1).all()
            for fill_programs, fill_rows in ((None, 16), (2, 8), (64, 4)):
                got = torch.full((29, 7, 256), 3.0, dtype=torch.bfloat16)
                gather_fetched_rows(checked, torch.from_numpy(past), got, staged_f, index_f,
                                    max_programs=fill_programs, block_rows=fill_rows)
                assert torch.equal(got[:, :6].view(torch.int16), want_past.view(torch.int16))
                assert (got[:, 6] == 3.0).all()
                assert int(errors[0]) == rows + 5
                errors.zero_()
        # A row that left its slot after the fetch (its tag rewritten), and then the whole tier
        # retired: read from the host, never the slot's new contents.
        gone = int(flat_past[held[0]])
        tags[resident[gone]] = rows + 1000
        want_gone = want_past.clone()
        want_gone[held[0] // 6, held[0] % 6] = R.dequantize(torch.from_numpy(host[gone]))
        got = torch.zeros(29, 6, 256, dtype=torch.bfloat16)
        gather_fetched_rows(src, torch.from_numpy(past), got, staged_f, index_f)
        assert torch.equal(got.view(torch.int16), want_gone.view(torch.int16))
        tags[resident[gone]] = gone
        control[1] = 1
        gather_fetched_rows(src, torch.from_numpy(past), got, staged_f, index_f)
        host_past = R.dequantize(torch.from_numpy(host[np.clip(past, 0, rows - 1)]))
        host_past[9, 3] = 0
        host_past[11, 4] = 0
        assert torch.equal(got.view(torch.int16), host_past.view(torch.int16))
        control[1] = 0
        for bad in ({"stage_index": index_f[:10]}, {"stage_index": index_f.long()},
                    {"staged": staged_f[:, :100]}):  # fmt: skip
            refused(lambda: gather_fetched_rows(
                src, torch.from_numpy(ids), got,
                **{"staged": staged_f, "stage_index": index_f, **bad}),
                f"gather_fetched_rows with {list(bad)}")  # fmt: skip
        # Into scratch of its own (a larger one, left dirty by another gather): the same.
        scratch = FetchScratch.allocate(200, R.V41_ROWS, torch.device("cpu"))
        for lookup in (ids, past):
            staged_f, index_f = fetch_misses(src, torch.from_numpy(lookup), scratch=scratch)
            assert staged_f is scratch.staged and index_f is scratch.stage_index
        at = scratch.stage_index[:174].numpy()
        assert (np.flatnonzero(at >= 0) == want_listed).all()
        assert int(scratch.count[0]) == want_listed.size
        assert (scratch.staged[at[want_listed]].numpy() == host[flat_past[want_listed]]).all()
        for small in (FetchScratch.allocate(100, R.V41_ROWS, torch.device("cpu")),
                      FetchScratch.allocate(200, R.RowFormat(head_dim=128), torch.device("cpu"))):
            refused(lambda: fetch_misses(src, torch.from_numpy(ids), scratch=small),
                    "fetch_misses into scratch it does not fit")  # fmt: skip
        staged_f, index_f = fetch_misses(src, torch.from_numpy(ids[:0]))
        assert staged_f.shape == (1, 264) and index_f.shape == (1,)
        for bad in (torch.from_numpy(ids.reshape(-1)), torch.from_numpy(ids).t()):
            refused(lambda: fetch_misses(src, bad),
                    f"fetch_misses of ids of shape {tuple(bad.shape)}")  # fmt: skip
        # Staged: misses read from a staged copy (rows unlike the host's, to tell them apart),
        # except one left unstaged (host), and one hit given a stage entry (still the arena).
        pos = np.flatnonzero(want_misses >= 0)
        staged = rng.integers(0, 256, (pos.size, 264), dtype=np.uint8)
        staged[:, 256:] = rng.integers(100, 150, (pos.size, 8), dtype=np.uint8)
        staged[:, :256][(staged[:, :256] & 0x7F) == 0x7F] = 0
        stage_index = np.full(29 * 6, -1, np.int32)
        stage_index[pos] = np.arange(pos.size)
        stage_index[pos[0]] = -1
        hit_pos = np.flatnonzero(from_vram.reshape(-1))[0]
        stage_index[hit_pos] = 0
        want_staged = want_packed.reshape(-1, 264).copy()
        want_staged[pos[1:]] = staged[1:]
        want_s = R.dequantize(torch.from_numpy(want_staged.reshape(29, 6, 264)))
        want_s[9, 3] = 0
        for programs, block_rows in ((1, 16), (3, 64)):
            got = torch.full((29, 6, 256), 3.0, dtype=torch.bfloat16)
            hits = torch.full((29 * 6 + 2,), 9, dtype=torch.uint8)
            tiered_gather_dequantize(src, torch.from_numpy(ids), got, max_programs=programs,
                                     block_rows=block_rows, staged=torch.from_numpy(staged),
                                     stage_index=torch.from_numpy(stage_index), hits=hits)
            assert torch.equal(got.view(torch.int16), want_s.view(torch.int16)), programs
            # Where each row came from: VRAM (1) for the tier's rows only (not the stale or
            # out-of-range slots, not a dead position, not a staged one), nothing past the end.
            assert (hits[:174].numpy() == from_vram.reshape(-1)).all(), programs
            assert (hits[174:] == 9).all()
        # With index 0 active every probe finds slot 0 only for its own rows, whose tags differ:
        # everything comes from the host.
        control[0] = 0
        got = torch.zeros(29, 6, 256, dtype=torch.bfloat16)
        tiered_gather_dequantize(src, torch.from_numpy(ids), got)
        host_want = R.dequantize(torch.from_numpy(host[np.maximum(ids, 0)]))
        host_want[9, 3] = 0
        tag0 = int(tags[0])
        keep = ids != tag0
        assert torch.equal(got[keep].view(torch.int16), host_want[keep].view(torch.int16))
        # A retired tier (word 1 of the control block set): every row from the host.
        control[0], control[1] = 1, 1
        got = torch.zeros(29, 6, 256, dtype=torch.bfloat16)
        tiered_gather_dequantize(src, torch.from_numpy(ids), got)
        assert torch.equal(got.view(torch.int16), host_want.view(torch.int16))
        print("ok")
        """
    )
    assert_interpreted_ok(script)


# --- against a GPU server ------------------------------------------------------------------------
#
# Needs torch with a CUDA device and ENGRAM_STORE_GPU_BIN, an engram-store built with
# --features cuda (as tests/test_cuda_regions.py); skipped otherwise, saying why.

GPU_TABLE = "shared"
GPU_ROWS = 200_000


@pytest.fixture(scope="module")
def shared_gpu(tmp_path_factory):
    from engram_store import Client
    from engram_store.local_server import LocalServer, run_cli

    if not torch.cuda.is_available():
        pytest.skip("mapped GPU test skipped: torch sees no CUDA device")
    binary = os.environ.get("ENGRAM_STORE_GPU_BIN")
    if not binary:
        pytest.skip("mapped GPU test skipped: set ENGRAM_STORE_GPU_BIN (--features cuda build)")
    device = int(os.environ.get("ENGRAM_STORE_GPU_DEVICE", "0"))
    data = tmp_path_factory.mktemp("engram-store-mapped") / "data"
    # 264-byte rows of random bytes: V4.1's row format (256 fp8 values, 8 scale bytes).
    run_cli(binary, "synth", "--name", GPU_TABLE, "--rows", GPU_ROWS, "--dim", 264, "--dtype",
            "u8", "--seed", 9, "--data", data)  # fmt: skip
    args = ("--gpu-budget", "256MiB", "--gpu-device", str(device), "--share-memory")
    with LocalServer(binary, data, ram_cache="256MiB", args=args) as server:
        with Client(server.addr) as client:
            yield client, torch.device("cuda", device)


def warm_vram(client, ids: np.ndarray, timeout_s: float = 30.0) -> int:
    """Hints ``ids`` until the server's VRAM tier holds as many rows (or the time is up)."""
    import time

    deadline = time.monotonic() + timeout_s
    resident = 0
    while time.monotonic() < deadline:
        client.prefetch(GPU_TABLE, ids.astype(np.uint64)).result()
        stats = client.stats()
        gpu = next((stats.tiers[k] for k in stats.tiers if k.startswith("gpu")), None)
        resident = 0 if gpu is None else int(gpu["resident_rows"])
        if resident >= ids.size:
            break
        time.sleep(0.5)
    return resident


def hot_and_cold_ids(client, device, rng: np.random.Generator, each: int):
    """Row ids ``[-1, 24]`` of the GPU table: ``each`` drawn from 5,000 rows warmed into its
    VRAM tier (``hot``), ``each`` from the whole table, the first a dead position (-1); the rows
    they must give, dequantized on ``device`` (a zero row for the dead one); and ``hot``."""
    from engram_store.torch import dequantize

    hot = rng.choice(GPU_ROWS, size=5000, replace=False)
    assert warm_vram(client, hot) >= 1000, "the VRAM tier took no rows in"
    ids = np.concatenate([rng.choice(hot, size=each), rng.integers(0, GPU_ROWS, size=each)])
    ids = ids.reshape(-1, 24)
    ids[0, 0] = -1
    packed = client.lookup(GPU_TABLE, np.maximum(ids, 0).reshape(-1))
    want = dequantize(torch.from_numpy(np.asarray(packed)).to(device).view(-1, 24, 264))
    want[0, 0] = 0
    return ids, want, hot


def held_in_vram(client, mapped, ids: np.ndarray, timeout_s: float = 30.0) -> np.ndarray:
    """Where ``ids`` are rows the mapped VRAM tier holds now (by its slot tags); more than 1,000.
    Hints the live ids and reads the tags again until so (or the time is up): the tier's
    resident count says nothing of which rows it holds when earlier tests filled it."""
    import time

    deadline = time.monotonic() + timeout_s
    live = ids[ids >= 0].astype(np.uint64)
    while True:
        tags = set(mapped.rows_view.tags.cpu().numpy().tolist())
        in_vram = np.isin(ids, np.array(sorted(tags - {-1}), dtype=np.int64))
        if in_vram.sum() > 1000 or time.monotonic() > deadline:
            break
        client.prefetch(GPU_TABLE, live).result()
        time.sleep(0.5)
    assert in_vram.sum() > 1000, f"only {in_vram.sum()} of the ids are in VRAM"
    return in_vram


def assert_rows(backend, layer: int, want, device) -> None:
    """``backend.rows(layer)``, once the device is done, bit for bit ``want``."""
    got = backend.rows(layer)
    torch.cuda.synchronize(device)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16)), layer


def test_mapped_rows_are_bit_exact_from_vram_and_host(shared_gpu):
    from engram_store.torch import (
        V41_ROWS,
        EngramLayer,
        EngramRowBackend,
        MappedTransport,
        dequantize,
    )

    client, device = shared_gpu
    rng = np.random.default_rng(1)
    ids, want, hot = hot_and_cold_ids(client, device, rng, each=3000)
    transport = MappedTransport(client, record_every=1)
    try:
        mapped = transport.table(GPU_TABLE, device)
        assert mapped.rows_view.arena is not None, "the server shared no VRAM tier"
        held_in_vram(client, mapped, ids)
        out = torch.zeros(ids.shape[0], 24, 256, dtype=torch.bfloat16, device=device)
        dev_ids = torch.from_numpy(ids).to(device)
        transport.gather(GPU_TABLE, dev_ids, out, V41_ROWS)
        torch.cuda.synchronize(device)
        assert torch.equal(out.view(torch.int16), want.view(torch.int16))
        # The backend's path: a side stream, the rows through rows(layer).
        backend = EngramRowBackend(
            transport, [EngramLayer(0, GPU_TABLE)], max_tokens=ids.shape[0], device=device
        )
        with backend:
            for _ in range(3):
                backend.prefetch(hash_ids=dev_ids.view(-1, 1, 24))
                got = backend.rows(0)
                torch.cuda.synchronize(device)
                assert torch.equal(got.view(torch.int16), want.view(torch.int16))
                assert backend.ready_event(0) is not None
            # prefetch(after=event): the gather waits for the ids' event alone, not for the work
            # queued behind it on the current stream; ids made on the device, and from the host
            # (moved on the side stream).
            made = dev_ids.clone()
            ready = torch.cuda.Event()
            ready.record()
            busy = torch.randn(2048, 2048, device=device)
            for _ in range(20):
                busy = busy @ busy / 2048
            for hash_ids in (made.view(-1, 1, 24), ids.reshape(-1, 1, 24)):
                backend.prefetch(hash_ids=hash_ids, after=ready)
                got = backend.rows(0)
                torch.cuda.synchronize(device)
                assert torch.equal(got.view(torch.int16), want.view(torch.int16))
        # A row id past the table's end: a zero row there, and the table's next gather raises,
        # naming it (once).
        bad_ids = dev_ids.clone()
        bad_ids[3, 7] = GPU_ROWS + 3
        want_bad = want.clone()
        want_bad[3, 7] = 0
        backend = EngramRowBackend(
            transport, [EngramLayer(0, GPU_TABLE)], max_tokens=ids.shape[0], device=device
        )
        with backend:
            backend.prefetch(hash_ids=bad_ids.view(-1, 1, 24))
            got = backend.rows(0)
            torch.cuda.synchronize(device)
            assert torch.equal(got.view(torch.int16), want_bad.view(torch.int16))
            backend.prefetch(hash_ids=dev_ids.view(-1, 1, 24))
            with pytest.raises(ValueError, match=f"row id {GPU_ROWS + 3}, past its end"):
                backend.rows(0)
            backend.prefetch(hash_ids=dev_ids.view(-1, 1, 24))
            got = backend.rows(0)
            torch.cuda.synchronize(device)
            assert torch.equal(got.view(torch.int16), want.view(torch.int16))
        # Two layers, staggered: layer 5's gather is queued by rows(0), on the side stream,
        # replayed as a graph from the third step; layers read in both orders.
        layers = [EngramLayer(0, GPU_TABLE), EngramLayer(5, GPU_TABLE)]
        both = torch.stack([dev_ids, dev_ids.flip(0)], dim=1)  # [tokens, 2, 24]
        want_5 = want.flip(0)
        backend = EngramRowBackend(
            transport, layers, max_tokens=ids.shape[0], device=device, stagger_gathers=True
        )
        with backend:
            for step in range(4):
                backend.prefetch(hash_ids=both)
                for layer in (0, 5) if step != 3 else (5, 0):
                    got = backend.rows(layer)
                    expected = want if layer == 0 else want_5
                    torch.cuda.synchronize(device)
                    assert torch.equal(got.view(torch.int16), expected.view(torch.int16)), layer
        # Inline gathers (steps of at least 100 tokens): on the reading stream, graphs and all.
        backend = EngramRowBackend(
            transport, layers, max_tokens=ids.shape[0], device=device, inline_min_tokens=100
        )
        with backend:
            for step in range(4):
                small = step == 1  # 99 tokens: on the side stream
                step_ids = both[:99] if small else both
                backend.prefetch(hash_ids=step_ids)
                for layer in (5, 0):
                    got = backend.rows(layer)
                    expected = (want if layer == 0 else want_5)[: 99 if small else None]
                    torch.cuda.synchronize(device)
                    assert torch.equal(got.view(torch.int16), expected.view(torch.int16)), layer
        # Gathers ahead (a prefill's next chunk): the misses copied up in bulk by the
        # transport's thread, the rest from VRAM, the kernel run by rows() on the reading
        # stream (inline) or on the transport's stream (side); the same rows, into the slot
        # and into `out`, read twice. Hot rows and rows never hinted (so the tier misses them:
        # this transport records nothing).
        mixed = np.concatenate([hot[:1500], rng.integers(0, GPU_ROWS, size=1500)])
        mixed = rng.permutation(mixed).reshape(-1, 24)
        packed = client.lookup(GPU_TABLE, mixed.reshape(-1))
        want_m = dequantize(torch.from_numpy(np.asarray(packed)).to(device).view(-1, 24, 264))
        dev_m = torch.from_numpy(mixed).to(device)
        both_m = torch.stack([dev_m, dev_m.flip(0)], dim=1)
        quiet = MappedTransport(client, record_every=0)
        try:
            for mode in ("inline", "side"):
                quiet.stage_ahead = mode
                backend = EngramRowBackend(quiet, layers, max_tokens=ids.shape[0], device=device)
                with backend:
                    before = quiet.staged_rows
                    for step in range(3):
                        mine = [torch.full_like(want_m, 7.0) for _ in layers] if step else None
                        slot = backend.prefetch(hash_ids=both_m, ahead=True, out=mine)
                        for layer in (0, 5, 5):
                            got = backend.rows(layer, slot=slot)
                            expected = want_m if layer == 0 else want_m.flip(0)
                            torch.cuda.synchronize(device)
                            assert torch.equal(
                                got.view(torch.int16), expected.view(torch.int16)
                            ), (mode, layer)  # fmt: skip
                            assert backend.ready_event(layer, slot) is not None
                    assert quiet.staged_rows - before > 6 * 1000, (mode, quiet.staged_rows)
                    slot = backend.prefetch(hash_ids=both_m, ahead=True)
                    backend.wait(slot=slot)  # on the host: the rows in the slot's own buffers
                    got = backend.rows(0, slot=slot)
                    torch.cuda.synchronize(device)
                    assert torch.equal(got.view(torch.int16), want_m.view(torch.int16)), mode
            # Steps of at least 100 tokens staged as gathers ahead are (stage_min_tokens), the
            # smaller ones gathered beside the model as before: the same rows either way.
            quiet.stage_ahead = "inline"
            backend = EngramRowBackend(
                quiet, layers, max_tokens=ids.shape[0], device=device, stage_min_tokens=100
            )
            with backend:
                for step in range(4):
                    small = step == 2  # 99 tokens: not staged
                    before = quiet.staged_gathers
                    backend.prefetch(hash_ids=both_m[:99] if small else both_m)
                    for layer in (5, 0):
                        got = backend.rows(layer)
                        expected = (want_m if layer == 0 else want_m.flip(0))
                        expected = expected[:99] if small else expected
                        torch.cuda.synchronize(device)
                        assert torch.equal(
                            got.view(torch.int16), expected.view(torch.int16)
                        ), (step, layer)  # fmt: skip
                    assert quiet.staged_gathers - before == (0 if small else 2), step
        finally:
            quiet.close()
        # stage_ahead off: gathers ahead read their misses over PCIe, and give the same rows.
        transport.stage_ahead = "off"
        backend = EngramRowBackend(transport, layers, max_tokens=ids.shape[0], device=device)
        with backend:
            staged = transport.staged_gathers
            backend.prefetch(hash_ids=both, ahead=True)
            got = backend.rows(5)
            torch.cuda.synchronize(device)
            assert torch.equal(got.view(torch.int16), want_5.view(torch.int16))
            assert transport.staged_gathers == staged
    finally:
        transport.close()


def test_foreseen_misses_are_copied_up_and_the_rows_bit_exact(shared_gpu):
    """``MappedTransport(predict_misses=True)``: a step's ids on the host are foreseen against
    what earlier gathers found in VRAM; the first step copies up every live row, later ones only
    the rows the tier lacked; the rows are bit-exact every time, a dead position gets a zero
    row, an id past the end a zero row and an error on the table's next gather, and ids on the
    device take the usual path."""
    from engram_store.torch import (
        EngramLayer,
        EngramRowBackend,
        MappedTransport,
        StagedGather,
    )

    client, device = shared_gpu
    ids, want, _ = hot_and_cold_ids(client, device, np.random.default_rng(5), each=2400)
    transport = MappedTransport(client, record_every=0, predict_misses=True)
    try:
        mapped = transport.table(GPU_TABLE, device)
        in_vram = held_in_vram(client, mapped, ids)
        live = int((ids >= 0).sum())
        backend = EngramRowBackend(
            transport, [EngramLayer(0, GPU_TABLE)], max_tokens=ids.shape[0], device=device
        )
        copied = []
        with backend:
            for _ in range(3):
                slot = backend.prefetch(hash_ids=ids.reshape(-1, 1, 24))
                assert isinstance(backend._slots[slot].futures[0].result(), StagedGather)
                assert_rows(backend, 0, want, device)
                residency = transport.residency(GPU_TABLE, device)
                copied.append(residency.foreseen_misses - sum(copied))
            assert copied[0] == live, copied  # nothing known yet: every live row copied up
            # Then only what the tier lacked (give or take rows its refresh moved meanwhile).
            assert copied[2] <= live - in_vram.sum() + 200, (copied, in_vram.sum())
            assert residency.wrong_misses >= in_vram.sum() - 200  # the first step's
            # Each gather's host time, by part (the harness logs it per arm).
            assert transport.predicted_gathers == 3
            spent = transport.predict_seconds
            assert spent["take"] > 0 and spent["foresee"] > 0 and spent["queue"] > 0
            # Ids on the device: the usual gather beside the model.
            dev = torch.from_numpy(ids).to(device)
            slot = backend.prefetch(hash_ids=dev.view(-1, 1, 24))
            assert not isinstance(backend._slots[slot].futures[0].result(), StagedGather)
            assert_rows(backend, 0, want, device)
            # An id past the table's end: a zero row, then the table's next gather raises.
            bad = ids.copy()
            bad[3, 7] = GPU_ROWS + 3
            want_bad = want.clone()
            want_bad[3, 7] = 0
            backend.prefetch(hash_ids=bad.reshape(-1, 1, 24))
            assert_rows(backend, 0, want_bad, device)
            backend.prefetch(hash_ids=ids.reshape(-1, 1, 24))
            with pytest.raises(ValueError, match=f"row id {GPU_ROWS + 3}, past its end"):
                backend.rows(0)
        # Two layers, staggered: layer 5's copy-up and gather are queued by rows(0).
        layers = [EngramLayer(0, GPU_TABLE), EngramLayer(5, GPU_TABLE)]
        both = np.ascontiguousarray(np.stack([ids, ids[::-1]], axis=1))  # [tokens, 2, 24]
        backend = EngramRowBackend(
            transport, layers, max_tokens=ids.shape[0], device=device, stagger_gathers=True
        )
        with backend:
            for _ in range(3):
                slot = backend.prefetch(hash_ids=both)
                assert backend._slots[slot].deferred[1] is not None
                for layer, expected in ((0, want), (5, want.flip(0))):
                    assert_rows(backend, layer, expected, device)
    finally:
        transport.close()


def test_share_table_refuses_a_device_without_a_vram_tier(shared_gpu):
    from engram_store.errors import FailedPreconditionError

    client, _ = shared_gpu
    with pytest.raises(FailedPreconditionError, match="GPU 7"):
        client.share_table(GPU_TABLE, device=7)


def synth_rows(data, name: str, rows: int, seed: int) -> None:
    """A table of ``rows`` random 264-byte rows (V4.1's row size) under ``data``."""
    from conftest import engram_store_bin

    from engram_store.local_server import run_cli

    run_cli(engram_store_bin(), "synth", "--name", name, "--rows", rows, "--dim", 264, "--dtype",
            "u8", "--seed", seed, "--data", data)  # fmt: skip


@contextlib.contextmanager
def sharing_server(tmp_path, tables: dict[str, tuple[int, int]], *args: str):
    """A server with ``--share-memory`` in a directory of the test's, over ``tables`` (name:
    rows, seed) synthesized first; yields a client and the data directory."""
    from conftest import engram_store_bin

    from engram_store import Client
    from engram_store.local_server import LocalServer

    data, shm = tmp_path / "data", tmp_path / "shm"
    shm.mkdir()
    for name, (rows, seed) in tables.items():
        synth_rows(data, name, rows, seed)
    flags = ("--share-memory", str(shm), *args)
    with LocalServer(engram_store_bin(), data, ram_cache="8MiB", args=flags) as server:
        with Client(server.addr) as client:
            yield client, data


def test_share_table_gives_a_file_of_every_row_on_the_cpu_too(tmp_path):
    """What a worker maps from a server with ``--share-memory``, without a GPU: the file holds
    every row at ``id * row_bytes``, exactly as Lookup returns them; refusals name the cause."""
    from conftest import engram_store_bin

    from engram_store import Client
    from engram_store.errors import FailedPreconditionError, NotFoundError
    from engram_store.local_server import LocalServer

    with sharing_server(tmp_path, {"t": (3000, 4)}) as (client, data):
        shm = tmp_path / "shm"
        shared = client.share_table("t")
        assert (shared.rows, shared.row_bytes) == (3000, 264)
        assert not shared.HasField("vram")
        path = shared.host_path
        assert path.startswith(str(shm)) and os.path.getsize(path) == shared.host_bytes
        rows = np.fromfile(path, dtype=np.uint8)[: 3000 * 264].reshape(3000, 264)
        ids = np.array([0, 1, 1499, 2999])
        assert np.array_equal(rows[ids], np.asarray(client.lookup("t", ids)))
        with pytest.raises(NotFoundError):
            client.share_table("nope")
        with pytest.raises(FailedPreconditionError, match="GPU 0"):
            client.share_table("t", device=0)
    with LocalServer(engram_store_bin(), data, ram_cache="8MiB") as server, Client(
        server.addr
    ) as client:
        with pytest.raises(FailedPreconditionError, match="--share-memory"):
            client.share_table("t")


@pytest.mark.parametrize("stagger", [False, True])
def test_the_backend_reads_the_shared_file_on_the_cpu(tmp_path, stagger):
    """``EngramRowBackend`` over ``MappedTransport`` on the CPU: the rows of every layer come from
    the shared file, as ``Lookup`` returns them dequantized (a gather ``ahead`` too, layers read
    in either order, with staggered gathers too); dead ids give zero rows; the transport's
    recording reaches the server as Prefetch requests."""
    from engram_store.torch import EngramLayer, EngramRowBackend, MappedTransport, dequantize

    with sharing_server(tmp_path, {"l1": (2000, 1), "l14": (2000, 2)}) as (client, _):
        sent: list[tuple[str, int]] = []
        real_prefetch = client.prefetch

        def counting_prefetch(table, ids):
            sent.append((table, len(ids)))
            return real_prefetch(table, ids)

        client.prefetch = counting_prefetch
        transport = MappedTransport(client, record_every=1)
        gathers: list[str] = []
        real_gather = transport.gather

        def counting_gather(table, *args, **kwargs):
            gathers.append(table)
            return real_gather(table, *args, **kwargs)

        transport.gather = counting_gather
        layers = [EngramLayer(1, "l1"), EngramLayer(14, "l14")]
        rng = np.random.default_rng(5)
        with EngramRowBackend(
            transport, layers, max_tokens=16, device="cpu", stagger_gathers=stagger
        ) as backend:
            for step in range(3):
                ids = rng.integers(0, 2000, (16, 2, 24))
                ids[3, 0, 5] = -1
                gathers.clear()
                backend.prefetch(hash_ids=torch.from_numpy(ids), ahead=step == 1)
                # Staggered: only layer 1's gather at the prefetch (a gather ahead: all of them).
                assert gathers == (["l1"] if stagger and step != 1 else ["l1", "l14"]), gathers
                order = ((1, "l1"), (14, "l14"))
                for layer, name in order if step != 2 else order[::-1]:
                    j = 0 if layer == 1 else 1
                    packed = np.asarray(client.lookup(name, np.maximum(ids[:, j], 0).reshape(-1)))
                    want = dequantize(torch.from_numpy(packed.copy()).view(16, 24, 264))
                    if j == 0:
                        want[3, 5] = 0
                    got = backend.rows(layer)
                    assert torch.equal(got.view(torch.int16), want.view(torch.int16)), name
                assert sorted(gathers) == ["l1", "l14"], gathers
        transport.close()  # waits for the recording thread
        assert {t for t, _ in sent} == {"l1", "l14"}, sent
        assert all(n in (16 * 24, 16 * 24 - 1) for _, n in sent), sent


def test_the_transport_follows_a_new_table_version_on_the_cpu(tmp_path):
    """A table reloaded to a new version while ``MappedTransport`` reads it: gathers keep
    returning whole rows of one version (the old file until the swap), the transport maps the
    new version within seconds of its recording thread's next look, and unmaps the old one."""
    from engram_store.torch import V41_ROWS, MappedTransport, dequantize

    with sharing_server(tmp_path, {"t": (2000, 1)}, "--watch-interval", "0") as (client, data):
        ids = torch.from_numpy(np.random.default_rng(3).integers(0, 2000, (32, 24)))

        def want(version: int) -> torch.Tensor:
            packed = np.asarray(client.lookup("t", ids.reshape(-1).numpy(), version=version))
            return dequantize(torch.from_numpy(packed.copy()).view(32, 24, 264))

        def gathered() -> torch.Tensor:
            out = torch.zeros(32, 24, 256, dtype=torch.bfloat16)
            transport.gather("t", ids, out, V41_ROWS)
            transport.record("t", ids)
            return out

        transport = MappedTransport(client, record_every=1)
        try:
            first = transport.table("t", torch.device("cpu"))
            assert first.version == 1
            assert torch.equal(gathered().view(torch.int16), want(1).view(torch.int16))
            synth_rows(data, "t", 2000, 2)
            [report] = client.reload(["t"])
            assert report["outcome"] == "SWAPPED", report
            new, old = want(2).view(torch.int16), want(1).view(torch.int16)
            assert not torch.equal(new, old)
            deadline = time.monotonic() + 20
            while transport.table("t", torch.device("cpu")).version != 2:
                assert time.monotonic() < deadline, "the transport never mapped version 2"
                got = gathered().view(torch.int16)
                assert torch.equal(got, old) or torch.equal(got, new)
                time.sleep(0.1)
            assert torch.equal(gathered().view(torch.int16), new)
            deadline = time.monotonic() + 10
            while not first.closed:
                assert time.monotonic() < deadline, "the old mapping was never closed"
                time.sleep(0.1)
        finally:
            transport.close()


def test_a_layer_whose_gather_fails_raises_in_rows_and_spares_the_other(tmp_path):
    """A device gather that cannot start (its table is unknown to the server) does not fail
    ``prefetch``: that layer's ``rows`` raises the server's error, the other layer's rows come.
    A row id past a table's end raises in that layer's ``rows`` too."""
    from engram_store.errors import NotFoundError
    from engram_store.torch import EngramLayer, EngramRowBackend, MappedTransport, dequantize

    with sharing_server(tmp_path, {"l1": (500, 9)}) as (client, _):
        layers = [EngramLayer(1, "l1"), EngramLayer(14, "missing")]
        ids = np.random.default_rng(2).integers(0, 500, (8, 2, 24))
        transport = MappedTransport(client, record_every=0)
        with EngramRowBackend(transport, layers, max_tokens=8, device="cpu") as backend:
            backend.prefetch(hash_ids=torch.from_numpy(ids))
            with pytest.raises(NotFoundError, match="missing"):
                backend.rows(14)
            packed = np.asarray(client.lookup("l1", ids[:, 0].reshape(-1)))
            want = dequantize(torch.from_numpy(packed.copy()).view(8, 24, 264))
            assert torch.equal(backend.rows(1).view(torch.int16), want.view(torch.int16))
            # A row id past the end: on the CPU the gather itself refuses it.
            past = ids.copy()
            past[2, 0, 5] = 500
            backend.prefetch(hash_ids=torch.from_numpy(past))
            with pytest.raises(IndexError, match="500"):
                backend.rows(1)
            # On a GPU the kernel writes it to the table's flag and the next gather raises:
            # the transport's side of that, with the flag set by hand.
            mapped = transport.table("l1", torch.device("cpu"))
            mapped._errors = np.array([777], dtype=np.int64)
            backend.prefetch(hash_ids=torch.from_numpy(ids))
            with pytest.raises(ValueError, match="row id 777, past its end .500 rows."):
                backend.rows(1)
            assert mapped.take_error() is None
            backend.prefetch(hash_ids=torch.from_numpy(ids))
            assert torch.equal(backend.rows(1).view(torch.int16), want.view(torch.int16))
        transport.close()


def test_the_gather_kernels_shape_is_checked_when_set(tmp_path):
    """``MappedTransport(block_rows=, num_warps=)`` and a view of it with them changed: a shape
    Triton cannot launch is refused when set, naming the value, not at the first gather; a view
    carries its own shape and leaves its parent's alone."""
    from engram_store.torch import MappedTransport

    with sharing_server(tmp_path, {"t": (100, 1)}) as (client, _):
        for bad, says in (
            ({"block_rows": 12}, "block_rows must be a power of two, got 12"),
            ({"num_warps": 3}, "num_warps must be 1, 2, 4, 8 or 16, got 3"),
        ):
            with pytest.raises(ValueError, match=re.escape(says)):
                MappedTransport(client, **bad)
        transport = MappedTransport(client, block_rows=8, num_warps=2)
        try:
            view = transport.view(num_warps=1, block_rows=32)
            assert (view.num_warps, view.block_rows) == (1, 32)
            assert (transport.num_warps, transport.block_rows) == (2, 8)
            with pytest.raises(ValueError, match="got 0"):
                transport.view(block_rows=0)
            with pytest.raises(TypeError, match="no setting grid"):
                transport.view(grid=4)
            assert transport.view(copy_threads=3).copy_threads == 3
            with pytest.raises(ValueError, match="copy_threads must be an int from 1 to 16"):
                transport.view(copy_threads=0)
            with pytest.raises(ValueError, match="got 99"):
                MappedTransport(client, copy_threads=99)
        finally:
            transport.close()


def test_copy_threads_are_checked_and_split_the_copy_exactly():
    """``take_rows`` in 1-5 parts (on a pool) copies exactly what ``np.take`` does, for no
    rows, one, and more rows than parts; ``copy_threads`` outside 1-16 is refused naming it."""
    import concurrent.futures

    from engram_store.torch.mapped import _check_copy_threads, take_rows

    rng = np.random.default_rng(3)
    host = rng.integers(0, 256, (1000, 264), dtype=np.uint8)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for n in (0, 1, 3, 777):
            ids = rng.integers(0, 1000, n)
            for parts in (1, 2, 5):
                out = np.full((n, 264), 7, np.uint8)
                take_rows(host, ids, out, pool, parts)
                assert (out == host[ids]).all(), (n, parts)
    for bad in (0, 17, True, 2.0, "4"):
        with pytest.raises(ValueError, match=re.escape(f"got {bad!r}")):
            _check_copy_threads(bad)
    _check_copy_threads(16)


def test_a_tables_own_grid_cap_takes_the_place_of_max_programs(tmp_path):
    """``MappedTransport(table_programs=)``: a table named there gathers on its own grid cap, the
    others on ``max_programs``, a gather ahead on ``ahead_programs`` (uncapped when None)
    whatever the table; a cap that is not a positive int (or None) is refused naming it, at
    construction and in a view, and a view's caps leave its parent's alone."""
    from engram_store.torch import MappedTransport
    from engram_store.torch.tiered import UNCAPPED

    with sharing_server(tmp_path, {"t": (100, 1)}) as (client, _):
        for bad in (0, -2, 1.5, True, "8"):
            says = f"table_programs['late'] must be a positive int or None, got {bad!r}"
            with pytest.raises(ValueError, match=re.escape(says)):
                MappedTransport(client, table_programs={"late": bad})
        transport = MappedTransport(client, max_programs=16, table_programs={"late": 4})
        try:
            assert transport.programs_for("late") == 4
            assert transport.programs_for("first") == 16
            assert transport.programs_for("late", ahead=True) == UNCAPPED
            view = transport.view(table_programs={"late": None, "first": 32})
            assert (view.programs_for("late"), view.programs_for("first")) == (None, 32)
            assert transport.programs_for("late") == 4 and transport.programs_for("first") == 16
            with pytest.raises(ValueError, match="got 0"):
                transport.view(table_programs={"late": 0})
        finally:
            transport.close()


def misses_case(client, device, seed: int, **settings):
    """A ``MappedTransport(**settings)`` over the GPU table, with ids of hot and cold rows
    (:func:`hot_and_cold_ids`, ``seed``), the rows they must give, a function counting the live
    ones its VRAM tier lacks now (by the tags), an output tensor for them and the ids on the
    device."""
    from engram_store.torch import MappedTransport

    ids, want, _ = hot_and_cold_ids(client, device, np.random.default_rng(seed), each=2400)
    transport = MappedTransport(client, record_every=0, **settings)

    def lacking() -> int:
        in_vram = held_in_vram(client, transport.table(GPU_TABLE, device), ids)
        return int((ids >= 0).sum() - in_vram.sum())

    out = torch.zeros(ids.shape[0], 24, 256, dtype=torch.bfloat16, device=device)
    return transport, ids, want, lacking, out, torch.from_numpy(ids).to(device)


def assert_listed(listed: int, before: int, after: int) -> None:
    """A gather listed as many misses as the tier lacked rows just before and after it (a
    refresh may move rows in between: held_in_vram's hints make the store take the cold rows
    in), give or take rows moved meanwhile."""
    assert min(before, after) - 200 <= listed <= max(before, after) + 200, (listed, before, after)


def replay_through_backend(transport, dev_ids, want, device, what: str) -> None:
    """Three steps of a one-layer backend over ``transport`` with ``dev_ids`` (``[T, 24]`` on
    the device): each step's rows bit for bit ``want``, the gather captured as a CUDA graph."""
    from engram_store.torch import EngramLayer, EngramRowBackend

    backend = EngramRowBackend(
        transport, [EngramLayer(0, GPU_TABLE)], max_tokens=dev_ids.shape[0], device=device
    )
    with backend:
        for _ in range(3):
            backend.prefetch(hash_ids=dev_ids.view(-1, 1, 24))
            assert_rows(backend, 0, want, device)
        assert backend._graphs, f"{what} was never captured as a graph"


def test_split_gathers_give_the_same_rows_and_list_the_misses(shared_gpu):
    """``MappedTransport(split_misses=True)``: each gather as two kernels (the VRAM tier's rows,
    listing the others; then those over PCIe), bit-exact, the list as long as the live rows the
    tier lacks; through the backend too, replayed as a CUDA graph from its second step."""
    from engram_store.torch import V41_ROWS

    client, device = shared_gpu
    transport, ids, want, lacking, out, dev_ids = misses_case(client, device, 11,
                                                              split_misses=True)  # fmt: skip
    try:
        transport.gather(GPU_TABLE, dev_ids, out, V41_ROWS)  # compiled first: the counts
        torch.cuda.synchronize(device)  # below span the gather alone, not a compile
        before = lacking()
        out.zero_()
        transport.gather(GPU_TABLE, dev_ids, out, V41_ROWS)
        torch.cuda.synchronize(device)
        assert torch.equal(out.view(torch.int16), want.view(torch.int16))
        _, miss_count = transport._split_scratch[(GPU_TABLE, str(out.device))]
        assert_listed(int(miss_count.item()), before, lacking())
        replay_through_backend(transport, dev_ids, want, device, "the split gather")
    finally:
        transport.close()


def test_counted_hits_are_the_rows_the_tier_holds(shared_gpu):
    """``MappedTransport(count_hits=True)``: a gather counts, on the device, the rows it read
    from the VRAM tier: the live rows less those the tier lacked just before and after it (by
    its tags), out of every position gathered; the rows bit-exact; counted on through the
    backend's graph replays; a view counts its own."""
    from engram_store.torch import V41_ROWS

    client, device = shared_gpu
    transport, ids, want, lacking, out, dev_ids = misses_case(client, device, 13,
                                                              count_hits=True)  # fmt: skip
    try:
        transport.gather(GPU_TABLE, dev_ids, out, V41_ROWS)  # compiled first
        torch.cuda.synchronize(device)
        transport.take_vram_hits()
        before = lacking()
        out.zero_()
        transport.gather(GPU_TABLE, dev_ids, out, V41_ROWS)
        hits, rows = transport.take_vram_hits()
        assert torch.equal(out.view(torch.int16), want.view(torch.int16))
        assert rows == ids.size and hits > 1000, (hits, rows)
        assert_listed(int((ids >= 0).sum()) - hits, before, lacking())
        assert transport.take_vram_hits() == (0, 0)
        view = transport.view(count_hits=True)
        replay_through_backend(view, dev_ids, want, device, "the counting gather")
        hits, rows = view.take_vram_hits()
        gathers = rows // ids.size  # 3, or more if a capture step also ran it eagerly
        assert rows == gathers * ids.size and gathers >= 3 and hits > 1000 * gathers, (hits, rows)
        assert transport.take_vram_hits() == (0, 0), "the view counted into its transport"
    finally:
        transport.close()


def test_fetched_gathers_read_the_misses_ahead_and_the_rest_on_read(shared_gpu):
    """``MappedTransport(fetch_misses=True)``: a gather's misses read over PCIe into device
    memory ahead (as many as the live rows the tier lacks), the rest from VRAM where the rows
    are read, bit-exact; through the backend (``prefetch`` on its side stream, replayed as a
    CUDA graph from a slot's second step, ``rows`` filling on the reading stream), staggered
    too."""
    from engram_store.torch import V41_ROWS, EngramLayer, EngramRowBackend
    from engram_store.torch.transport import FillOnRead

    client, device = shared_gpu
    transport, ids, want, lacking, out, dev_ids = misses_case(client, device, 12,
                                                              fetch_misses=True)  # fmt: skip
    try:
        transport.gather_fetched(GPU_TABLE, dev_ids, out, V41_ROWS, torch.cuda.Event()).wait()
        before = lacking()  # the kernels compiled: the counts span the fetch alone
        out.zero_()
        done = torch.cuda.Event()
        fetched = transport.gather_fetched(GPU_TABLE, dev_ids, out, V41_ROWS, done)
        assert fetched is not None
        listed = int((fetched.stage_index[: ids.size] >= 0).sum().item())
        assert_listed(listed, before, lacking())
        fetched.wait()
        assert torch.equal(out.view(torch.int16), want.view(torch.int16))
        for stagger in (False, True):
            backend = EngramRowBackend(
                transport, [EngramLayer(0, GPU_TABLE), EngramLayer(1, GPU_TABLE)],
                max_tokens=ids.shape[0], device=device, stagger_gathers=stagger,
            )  # fmt: skip
            static = dev_ids.view(-1, 1, 24).repeat(1, 2, 1)  # an engine's static ids buffer
            with backend:
                for _ in range(5):  # eager, then captured and replayed (two slots)
                    backend.prefetch(hash_ids=static)
                    assert isinstance(backend._slot(None).futures[0].result(), FillOnRead)
                    assert_rows(backend, 0, want, device)
                    assert_rows(backend, 1, want, device)
                assert backend._graphs, "the fetch was never captured as a graph"
    finally:
        transport.close()


def test_scratch_buffers_grow_to_the_gather_and_at_least_double():
    """A per-gather scratch buffer (split lists, hit flags) is kept while it holds the gather's
    rows, else replaced by one of the rows or twice its size, whichever is more."""
    from engram_store.torch.mapped import _grown_size

    assert _grown_size(None, 100) == 100
    assert _grown_size(torch.empty(100), 100) is None and _grown_size(torch.empty(100), 7) is None
    assert _grown_size(torch.empty(100), 101) == 200
    assert _grown_size(torch.empty(100), 450) == 450
