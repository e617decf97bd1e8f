"""DeepSeek-V4.1 Engram tables from Python.

- ``engram_store.layout`` against ``testdata/engram/vectors-v41.json`` (written from the rules by
  ``scripts/gen_v41_vectors.py``): layouts from the ``engram_*`` keys, row ids with dead tokens
  and context, tensor-parallel column ranges;
- dequantization exact for every finite fp8 code over every scale byte 1..254, against a
  reference computed here in Python integers and floats (numpy, and torch where installed);
- a synthetic V4.1 checkpoint imported by the server binary (``import-hf``, see conftest):
  packed and dequantized lookups, LookupNgrams against local hashing, and the Rust-built
  compression map and layout against the Python ones (``python -m engram_store.layout
  --hf-config ... --tokenizer ...``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from conftest import V41_GROUP

from engram_store import Client
from engram_store import layout as L
from engram_store.dequant import dequantize_numpy, dequantize_torch
from engram_store.errors import InvalidArgumentError

REPO = Path(__file__).resolve().parents[3]
ENGRAM = REPO / "testdata" / "engram"


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads((ENGRAM / "vectors-v41.json").read_text(encoding="utf-8"))


def config_layout(c: dict) -> dict:
    if c["map"] is not None:
        cmap = np.load(ENGRAM / c["map"], allow_pickle=False)
        return L.layout_from_hf_config({"text_config": c["config"]}, cmap)
    return L.layout_from_hf_keys(c["config"], c["pad_id"])


def test_layouts_from_config_keys(vectors):
    for c in vectors["configs"]:
        assert config_layout(c) == c["layout"], c["name"]


def test_row_ids_with_dead_tokens_and_context(vectors):
    checked = 0
    for c in vectors["configs"]:
        layout = config_layout(c)
        for case in c["cases"]:
            for layer, want in case["layers"].items():
                got = L.row_ids(layout, case["compressed_ids"], int(layer), case["context"],
                                dead=case["dead"], context_dead=case["context_dead"])  # fmt: skip
                assert got.tolist() == want, f"{c['name']} {case['name']} layer {layer}"
                checked += 1
    assert checked == 18 * 2 + 5 * 3


def test_column_ranges_for_1_2_4_8_ranks(vectors):
    c = vectors["configs"][0]
    layout = config_layout(c)
    case = c["cases"][-1]
    for layer, want in case["layers"].items():
        want = np.asarray(want)
        for ranks in (1, 2, 4, 8):
            cols = [L.head_shard(24, ranks, r) for r in range(ranks)]
            assert [len(x) for x in cols] == [24 // ranks] * ranks
            for r, col in enumerate(cols):
                got = L.row_ids(layout, case["compressed_ids"], int(layer), case["context"],
                                dead=case["dead"], context_dead=case["context_dead"],
                                columns=col)  # fmt: skip
                np.testing.assert_array_equal(got, want[:, col.start : col.stop], f"{ranks}/{r}")
    with pytest.raises(ValueError, match="without columns"):
        L.head_shard(24, 7, 6)


def test_a_wrong_row_count_names_both_values(vectors):
    c = vectors["configs"][0]
    cmap = np.load(ENGRAM / c["map"], allow_pickle=False)
    keys = dict(c["config"], engram_num_embeddings=[c["config"]["engram_num_embeddings"][0], 5])
    with pytest.raises(ValueError, match=r"layer 14: .* 5 rows, but its primes sum to \d+"):
        L.layout_from_hf_config({"text_config": keys}, cmap)
    keys = dict(c["config"], engram_compressed_vocab_size=7)
    with pytest.raises(ValueError, match="is 7, but .* 98627"):
        L.layout_from_hf_config({"text_config": keys}, cmap)


# --- dequantization -----------------------------------------------------------------------------


def e4m3_value(code: int) -> float:
    """The e4m3fn value of a finite code, from the format's definition."""
    e, m = (code >> 3) & 0xF, code & 7
    v = m / 8 * 2.0**-6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
    return -v if code & 0x80 else v


def bf16_round(x: float) -> float:
    """``x`` (exact in float64) rounded to bfloat16, to nearest, ties to even."""
    if x == 0:
        return x
    a = abs(x)
    step = 2.0 ** (max(math.floor(math.log2(a)), -126) - 7)
    q = a / step
    r = math.floor(q)
    if q - r > 0.5 or (q - r == 0.5 and r % 2 == 1):
        r += 1
    v = r * step
    v = math.inf if v >= 2.0**128 else v
    return math.copysign(v, x)


