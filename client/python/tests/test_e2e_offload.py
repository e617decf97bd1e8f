"""The CPU smoke run of benches/e2e/engram_offload.py, as CI runs it: a tiny model through every
arm, (d) and (e) against an engram-store the script starts itself. It must exit 0 and write JSON
whose arm entries have exactly the issue's keys, the same logits for the Engram arms (b)-(e) of a
phase and batch, and others for (a). Skipped without torch or a built engram-store.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

SCRIPT = REPO / "benches" / "e2e" / "engram_offload.py"
KEYS = {"arm", "phase", "batch", "tok_per_s", "logits_sha256"}


def server_binary() -> Path | None:
    """``$ENGRAM_STORE_BIN``, else the release build the script defaults to, else the debug one."""
    candidates = [os.environ.get("ENGRAM_STORE_BIN")]
    candidates += [REPO / "target" / kind / "engram-store" for kind in ("release", "debug")]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def smoke_run_binary() -> Path:
    """The server binary for a run of the script; skips the test without torch or one."""
    pytest.importorskip("torch", reason="engram_offload.py needs torch (pip install torch)")
    binary = server_binary()
    if binary is None:
        pytest.skip("no engram-store binary: cargo build --release -p engram-store")
    return binary


def test_cpu_smoke_run(tmp_path):
    binary = smoke_run_binary()
    out = tmp_path / "offload.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--json", str(out),
         "--svg", str(tmp_path / "offload.svg"), "--server-bin", str(binary)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    arms = result["arms"]
    assert {r["arm"] for r in arms} == set("abcde")
    assert all(set(r) == KEYS for r in arms)
    groups = {(r["phase"], r["batch"]) for r in arms}
    assert {phase for phase, _ in groups} == {"decode", "prefill"}
    for group in groups:
        sha = {r["arm"]: r["logits_sha256"] for r in arms if (r["phase"], r["batch"]) == group}
        assert len(set(sha.values()) - {sha["a"]}) == 1, sha
        assert sha["a"] != sha["b"] and all(r["tok_per_s"] > 0 for r in arms)
    assert result["checks"] == {"ok": True, "problems": [], "notes": []}
    # The rows every Engram arm fed its layers are the same, bit for bit, in every phase.
    for group in groups:
        rows = {
            r["rows_sha256"]
            for r in result["details"]
            if (r["phase"], r["batch"]) == group and r["arm"] != "a"
        }
        assert len(rows) == 1 and None not in rows, rows
    assert "identical in every phase" in done.stdout
    assert (tmp_path / "offload.svg").read_text().startswith("<svg")


def run_mapped(tmp_path: Path, *flags: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """The tiny CPU run with ``--transport mapped`` and ``flags``, the store sharing its tables
    in a directory of the test's: the finished process, the JSON's path and that directory."""
    binary = smoke_run_binary()
    out, shm = tmp_path / "offload.json", tmp_path / "shm"
    shm.mkdir()
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--json", str(out),
         "--server-bin", str(binary), "--transport", "mapped", "--share-dir", str(shm), *flags],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return done, out, shm


@pytest.mark.parametrize("stagger", [False, True])
def test_cpu_smoke_run_with_the_mapped_transport(tmp_path, stagger):
    """Arm (d) reading the rows itself from the file the store shares (``--transport mapped``,
    the server started with ``--share-memory`` in a directory of the test's; layer 14's gather
    at the step's start or, staggered, when layer 1 reads its rows): the same rows and logits
    as arm (c), and no shared file left behind. The staggered run also runs its arms in two
    interleaved rounds (``--rounds 2``), recording every gather's ids with the store
    (``--mapped-record-every 1``), each arm beginning its lookups at forward entry, before the
    model's first segment (``--no-after-first-segment``; after it is the default): each arm's
    entry then carries both rounds and its ratios to arm (c)'s. The other counts the rows its
    gathers read from a VRAM tier (``--mapped-count-hits``; none on the CPU) and logs them."""
    extra = ["--stagger-gathers", "--rounds", "2", "--mapped-record-every", "1",
             "--no-after-first-segment"] if stagger else ["--mapped-count-hits"]  # fmt: skip
    done, out, shm = run_mapped(tmp_path, "--arms", "acd", *extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "--share-memory" in log and "mapped the store's shared tables" in log, log[-3000:]
    result = json.loads(out.read_text())
    assert {r["arm"] for r in result["arms"]} == set("acd")
    # The store it started for arm (d) was shut down: its port no longer answers.
    addr = re.search(r"arm \(d\): engram-store on ([\d.]+):(\d+)", log)
    assert addr, log[-3000:]
    with pytest.raises(OSError):
        socket.create_connection((addr[1], int(addr[2])), timeout=2).close()
    assert result["checks"]["ok"], result["checks"]
    for group in {(r["phase"], r["batch"]) for r in result["details"]}:
        rows = {r["arm"]: r["rows_sha256"] for r in result["details"]
                if (r["phase"], r["batch"]) == group and r["arm"] != "a"}  # fmt: skip
        assert rows["c"] == rows["d"] and rows["c"] is not None, rows
    assert result["run"]["after_first_segment"] != stagger
    counted = "arm (d): its gathers read 0 of 0 rows from the VRAM tier"
    assert (counted in log) != stagger, log[-3000:]
    if stagger:
        assert result["run"]["rounds"] == 2 and not result["run"]["after_first_segment"]
        for r in result["details"]:
            tok = r["rounds_tok_per_s"]
            assert len(tok) == 2 and r["tok_per_s"] in tok, r
            assert len(r["rounds_vs_c"]) == 2 and r["median_vs_c"] > 0, r
            if r["arm"] == "c":
                assert r["rounds_vs_c"] == [1.0, 1.0], r
        assert "median of 2 rounds" in log, log[-3000:]
    assert list(shm.iterdir()) == [], "the server's shared file outlived it"


def load_harness():
    """benches/e2e/engram_offload.py and the modules beside it that it imports by name, as
    ``.main`` (engram_offload.py itself), ``.cli``, ``.tables``, ``.phases``, ``.store_arm`` and
    ``.warm`` (``offload_cli.py`` ...)."""
    import importlib.util
    import types

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("engram_offload_under_test", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    parts = ("cli", "tables", "phases", "store_arm", "warm")
    return types.SimpleNamespace(
        main=module, **{part: sys.modules[f"offload_{part}"] for part in parts}
    )


def test_round_orders_balance_who_follows_whom():
    """Over every pair of rounds each arm runs right after each neighbour as often as right
    before it (a variant of (d) no longer follows (d) in most rounds), and over ``2 x arms``
    rounds each arm starts a round, and ends one, equally often."""
    pytest.importorskip("torch", reason="engram_offload.py needs torch (pip install torch)")
    harness = load_harness()
    arms = ["b", "c", "d", "d:late"]
    orders = [harness.main.round_order(arms, k) for k in range(8)]
    assert all(sorted(o) == sorted(arms) for o in orders)
    for pair in range(4):
        follows = collections.Counter()
        for order in orders[2 * pair : 2 * pair + 2]:
            follows.update(zip(order, order[1:], strict=False))
        for (x, y), n in follows.items():
            assert follows[(y, x)] == n, (pair, x, y, orders)
    assert collections.Counter(o[0] for o in orders) == {a: 2 for a in arms}
    assert collections.Counter(o[-1] for o in orders) == {a: 2 for a in arms}


def test_rounds_and_phases_read_tokens_of_their_own():
    """With ``--rounds`` every round of every phase reads other tokens than the rest (a store
    arm's caches took in the last round's rows: re-reading them would measure a warm re-read),
    and the same shapes, so the runner's buffers and graphs serve every round."""
    pytest.importorskip("torch", reason="engram_offload.py needs torch (pip install torch)")
    harness = load_harness()
    trace = np.arange(300_000, dtype=np.int64) % 5000
    args = harness.cli.parse_args(["--tiny", "--rounds", "3", "--decode-batches", "4,16",
                               "--decode-steps", "7", "--prefill-chunk", "512"])  # fmt: skip
    by_round, reread = harness.phases.round_phases(trace, args, 3)
    assert reread == 0
    assert [[p.kind, p.batch] for p in (rounds[0] for rounds in by_round)] == [
        ["decode", 4], ["decode", 16], ["prefill", 512]
    ]
    seen = np.zeros(trace.size, dtype=np.int64)
    for rounds in by_round:
        assert len(rounds) == 3
        assert len({(p.tokens.shape, p.context.shape) for p in rounds}) == 1, rounds
        for p in rounds:
            assert np.array_equal(p.tokens, trace[p.positions])
            np.add.at(seen, p.positions.reshape(-1), 1)
    assert seen.max() == 1
    # A trace too short for that: the positions wrap around, and the overlap is counted.
    _, reread = harness.phases.round_phases(trace[:3000], args, 3)
    assert reread > 0


def test_a_time_limit_still_reports_the_phases_that_finished(tmp_path):
    """SIGTERM (``timeout``'s, as the GPU session scripts give every run) in the middle of the
    rounds: the phases that finished are printed and written as JSON, the check says the run was
    stopped, the exit status is non-zero, and the server the script started is gone."""
    binary = smoke_run_binary()
    out = tmp_path / "offload.json"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--arms", "acd", "--rounds",
         "2", "--decode-steps", "40", "--json", str(out), "--server-bin", str(binary)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "decode 64, median of 2 rounds" in line:
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    log = "".join(seen) + rest
    assert proc.returncode == 1, log[-3000:]
    assert "stopped by signal SIGTERM" in log, log[-3000:]
    result = json.loads(out.read_text())
    assert not result["checks"]["ok"]
    assert any("SIGTERM" in p for p in result["checks"]["problems"]), result["checks"]
    done = {(r["phase"], r["batch"]) for r in result["arms"]}
    assert ("decode", 64) in done and ("prefill", 256) not in done, done
    assert {r["arm"] for r in result["arms"]} == set("acd")


def test_d_variants_run_in_arm_ds_rounds_on_its_store(tmp_path):
    """``--d-variant``: arms on (d)'s store and mapping with a knob set otherwise, in the same
    rounds as (d): reported apart from the arms (the issue's JSON keeps arms a-e), each with its
    per-round ratio to (d), and having fed the same rows as (d), bit for bit (``host``: its ids
    hashed on the host, for a transport that foresees misses; on a GPU its other gathers split
    in two kernels; ``early``'s misses fetched ahead on a GPU). One server only."""
    done, out, _ = run_mapped(
        tmp_path, "--arms", "cd", "--rounds", "2", "--d-variant", "staged:stage_min_tokens=1",
        "--d-variant",
        "p4:mapped_programs=4,stagger_gathers=1,mapped_record_every=0,mapped_warps=2,"
        "mapped_block_rows=8,mapped_late_programs=2",
        "--d-variant", "early:after_first_segment=0,model_priority=-1,mapped_fetch_misses=1",
        "--d-variant", "host:mapped_predict_misses=1,mapped_split_misses=1",
        "--store-gpu-refresh-ms", "200", "--mapped-count-hits",
    )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert log.count("engram-store on") == 1, log[-3000:]
    # --mapped-count-hits: (d) and each variant count their own gathers (none in VRAM here)
    for arm in ("d", "d:staged", "d:p4", "d:early", "d:host"):
        assert f"arm ({arm}): its gathers read 0 of 0 rows" in log, (arm, log[-3000:])
    # (and the store was given the refresh period asked for)
    assert "--gpu-refresh-ms 200" in log, log[-3000:]
    result = json.loads(out.read_text())
    assert {r["arm"] for r in result["arms"]} == set("cd")
    assert result["run"]["store_gpu_refresh_ms"] == 200
    variants = result["d_variants"]
    assert variants["settings"] == {
        "d:staged": {"stage_min_tokens": 1},
        "d:p4": {"mapped_programs": 4, "stagger_gathers": 1, "mapped_record_every": 0,
                 "mapped_warps": 2, "mapped_block_rows": 8, "mapped_late_programs": 2},
        "d:early": {"after_first_segment": 0, "model_priority": -1, "mapped_fetch_misses": 1},
        "d:host": {"mapped_predict_misses": 1, "mapped_split_misses": 1},
    }
    groups = {(r["phase"], r["batch"]) for r in result["arms"]}
    got = {(r["arm"], r["phase"], r["batch"]) for r in variants["results"]}
    arms = ("d:staged", "d:p4", "d:early", "d:host")
    assert got == {(v, *g) for v in arms for g in groups}, got
    for r in variants["results"]:
        group = (r["phase"], r["batch"])
        d = next(a for a in result["details"]
                 if a["arm"] == "d" and (a["phase"], a["batch"]) == group)  # fmt: skip
        assert r["rows_sha256"] == d["rows_sha256"] and r["rows_sha256"] is not None
        assert len(r["rounds_vs_d"]) == 2 and r["median_vs_d"] > 0, r
    assert result["checks"]["ok"], result["checks"]
    assert "x (d)" in log


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nocolon", "expected NAME:KEY=VALUE"),
        ("x:warp_speed=3", "unknown key 'warp_speed'"),
        ("x:stage_min_tokens=many", "needs an integer, got 'many'"),
        ("x:stage_min_tokens", "needs a value"),
        ("x:", "sets nothing"),
        ("x:mapped_late_programs=0", "x: mapped_late_programs must be at least 1, got 0"),
        ("x:mapped_copy_threads=17", "x: mapped_copy_threads must be from 1 to 16, got 17"),
    ],
)
def test_a_bad_d_variant_is_refused_naming_it(spec, message):
    pytest.importorskip("torch", reason="engram_offload.py needs torch (pip install torch)")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--d-variant", spec],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]


