"""engram_store.torch without a server: V4.1 row dequantization (torch ops, and the Triton kernel in
Triton's interpreter) against an independent numpy reference, the gather with dead ids and padded
heads, the tensor-parallel column split, and V4.1 row ids (batched numpy and torch) against
``engram_store.layout``. Skipped without torch.
"""

from __future__ import annotations

import textwrap

import ml_dtypes
import numpy as np
import pytest
from conftest import REPO, assert_interpreted_ok

torch = pytest.importorskip("torch", reason="engram_store.torch needs torch (pip install torch)")

from engram_store import layout as L  # noqa: E402
from engram_store.torch import (  # noqa: E402
    V41_ROWS,
    NgramHasher,
    dequantize,
    gather_dequantize,
    head_shard,
    v41_layout,
)

CMAP = np.load(REPO / "testdata" / "engram" / "dsv3-compress.npy")
TRACE = np.fromfile(REPO / "testdata" / "traces" / "en-sample.tokens.u32", dtype="<u4")


def reference(packed: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) of V4.1 rows dequantized as vLLM does: fp8 e4m3 -> f32, times the f32
    whose exponent field is the scale byte, rounded to bf16."""
    values = packed[..., :256].view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    factor = (packed[..., 256:].astype(np.uint32) << 23).view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.reshape(*values.shape[:-1], 8, 32) * factor[..., None]
        return out.reshape(values.shape).astype(ml_dtypes.bfloat16).view(np.uint16)


def every_code_rows() -> np.ndarray:
    """Rows holding each of the 256 fp8 codes under scale bytes from 0 to 255."""
    scales = np.array([0, 1, 64, 100, 118, 126, 127, 128, 131, 150, 200, 254, 255], np.uint8)
    rows = np.zeros((scales.size * 8, 264), dtype=np.uint8)
    codes = np.arange(256, dtype=np.uint8)
    for i, s in enumerate(np.repeat(scales, 8)):
        rows[i, :256] = np.roll(codes, 32 * (i % 8))
        rows[i, 256:] = s
    return rows


def same_bits(got: torch.Tensor, want_bits: np.ndarray) -> None:
    got_bits = got.view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(want_bits.view(ml_dtypes.bfloat16).astype(np.float32))
    assert np.array_equal(np.isnan(got.float().numpy()), nan)
    assert np.array_equal(got_bits[~nan], want_bits[~nan])


def test_row_format_is_v41s():
    assert (V41_ROWS.head_dim, V41_ROWS.block, V41_ROWS.scales, V41_ROWS.row_bytes) == (
        256,
        32,
        8,
        264,
    )


def test_dequantize_every_code_under_every_scale():
    rows = every_code_rows()
    same_bits(dequantize(torch.from_numpy(rows)), reference(rows))
    # A scale byte s in 1..254 is 2^(s - 127) exactly.
    finite = rows[(rows[:, 256] > 0) & (rows[:, 256] < 255)]
    got = dequantize(torch.from_numpy(finite)).float().numpy()
    codes = finite[:, :256].view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    want = codes * np.exp2(finite[:, 256:257].astype(np.float64) - 127)
    ok = np.isfinite(want) & (np.abs(want) < 3e38)
    with np.errstate(over="ignore"):
        want = want.astype(ml_dtypes.bfloat16).astype(np.float32)
    assert np.array_equal(got[ok], want[ok])


def test_dequantize_into_a_strided_view():
    rows = np.random.default_rng(1).integers(0, 256, (5, 3, 264), dtype=np.uint8)
    rows[..., 256:] = 127
    out = torch.full((5, 4, 256), 7.0, dtype=torch.bfloat16)
    dequantize(torch.from_numpy(rows), out[:, :3])
    same_bits(out[:, :3], reference(rows))
    assert (out[:, 3] == 7.0).all()


def test_gather_with_dead_ids_and_padded_heads():
    rng = np.random.default_rng(2)
    table = rng.integers(0, 256, (500, 264), dtype=np.uint8)
    table[:, 256:] = rng.integers(110, 140, (500, 8), dtype=np.uint8)
    ids = rng.integers(0, 500, (9, 5))
    ids[3, 1] = -1
    out = torch.full((9, 6, 256), 5.0, dtype=torch.bfloat16)
    gather_dequantize(torch.from_numpy(table), torch.from_numpy(ids), out)
    want = reference(table[np.maximum(ids, 0)])
    want[3, 1] = 0
    same_bits(out[:, :5], want)
    assert (out[:, 5] == 5.0).all()
    # A token stride other than the head count (a layer's columns of [tokens, layers, columns]).
    both = torch.from_numpy(np.stack([ids, ids[::-1]], axis=1))
    out2 = torch.zeros(9, 5, 256, dtype=torch.bfloat16)
    gather_dequantize(torch.from_numpy(table), both[:, 1], out2)
    same_bits(out2, reference(table[np.maximum(ids[::-1], 0)]) * (ids[::-1, :, None] >= 0))


def test_triton_kernel_in_the_interpreter_matches_the_torch_path():
    pytest.importorskip("triton", reason="the Triton kernel needs triton (comes with CUDA torch)")
    script = textwrap.dedent(
        """
        import numpy as np, torch
        from engram_store.torch import rows as R
        rng = np.random.default_rng(3)
        table = torch.from_numpy(rng.integers(0, 256, (300, 264), dtype=np.uint8))
        table[:, 256:] = torch.from_numpy(rng.integers(100, 150, (300, 8), dtype=np.uint8))
        table[:, :256][(table[:, :256] & 0x7F) == 0x7F] = 0  # NaN payloads may differ
        ids = torch.from_numpy(rng.integers(-1, 300, (37, 2, 24)))
        for programs in (1, 3, 64):
            got = torch.zeros(37, 25, 256, dtype=torch.bfloat16)
            R._launch(table, ids[:, 1], got, 24, R.V41_ROWS, programs)
            want = torch.zeros(37, 25, 256, dtype=torch.bfloat16)
            R.gather_dequantize(table, ids[:, 1], want)
            assert torch.equal(got.view(torch.int16), want.view(torch.int16)), programs
            packed = table[:111].view(37, 3, 264)
            got = torch.zeros(37, 3, 256, dtype=torch.bfloat16)
            R._launch(packed, None, got, 3, R.V41_ROWS, programs)
            assert torch.equal(got.view(torch.int16), R.dequantize(packed).view(torch.int16))
        print("ok")
        """
    )
    assert_interpreted_ok(script)


@pytest.mark.parametrize(
    ("ranks", "want"),
    [
        (1, [(0, 24, 24)]),
        (2, [(0, 12, 12), (12, 12, 12)]),
        (3, [(0, 8, 8), (8, 8, 8), (16, 8, 8)]),
        (5, [(0, 5, 5), (5, 5, 5), (10, 5, 5), (15, 5, 5), (20, 4, 5)]),
        (8, [(3 * r, 3, 3) for r in range(8)]),
    ],
)
def test_head_shard_splits_columns_as_vllm(ranks, want):
    assert [head_shard(24, ranks, r) for r in range(ranks)] == want


def test_head_shard_refuses_a_rank_without_columns():
    with pytest.raises(ValueError, match="leave rank"):
        head_shard(24, 7, 6)  # ceil(24 / 7) = 4 columns a rank: rank 6 would start at 24
    with pytest.raises(ValueError):
        head_shard(24, 2, 2)


def test_v41_layout_follows_the_prime_rule():
    layout = v41_layout(1000, CMAP)
    seen = set()
    for layer in layout["layers"]:
        for order in layer["primes"]:
            assert all(p >= 1000 and L.is_prime(p) for p in order)
            assert order == sorted(order)
        flat = [p for order in layer["primes"] for p in order]
        assert len(flat) == 24 and not seen & set(flat)
        seen |= set(flat)
    assert [layer["layer_id"] for layer in layout["layers"]] == [1, 14]
    assert layout["max_ngram_size"] == 4 and layout["row_dim"] == 264
    # V4.1 draws multipliers with seed 0: the demo rule's rng(10007 * layer_id).
    for layer in layout["layers"]:
        assert layer["multipliers"] == L.multipliers(0, layer["layer_id"], 4, int(CMAP.max()) + 1)
    hasher = NgramHasher(layout, CMAP)
    assert hasher.table_rows == tuple(sum(map(sum, layer["primes"])) for layer in layout["layers"])


def test_batched_row_ids_equal_layout_row_ids_with_context():
    layout = v41_layout(5000, CMAP)
    hasher = NgramHasher(layout, CMAP)
    seqs = TRACE[:600].astype(np.int64).reshape(6, 100)
    ids = hasher.row_ids(seqs)
    assert ids.shape == (6, 100, 2, 24)
    for li, layer_id in enumerate(hasher.layer_ids):
        for n in range(6):
            assert np.array_equal(ids[n, :, li], L.row_ids(layout, CMAP[seqs[n]], layer_id))
    # Continuing from the last tokens as context gives the same ids; short context pads left.
    assert np.array_equal(hasher.row_ids(seqs[:, 40:], seqs[:, 30:40]), ids[:, 40:])
    assert np.array_equal(hasher.row_ids(seqs[:, 2:], seqs[:, :2]), ids[:, 2:])
    # torch, context as [N, 3] with -1 before the start.
    ctx = np.full((6, 3), -1)
    got = hasher.torch_row_ids(torch.from_numpy(seqs), torch.from_numpy(ctx))
    assert np.array_equal(got.numpy(), ids)
    got = hasher.torch_row_ids(torch.from_numpy(seqs[:, 50:]), torch.from_numpy(seqs[:, 47:50]))
    assert np.array_equal(got.numpy(), ids[:, 50:])


def test_row_ids_refuse_ids_outside_the_map():
    hasher = NgramHasher(v41_layout(1000, CMAP), CMAP)
    with pytest.raises(ValueError, match="outside the compression map"):
        hasher.row_ids([[CMAP.size]])