def every_code_and_scale() -> tuple[np.ndarray, np.ndarray]:
    """Packed one-value rows (block 1): every finite code with every scale byte 1..254, and
    the reference bf16 value of each."""
    codes = [c for c in range(256) if c & 0x7F != 0x7F]
    rows, want = [], []
    for code in codes:
        for scale in range(1, 255):
            rows.append((code, scale))
            want.append(bf16_round(e4m3_value(code) * 2.0 ** (scale - 127)))
    return np.asarray(rows, dtype=np.uint8), np.asarray(want, dtype=np.float64)


def test_numpy_dequantization_is_exact_for_every_code_and_scale():
    packed, want = every_code_and_scale()
    assert packed.shape == (254 * 254, 2)
    got = dequantize_numpy(packed, row_dim=1, block=1)
    assert got.dtype == ml_dtypes.bfloat16 and got.shape == (254 * 254, 1)
    got = got[:, 0].astype(np.float64)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    # vLLM's scale bytes at the ends: 0 is a zero scale, 255 an infinite one.
    ends = dequantize_numpy(np.asarray([[0x38, 0], [0x38, 255]], np.uint8), 1, 1)
    assert ends.astype(np.float64)[:, 0].tolist() == [0.0, math.inf]


def test_a_v41_row_uses_the_scale_of_each_block():
    row = np.concatenate([np.full(256, 0x38, np.uint8), 127 + np.arange(8, dtype=np.uint8)])
    got = dequantize_numpy(row[None, :], 256, 32).astype(np.float64)[0]
    np.testing.assert_array_equal(got, np.repeat(2.0 ** np.arange(8), 32))
    with pytest.raises(ValueError, match="264"):
        dequantize_numpy(row[None, :-1], 256, 32)


def test_torch_dequantization_matches_numpy():
    torch = pytest.importorskip("torch")
    packed, _ = every_code_and_scale()
    got = dequantize_torch(packed, row_dim=1, block=1)
    assert got.dtype == torch.bfloat16
    want = dequantize_numpy(packed, row_dim=1, block=1)
    np.testing.assert_array_equal(got.view(torch.int16).numpy(), want.view(np.int16))


# --- a served V4.1 group ------------------------------------------------------------------------


def test_packed_and_dequantized_lookups(served):
    table = f"{V41_GROUP}.layer14"
    with Client(served.addr) as c:
        info = c.describe_table(table)
        assert (info.row_dim, info.row_bytes, info.row_format.kind, info.row_format.scale_block) \
            == (256, 264, "fp8_block_scaled", 32)  # fmt: skip
        ids = [0, 5, 99, 5]
        packed = c.lookup(table, ids)
        assert packed.dtype == np.uint8 and packed.shape == (4, 264)
        assert (packed[:, 256:] >= 112).all() and (packed[:, 256:] <= 135).all()
        bf16 = c.lookup(table, ids, dequantize=True)
        assert bf16.dtype == ml_dtypes.bfloat16 and bf16.shape == (4, 256)
        np.testing.assert_array_equal(bf16.view(np.int16),
                                      dequantize_numpy(packed, 256, 32).view(np.int16))
        with pytest.raises(ValueError, match="no scales"):
            c.lookup("plain", [1], dequantize=True)


def test_lookup_ngrams_of_the_imported_group(served):
    layout = json.loads((served.data_dir / f"{V41_GROUP}.engram" / "layout.json").read_text())
    cmap = np.load(served.data_dir / f"{V41_GROUP}.engram" / "compress.npy")
    raw = np.asarray([[5, 300, 301, 302, 4000, 5470, 7, 7]], dtype=np.int64)
    with Client(served.addr) as c:
        for layer in (1, 14):
            packed = c.lookup_ngrams(V41_GROUP, layer, raw)
            assert packed.shape == (1, 8, 24 * 264) and packed.dtype == np.uint8
            ids = L.row_ids(layout, cmap[raw[0]], layer)
            rows = c.lookup(f"{V41_GROUP}.layer{layer}", ids.reshape(-1))
            np.testing.assert_array_equal(packed.reshape(-1, 264), rows)
            bf16 = c.lookup_ngrams(V41_GROUP, layer, raw, dequantize=True)
            assert bf16.shape == (1, 8, 24 * 256)
            np.testing.assert_array_equal(
                bf16.reshape(-1, 256).view(np.int16),
                dequantize_numpy(rows, 256, 32).view(np.int16),
            )