def test_decode_alone_with_no_prefill_chunks():
    """``--prefill-chunks 0`` runs the decode phases alone; with no decode batches either, the
    script refuses, naming both."""
    pytest.importorskip("torch", reason="engram_offload.py needs torch (pip install torch)")
    harness = load_harness()
    trace = np.arange(200_000, dtype=np.int64) % 5000
    args = harness.cli.parse_args(["--tiny", "--rounds", "2", "--prefill-chunks", "0"])
    by_round, _ = harness.phases.round_phases(trace, args, 2)
    assert {p.kind for rounds in by_round for p in rounds} == {"decode"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--prefill-chunks", "0",
         "--decode-batches", ""],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "nothing would run" in done.stderr, done.stderr[-2000:]


def test_the_ram_band_warm_leaves_the_band_in_the_ram_tier(tmp_path):
    """Arm (e)'s RAM band (``--store-warm-ram-band``): the warm's rows after those the VRAM tier
    was given, read twice a chunk, take the place of other rows in a full RAM tier of a quarter
    of the tables: read again, most of them hit RAM (0.78 here; read once a chunk, 0.26: the
    policy, S3-FIFO's shape, lets a single read pass as a scan)."""
    binary = smoke_run_binary()
    harness = load_harness()
    from engram_store import Client
    from engram_store.local_server import LocalServer

    args = harness.cli.parse_args(["--tiny", "--data", str(tmp_path / "tables"),
                               "--server-bin", str(binary), "--store-warm-ram-band"])  # fmt: skip
    import torch

    tables = harness.tables.prepare_tables(args, torch.device("cpu"), lambda *_: None)
    trace = np.fromfile(args.trace, dtype="<u4").astype(np.int64)
    warm = harness.warm.warm_rows(trace, [], tables.hasher, 3000)
    logged = []
    ctx = {"args": args, "tables": tables, "log": logged.append, "warm": warm}
    skip = [r.size // 10 for r in warm.rows]  # as if the VRAM tier had taken the top tenth
    with LocalServer(binary, tables.data_dir, ram_cache=str(tables.nbytes // 4)) as server:
        with Client(server.addr) as client:
            # A RAM tier full of other rows first, each read twice (held as the band will be):
            # the rows the VRAM tier was given, then rows past the warm's.
            for name, rows, k in zip(tables.names, warm.rows, skip, strict=True):
                others = np.setdiff1d(np.arange(rows.max() + 1), rows[k:])[: 2 * rows.size]
                for first in range(0, others.size, 8192):
                    for _ in range(2):
                        client.lookup(name, others[first : first + 8192].astype(np.uint64))
            out = harness.warm.warm_ram_band(client, "e", ctx, skip=skip)
            capacity = harness.warm.ram_tier_rows(client.stats(), tables.row_bytes)
            assert 0 < out["ram_band_rows"] <= capacity, (out, capacity)
            client.stats(reset=True)
            total = sum(tables.rows)
            looked = 0
            for name, rows, n, k in zip(tables.names, warm.rows, tables.rows, skip, strict=True):
                band = rows[k : k + capacity * n // total].astype(np.uint64)
                for first in range(0, band.size, 8192):  # inside gRPC's 4 MiB replies
                    client.lookup(name, band[first : first + 8192])
                looked += band.size
            ram = client.stats().tiers["ram"]
    assert looked == out["ram_band_rows"]
    assert ram["hits"] >= 0.6 * looked, (ram, looked)
    assert "twice" in logged[-1], logged


def test_store_gpu_weights_split_the_vram_tier_as_the_store_does():
    """``--store-gpu-weight LAYER=W``: the store arms' ``--gpu-weight`` flags name each weighted
    layer's table, and the warm sizes each table's hints by its weighted share; bad weights are
    refused naming them."""
    pytest.importorskip("torch", reason="engram_offload.py needs torch (pip install torch)")
    harness = load_harness()
    args = harness.cli.parse_args(["--tiny", "--store-gpu-weight", "1=2"])
    assert args.store_gpu_weights == {1: 2.0}
    tables = harness.tables.Tables(Path("/nowhere"), {}, None, ["v41.layer1", "v41.layer14"],
                            [3000, 3000], 264)  # fmt: skip
    ctx = {"args": args, "layer_ids": [1, 14], "tables": tables}
    assert harness.warm.table_weights(ctx) == [2.0, 1.0]
    shares = harness.warm.vram_shares(9000, tables, harness.warm.table_weights(ctx))
    assert shares == [6000, 3000]
    for bad in ("1", "x=2", "1=0", "1=-1", "1=nan", "1=inf"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            harness.cli.parse_layer_weights([bad])
    with pytest.raises(ValueError, match="layer 1 given twice"):
        harness.cli.parse_layer_weights(["1=2", "1=3"])
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--store-gpu-weight", "7=2",
         "--prepare-only", "--server-bin", str(smoke_run_binary())],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and "no Engram table at layer(s) [7]" in done.stderr, (
        done.stderr[-2000:]
    )


def test_a_warm_of_every_row_keeps_the_warms_order_then_adds_the_rest():
    """``--store-warm-every-row``: each table's warm rows first, as ranked, then every row the
    warm did not see, in id order and counted 0: each row of the table once."""
    pytest.importorskip("torch", reason="engram_offload.py needs torch (pip install torch)")
    harness = load_harness()
    assert harness.cli.parse_args(["--tiny", "--store-warm-every-row"]).store_warm_every_row
    warm = harness.warm.WarmRows(
        tokens=5, held_out=9,
        rows=[np.array([4, 1, 7]), np.array([0])],
        counts=[np.array([3, 2, 2]), np.array([1])],
    )  # fmt: skip
    every = harness.warm.with_every_row(warm, [9, 3])
    assert every.rows[0].tolist() == [4, 1, 7, 0, 2, 3, 5, 6, 8]
    assert every.counts[0].tolist() == [3, 2, 2, 0, 0, 0, 0, 0, 0]
    assert every.rows[1].tolist() == [0, 1, 2] and every.counts[1].tolist() == [1, 0, 0]
    assert (every.tokens, every.held_out) == (5, 9)


def test_a_warm_waits_out_a_refresh_under_way():
    """The warm's settle rule (``warm_settle.WarmSettle``): the tier's resident rows unchanged for
    longer than the polls while a refresh is bringing rows in is not settled (it was, and the
    runs began on a tier still filling: 8.65M of 37.5M rows in session 13's call 4); settled
    once every hinted row is in, or the rows stay put with no refresh under way; a queued
    prefetch always waits; a store without a VRAM tier settles once its queue is empty."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from warm_settle import SETTLED_POLLS, WarmSettle
    finally:
        sys.path.remove(str(SCRIPT.parent))
    filling = WarmSettle(hinted=1000)
    assert not any(filling.settled(400, 0, 600) for _ in range(3 * SETTLED_POLLS))
    assert filling.settled(1000, 0, 0)
    short = WarmSettle(hinted=1000)
    polls = [short.settled(700, 0, 0) for _ in range(SETTLED_POLLS + 1)]
    assert polls == [False] * SETTLED_POLLS + [True]
    # A refresh seen under way starts the count again; so does a change of the rows.
    again = WarmSettle(hinted=1000)
    seen = [again.settled(700, 0, 0) for _ in range(SETTLED_POLLS - 1)]
    seen += [again.settled(700, 0, 300), again.settled(800, 0, 0)]
    seen += [again.settled(800, 0, 0) for _ in range(SETTLED_POLLS - 1)]
    assert not any(seen)
    assert again.settled(800, 0, 0)
    queued = WarmSettle(hinted=10)
    assert not queued.settled(10, 5, 0) and queued.settled(10, 0, 0)
    no_tier = WarmSettle(hinted=0)
    assert not no_tier.settled(None, 3, 0) and no_tier.settled(None, 0, 0)


def test_late_programs_cap_every_layer_after_the_first():
    """``--mapped-late-programs`` and the variant key ``mapped_late_programs``: the grid cap of
    the tables of every Engram layer after the first (by layer id, whatever the tables' order),
    the first's left to ``--mapped-programs``."""
    pytest.importorskip("torch", reason="engram_offload.py needs torch (pip install torch)")
    harness = load_harness()
    import arm_variants

    tables = harness.tables.Tables(Path("/nowhere"), {}, None, ["late.b", "first", "late.a"],
                            [10, 10, 10], 264)  # fmt: skip
    ctx = {"layer_ids": [20, 1, 14], "tables": tables}
    assert harness.store_arm.later_tables(ctx) == ["late.a", "late.b"]
    assert harness.store_arm.late_table_programs(8, ctx) == {"late.a": 8, "late.b": 8}
    assert harness.store_arm.late_table_programs(None, ctx) == {}
    variant = arm_variants.parse_variant("s:mapped_programs=32,mapped_late_programs=8")
    assert arm_variants.transport_overrides(variant, harness.store_arm.later_tables(ctx)) == {
        "max_programs": 32, "table_programs": {"late.a": 8, "late.b": 8}}  # fmt: skip
    args = harness.cli.parse_args(["--tiny", "--mapped-late-programs", "4"])
    assert args.mapped_late_programs == 4
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--mapped-late-programs", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "--mapped-late-programs must be at least 1, got 0" in (
        done.stderr
    ), done.stderr[-2000:]


def test_host_time_of_foreseen_gathers_is_summed_per_arm_and_logged_once():
    """``note_host_time`` adds a backend's foreseen gathers' host time to its arm's total and
    zeroes the transport's (a view is counted once); ``log_residency`` prints it per gather."""
    import types

    pytest.importorskip("torch", reason="engram_offload.py needs torch (pip install torch)")
    harness = load_harness()
    store_arm = harness.store_arm
    ctx: dict = {}
    for hashed in (0.002, 0.004):
        transport = types.SimpleNamespace(
            predicted_gathers=4, predict_seconds={"foresee": 0.004, "take": 0.008, "queue": 0.0}
        )
        backend = types.SimpleNamespace(hash_seconds=hashed)
        store_arm.note_host_time("d:pm", backend, transport, ctx)
        assert transport.predicted_gathers == 0 and transport.predict_seconds["take"] == 0.0
        store_arm.note_host_time("d:pm", backend, transport, ctx)  # nothing left to add
    idle = types.SimpleNamespace(predicted_gathers=0, predict_seconds={})
    store_arm.note_host_time("d", types.SimpleNamespace(hash_seconds=1.0), idle, ctx)
    lines: list[str] = []
    no_maps = types.SimpleNamespace(residency_maps=lambda: [])
    store_arm.log_residency("d", no_maps, lines.append, ctx)
    assert lines == [
        "arm (d:pm): host time per foreseen gather (8): hash 750 us, foresee 1000 us, "
        "take 2000 us, queue 0 us"
    ]
    assert "host_time" not in ctx


def test_kernel_profile_writes_each_arms_kernels_after_the_rounds(tmp_path):
    """``ENGRAM_OFFLOAD_KERNEL_PROFILE=DIR`` with ``--rounds``: after each phase's rounds, one more
    run per arm under the profiler; ``DIR/kernels-SHAPE.csv`` lists each arm's kernels (the
    operators, on the CPU) with their time, per phase and batch."""
    pytest.importorskip("torch", reason="engram_offload.py needs torch (pip install torch)")
    import csv

    profiles = tmp_path / "profiles"
    env = {**os.environ, "ENGRAM_OFFLOAD_KERNEL_PROFILE": str(profiles),
           "ENGRAM_OFFLOAD_KERNEL_TRACE": "b"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--arms", "ab", "--rounds", "2",
         "--json", str(tmp_path / "out.json")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with (profiles / "kernels-dense-4b.csv").open() as f:
        rows = list(csv.DictReader(f))
    result = json.loads((tmp_path / "out.json").read_text())
    phases = {(d["phase"], d["batch"]) for d in result["arms"]}
    assert {(r["arm"], r["phase"], int(r["batch"])) for r in rows} == {
        (arm, phase, batch) for arm in "ab" for phase, batch in phases
    }
    for r in rows:
        assert int(r["calls"]) >= 1 and float(r["total_us"]) > 0, r
        want = float(r["total_us"]) / int(r["calls"])
        assert float(r["mean_us"]) == pytest.approx(want, rel=1e-3, abs=0.06), r
    # (b) gathers its rows (an index op on the CPU); (a) has no Engram lookup at all
    names_b = {r["kernel"] for r in rows if r["arm"] == "b"}
    names_a = {r["kernel"] for r in rows if r["arm"] == "a"}
    assert names_b - names_a, (names_a, names_b)
    # ENGRAM_OFFLOAD_KERNEL_TRACE=b: (b)'s profiles as Chrome traces, per phase; none for (a)
    import gzip

    traces = sorted(p.name for p in profiles.glob("trace-*.json.gz"))
    assert traces == sorted(f"trace-dense-4b-b-{ph}-{b}.json.gz" for ph, b in phases), traces
    events = json.loads(gzip.decompress((profiles / traces[0]).read_bytes()))["traceEvents"]
    assert any(e.get("ph") == "X" for e in events), events[:5]


def test_the_runners_hash_input_is_defined_before_the_first_step(tmp_path):
    """A runner's context (the tokens before each sequence, hashed with the step's own) reads -1,
    "before the start", until a step copies its context in: on a GPU the hash graph is warmed up
    and captured before the first step, and an uninitialized buffer there indexed the compression
    map out of bounds under CUDA MPS, whose fresh memory is not zero (BENCHMARKS.md 10m). The
    hash of that first moment gives row ids within the tables."""
    torch = pytest.importorskip("torch", reason="engram_offload.py needs torch (pip install torch)")
    harness = load_harness()
    main = harness.main
    args = harness.cli.parse_args(["--tiny", "--device", "cpu", "--rounds", "1",
                                   "--decode-batches", "4", "--decode-steps", "3",
                                   "--prefill-chunks", "0", "--data", str(tmp_path)])  # fmt: skip
    device = torch.device("cpu")
    tables = main.prepare_tables(args, device, lambda _msg: None)
    trace = np.fromfile(args.trace, dtype="<u4").astype(np.int64)
    by_round, _ = harness.phases.round_phases(trace, args, 1)
    backbone = main.BACKBONES["tiny"]
    model = main.Decoder(backbone, device, args.seed, args.window + 64)
    kv_shape = (backbone.layers, 4, backbone.kv_heads, args.window, backbone.head_dim)
    kv = tuple(torch.zeros(kv_shape, dtype=torch.bfloat16) for _ in "kv")
    runner = main.Runner(model, by_round[0], kv, tables.hasher, graphs=False)
    assert (runner.context == -1).all()
    ids = runner._hash()
    assert int(ids.min()) >= 0
