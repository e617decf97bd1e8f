#!/usr/bin/env python3
"""Writes testdata/engram/vectors-v41.json: DeepSeek-V4.1 Engram row ids written from the rules.

This is a deliberately plain, independent statement of the rules (numpy for the RNG, Python ints
for everything else, one token at a time), not a copy of any implementation in this repository:

- primes: per layer, per n-gram order 2..max, the search restarts at ``engram_vocab_size - 1`` and
  each head takes the next prime above the previous one that no head of any order or layer took;
- multipliers: ``np.random.default_rng(10007 * layer_id).integers(0, bound, size=max_ngram_size,
  dtype=np.int64) * 2 + 1``, ``bound = max(1, (2**63 - 1) // compressed_vocab_size // 2)``;
- pad: the compressed id of ``engram_pad_token_id``;
- hash of position ``p``: walking back over shifts ``k = 0..max-1``, a shift that lands before the
  sequence start or on a dead token *blocks* it and every further shift; a blocked shift reads the
  pad id. ``rolling ^= value_k * m[k]``; after shift ``k >= 1`` the n-gram of order ``k + 1`` has
  hashed ``rolling % prime`` for each head, plus the head's offset (exclusive prefix sum of the
  layer's primes in column order) as the row id.

Cases hash a chunk of a longer sequence with the ids before it as context, which is what a
continued request sends; their expected rows come from hashing the whole sequence.

Run from the repository root: ``python3 scripts/gen_v41_vectors.py`` (numpy only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "testdata"


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def primes_of(config: dict) -> list[list[list[int]]]:
    taken: set[int] = set()
    layers = []
    for _ in config["engram_layer_ids"]:
        orders = []
        for _ in range(config["engram_max_ngram_size"] - 1):
            heads, current = [], config["engram_vocab_size"] - 1
            for _ in range(config["engram_n_heads"]):
                candidate = current + 1
                while candidate in taken or not is_prime(candidate):
                    candidate += 1
                taken.add(candidate)
                heads.append(candidate)
                current = candidate
            orders.append(heads)
        layers.append(orders)
    return layers


def multipliers_of(layer_id: int, max_ngram: int, compressed_vocab: int) -> list[int]:
    bound = max(1, (2**63 - 1) // compressed_vocab // 2)
    drawn = np.random.default_rng(10007 * layer_id).integers(
        low=0, high=bound, size=(max_ngram,), dtype=np.int64
    )
    return [int(v) * 2 + 1 for v in drawn]


def layout_of(config: dict, pad_id: int) -> dict:
    primes = primes_of(config)
    layers = []
    for layer_id, layer_primes in zip(config["engram_layer_ids"], primes, strict=True):
        layers.append(
            {
                "layer_id": layer_id,
                "multipliers": multipliers_of(
                    layer_id,
                    config["engram_max_ngram_size"],
                    config["engram_compressed_vocab_size"],
                ),
                "primes": layer_primes,
            }
        )
    return {
        "compressed_vocab_size": config["engram_compressed_vocab_size"],
        "pad_id": pad_id,
        "max_ngram_size": config["engram_max_ngram_size"],
        "n_head_per_ngram": config["engram_n_heads"],
        "row_dim": config["engram_head_dim"],
        "layers": layers,
    }


def rows_of_sequence(layout: dict, layer: dict, ids: list[int], dead: list[int]) -> list[list[int]]:
    """Row ids [position][column] of a whole sequence, one token at a time."""
    n = layout["max_ngram_size"]
    heads = layout["n_head_per_ngram"]
    pad = layout["pad_id"]
    flat = [p for order in layer["primes"] for p in order]
    offsets = [sum(flat[:j]) for j in range(len(flat))]
    out = []
    for position in range(len(ids)):
        blocked = False
        rolling = 0
        row = []
        for shift in range(n):
            lookback = position - shift
            blocked = blocked or lookback < 0 or bool(dead[lookback])
            value = pad if blocked else ids[lookback]
            rolling ^= value * layer["multipliers"][shift]
            assert rolling < 2**63, "the int64 reference would overflow"
            if shift > 0:
                for head in range(heads):
                    j = (shift - 1) * heads + head
                    row.append(rolling % flat[j] + offsets[j])
        out.append(row)
    return out


def case(layout: dict, name: str, ids, dead, start: int, end: int, raw=None) -> dict:
    """The chunk ids[start:end] with up to max_ngram_size - 1 ids of context before it."""
    keep = layout["max_ngram_size"] - 1
    ctx_from = max(0, start - keep)
    entry = {
        "name": name,
        "compressed_ids": ids[start:end],
        "dead": dead[start:end],
        "context": ids[ctx_from:start],
        "context_dead": dead[ctx_from:start],
        "layers": {},
    }
    if raw is not None:
        entry["raw_ids"] = raw[start:end]
        entry["context_raw_ids"] = raw[ctx_from:start]
    for layer in layout["layers"]:
        whole = rows_of_sequence(layout, layer, ids, dead)
        entry["layers"][str(layer["layer_id"])] = whole[start:end]
    return entry


def small_config(cmap: np.ndarray) -> dict:
    """V4.1-shaped (layers 1 and 14, 2..4-grams x 8 heads) over the DeepSeek-V3 map."""
    config = {
        "engram_layer_ids": [1, 14],
        "engram_num_embeddings": [],
        "engram_max_ngram_size": 4,
        "engram_n_heads": 8,
        "engram_head_dim": 64,
        "engram_vocab_size": 5000,
        "engram_compressed_vocab_size": int(cmap.max()) + 1,
        "engram_pad_token_id": 2,
    }
    config["engram_num_embeddings"] = [
        sum(sum(order) for order in layer) for layer in primes_of(config)
    ]
    pad_id = int(cmap[config["engram_pad_token_id"]])
    layout = layout_of(config, pad_id)

    demo = json.loads((TESTDATA / "engram" / "vectors-demo.json").read_text())
    text = demo["cases"][0]["raw_ids"]  # "Only Alexander the Great could tame the horse ..."
    trace = np.fromfile(TESTDATA / "traces" / "en-sample.tokens.u32", dtype="<u4")[:160]
    cases = []

    def add(name, raw, dead_positions, chunks, image_raw_id=None):
        raw = [int(r) for r in raw]
        dead = [1 if i in dead_positions else 0 for i in range(len(raw))]
        if image_raw_id is not None:
            # A dead token's id is never read: an image placeholder outside the map is fine.
            raw = [image_raw_id if d else r for r, d in zip(raw, dead, strict=True)]
        ids = [0 if d else int(cmap[r]) for r, d in zip(raw, dead, strict=True)]
        for start, end in chunks:
            cases.append(case(layout, f"{name} [{start}:{end}]", ids, dead, start, end, raw))

    n = len(text)
    add("text", text, set(), [(0, n), (5, n), (1, 2)])
    add("text, first token dead", text, {0}, [(0, n)])
    add("text, token 5 dead", text, {5}, [(0, n), (6, 9), (7, n)])
    add("text, image span 3..7", text, {3, 4, 5, 6}, [(0, n), (4, 9), (7, 8), (8, n)], 200_000)
    add("text, last token dead", text, {n - 1}, [(0, n)])
    add("text, all dead", text, set(range(n)), [(0, n)], 128_815)
    add("text, alternating", text, set(range(0, n, 2)), [(0, n), (3, n)])
    spans = set(range(20, 45)) | {70} | set(range(100, 103))
    add("trace, image spans", trace, spans, [(0, 160), (44, 80), (101, 160)], 150_000)
    return {"name": "v41-small", "config": config, "pad_id": pad_id, "map": "dsv3-compress.npy",
            "layout": layout, "cases": cases}


def wide_config() -> dict:
    """Odd shapes: layer 0 (rng seed 0), a 32-bit multiplier bound, 3 heads, compressed ids only."""
    config = {
        "engram_layer_ids": [0, 3, 7],
        "engram_num_embeddings": [],
        "engram_max_ngram_size": 3,
        "engram_n_heads": 3,
        "engram_head_dim": 32,
        "engram_vocab_size": 300,
        "engram_compressed_vocab_size": 2**31 + 5,
        "engram_pad_token_id": 1,
    }
    config["engram_num_embeddings"] = [
        sum(sum(order) for order in layer) for layer in primes_of(config)
    ]
    pad_id = 1_234_567_890
    layout = layout_of(config, pad_id)
    rng = np.random.default_rng(12345)
    ids = [int(v) for v in rng.integers(0, config["engram_compressed_vocab_size"], size=40)]
    dead = [1 if i in {0, 9, 10, 25, 39} else 0 for i in range(40)]
    cases = [case(layout, f"random [{s}:{e}]", ids, dead, s, e) for s, e in
             [(0, 40), (1, 40), (10, 11), (11, 30), (26, 40)]]
    return {"name": "v41-wide", "config": config, "pad_id": pad_id, "map": None,
            "layout": layout, "cases": cases}


def main() -> None:
    cmap = np.load(TESTDATA / "engram" / "dsv3-compress.npy")
    out = {"configs": [small_config(cmap), wide_config()]}
    path = TESTDATA / "engram" / "vectors-v41.json"
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