def test_rust_map_and_layout_equal_the_python_ones(served, tmp_path):
    pytest.importorskip("tokenizers")
    ckpt = served.v41_checkpoint
    group = served.data_dir / f"{V41_GROUP}.engram"
    python_map = L.build_compression_map(ckpt / "tokenizer.json")
    rust_map = np.load(group / "compress.npy")
    np.testing.assert_array_equal(python_map, rust_map)
    out = tmp_path / "layout.json"
    argv = ["--hf-config", ckpt / "config.json", "--tokenizer", ckpt / "tokenizer.json",
            "--out", out]  # fmt: skip
    assert L.main([str(a) for a in argv]) == 0
    assert json.loads(out.read_text()) == json.loads((group / "layout.json").read_text())


# --- dead tokens and column ranges over the wire -------------------------------------------------


def v41_group(served) -> tuple[dict, np.ndarray]:
    group = served.data_dir / f"{V41_GROUP}.engram"
    return json.loads((group / "layout.json").read_text()), np.load(group / "compress.npy")


def local_rows(c, layout, cmap, layer, raw, dead, context=(), context_dead=(), columns=None):
    """The rows of one sequence by local hashing (``layout.row_ids``) and plain lookups."""
    def live(ids, mask):  # compressed ids, a dead token's left 0 (never read)
        return cmap[np.where(np.asarray(mask, bool), 0, np.asarray(ids, np.int64))]

    dead = dead if len(dead) else np.zeros(len(raw), bool)
    context_dead = context_dead if len(context_dead) else np.zeros(len(context), bool)
    ids = L.row_ids(layout, live(raw, dead), layer, live(context, context_dead), dead=dead,
                    context_dead=context_dead, columns=columns)  # fmt: skip
    return c.lookup(f"{V41_GROUP}.layer{layer}", ids.reshape(-1)), ids


def test_lookup_ngrams_with_dead_spans_and_context(served):
    layout, cmap = v41_group(served)
    placeholder = len(cmap) + 7  # an image token outside the map: dead, so never read
    raw = np.asarray([[5, 300, placeholder, placeholder, 301, 302, 7, 4000],
                      [9, 9, 12, 13, placeholder, 14, 15, 16]])  # fmt: skip
    dead = raw == placeholder
    context = [[11, placeholder, 12], [20]]
    context_dead = [[False, True, False], [False]]
    with Client(served.addr) as c:
        for layer in (1, 14):
            got = c.lookup_ngrams(V41_GROUP, layer, raw, dead=dead, context=context,
                                  context_dead=context_dead)  # fmt: skip
            assert got.shape == (2, 8, 24 * 264)
            for b in range(2):
                want, _ = local_rows(c, layout, cmap, layer, raw[b], dead[b], context[b],
                                     context_dead[b])  # fmt: skip
                np.testing.assert_array_equal(got[b].reshape(-1, 264), want, f"layer {layer}")
            # A dead position's rows are those of an all-pad window (a lone pad id, compressed).
            pad = c.lookup_ngrams(V41_GROUP, layer, [[layout["pad_id"]]], compressed=True)
            np.testing.assert_array_equal(got[0, 2], pad[0, 0])
            np.testing.assert_array_equal(got[1, 4], pad[0, 0])
            # Continued: the second half after the first as context equals the whole.
            half = c.lookup_ngrams(V41_GROUP, layer, raw[:, 4:], dead=dead[:, 4:],
                                   context=raw[:, :4], context_dead=dead[:, :4])  # fmt: skip
            whole = c.lookup_ngrams(V41_GROUP, layer, raw, dead=dead)
            np.testing.assert_array_equal(half, whole[:, 4:])
            # Dequantized with dead tokens: the same rows, as bf16.
            bf16 = c.lookup_ngrams(V41_GROUP, layer, raw, dead=dead, dequantize=True)
            np.testing.assert_array_equal(
                bf16.reshape(-1, 256).view(np.int16),
                dequantize_numpy(whole.reshape(-1, 264), 256, 32).view(np.int16),
            )


def test_column_ranges_for_1_2_4_8_ranks_over_the_wire(served):
    layout, cmap = v41_group(served)
    rng = np.random.default_rng(41)
    raw = rng.integers(0, len(cmap), size=(3, 11))
    dead = rng.random(raw.shape) < 0.2
    with Client(served.addr) as c:
        for layer in (1, 14):
            full = c.lookup_ngrams(V41_GROUP, layer, raw, dead=dead).reshape(3, 11, 24, 264)
            for ranks in (1, 2, 4, 8):
                parts = []
                for rank in range(ranks):
                    cols = L.head_shard(24, ranks, rank)
                    got = c.lookup_ngrams(V41_GROUP, layer, raw, dead=dead, columns=cols)
                    assert got.shape == (3, 11, len(cols) * 264)
                    got = got.reshape(3, 11, len(cols), 264)
                    np.testing.assert_array_equal(got, full[:, :, cols.start : cols.stop])
                    want, ids = local_rows(c, layout, cmap, layer, raw[0], dead[0], columns=cols)
                    np.testing.assert_array_equal(got[0].reshape(-1, 264), want)
                    parts.append(got)
                np.testing.assert_array_equal(np.concatenate(parts, axis=2), full, f"{ranks}")
            # LookupInto and Prefetch take the same columns.
            cols = L.head_shard(24, 8, 5)
            want = c.lookup_ngrams(V41_GROUP, layer, raw, dead=dead,
                                   columns=(cols.start, cols.stop))  # fmt: skip
            with c.shm_region(want.nbytes + 8) as region:
                n = c.lookup_ngrams_into(region, V41_GROUP, layer, raw, offset=8, dead=dead,
                                         columns=cols)  # fmt: skip
                assert n == raw.size * len(cols) and n.bytes_written == want.nbytes
                assert region.array(np.uint8, want.nbytes, 8).tobytes() == want.tobytes()
            _, ids = zip(*(local_rows(c, layout, cmap, layer, raw[b], dead[b], columns=cols)
                           for b in range(3)), strict=True)  # fmt: skip
            accepted = c.prefetch_ngrams(V41_GROUP, layer, raw, dead=dead, columns=cols).result()
            assert accepted == np.unique(np.concatenate(ids)).size


def test_bad_masks_and_ranges_are_invalid_argument(served):
    tokens = [[5, 6, 7, 8, 9]]
    with Client(served.addr) as c:
        with pytest.raises(InvalidArgumentError, match=r"TokenSequence\.dead = 3 bytes for the 5 "
                           r"tokens of sequence 0: a dead mask is empty or has one byte per token"):
            c.lookup_ngrams(V41_GROUP, 14, tokens, dead=[[0, 1, 0]])
        with pytest.raises(InvalidArgumentError, match=r"TokenSequence\.context_dead = 1 bytes "
                           r"for the 2 context tokens of sequence 1"):
            c.lookup_ngrams(V41_GROUP, 14, [[1], [2]], context=[[3, 4], [5, 6]],
                            context_dead=[[0, 0], [1]])  # fmt: skip
        with pytest.raises(InvalidArgumentError, match=r"LookupNgramsRequest\.columns = 4\.\.4"):
            c.lookup_ngrams(V41_GROUP, 14, tokens, columns=range(4, 4))
        with pytest.raises(InvalidArgumentError, match=r"columns 21\.\.25 .* layer 14 .* 24 hash"):
            c.lookup_ngrams(V41_GROUP, 14, tokens, columns=(21, 25))
        with pytest.raises(InvalidArgumentError, match=r"TokenSequence\.dead"):
            c.prefetch_ngrams(V41_GROUP, 14, tokens, dead=[[1]]).result()
        with pytest.raises(InvalidArgumentError, match=r"columns 24\.\.26"):
            c.prefetch_ngrams(V41_GROUP, 1, tokens, columns=(24, 26)).result()
        with c.shm_region(1 << 16) as region:
            with pytest.raises(InvalidArgumentError, match=r"TokenSequence\.dead"):
                c.lookup_ngrams_into(region, V41_GROUP, 14, tokens, dead=[[1, 0]])
            with pytest.raises(InvalidArgumentError, match=r"LookupNgramsRequest\.columns"):
                c.lookup_ngrams_into(region, V41_GROUP, 14, tokens, columns=(9, 2))
        with pytest.raises(ValueError, match="dead has 2 sequences, token_ids has 1"):
            c.lookup_ngrams(V41_GROUP, 14, tokens, dead=[[0] * 5, [0] * 5])
        with pytest.raises(ValueError, match="step 1"):
            c.lookup_ngrams(V41_GROUP, 14, tokens, columns=range(0, 24, 2))
