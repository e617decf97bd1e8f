"""Engram row ids from token ids by DeepSeek-V4.1's rule, for a whole batch at once: numpy on the
host (:meth:`NgramHasher.row_ids`) and torch on any device (:meth:`NgramHasher.torch_row_ids`,
no host sync, so it can run inside a CUDA graph).

For text, V4.1 hashes as the Engram demo does (``engram_store.layout``) given V4.1's layout: every
n-gram order searches its head primes upward from ``engram_vocab_size - 1`` (one vocabulary size
for all orders, no prime reused), and the multipliers come from
``numpy.random.default_rng(10007 * layer_id)`` (seed 0). :func:`v41_layout` builds that layout with
``engram_store.layout.build_layout``. Dead tokens (image spans) are not handled here.

This is the part of issue #12's V4.1 hashing that the Engram-in-the-loop benchmark needs; it is
meant to move into ``engram_store.layout`` once that module has the V4.1 rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from engram_store.layout import build_layout
from engram_store.torch.rows import V41_ROWS, RowFormat

__all__ = ["V41_LAYER_IDS", "NgramHasher", "v41_layout"]

#: The model layers that carry Engram in DeepSeek-V4.1.
V41_LAYER_IDS = (1, 14)


def v41_layout(
    engram_vocab_size: int,
    compression_map: np.ndarray,
    *,
    layer_ids: Sequence[int] = V41_LAYER_IDS,
    max_ngram_size: int = 4,
    n_heads: int = 8,
    pad_raw_id: int = 2,
    row_format: RowFormat = V41_ROWS,
) -> dict[str, Any]:
    """The layout of V4.1-geometry Engram tables (n-grams 2..``max_ngram_size`` x ``n_heads``
    hash heads per layer), whose rows are the packed bytes of ``row_format`` (a table of dtype u8
    and ``row_dim = row_format.row_bytes``). A layer's table has ``sum(primes)`` rows."""
    config = {
        "vocab_per_ngram": [engram_vocab_size] * (max_ngram_size - 1),
        "layer_ids": list(layer_ids),
        "max_ngram_size": max_ngram_size,
        "n_head_per_ngram": n_heads,
        "seed": 0,
        "pad_raw_id": pad_raw_id,
        "row_dim": row_format.row_bytes,
    }
    return build_layout(config, compression_map)


class NgramHasher:
    """Row ids of every layer of a layout for batches of token sequences.

    Args:
        layout: a layout dict (``engram_store.layout.build_layout``, :func:`v41_layout`).
        compression_map: raw token id -> compressed id.

    Ids come out as ``[N, T, layers, columns]`` (int64; layers in layout order, columns in
    (n-gram order, head) order), the global row id of each column in its layer's table.
    """

    def __init__(self, layout: Mapping[str, Any], compression_map: np.ndarray):
        self.layer_ids = tuple(layer["layer_id"] for layer in layout["layers"])
        self.max_ngram = int(layout["max_ngram_size"])
        self.heads = int(layout["n_head_per_ngram"])
        self.columns = (self.max_ngram - 1) * self.heads
        self.pad_id = int(layout["pad_id"])
        self.compression_map = np.asarray(compression_map, dtype=np.int64)
        self.multipliers = np.array(
            [layer["multipliers"] for layer in layout["layers"]], dtype=np.int64
        )
        self.primes = np.array(
            [np.ravel(layer["primes"]) for layer in layout["layers"]], dtype=np.int64
        )
        self.offsets = np.concatenate(
            [np.zeros((len(self.layer_ids), 1), np.int64), np.cumsum(self.primes, 1)[:, :-1]], 1
        )
        self.table_rows = tuple(int(p.sum()) for p in self.primes)
        self._device_constants: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    @property
    def lookback(self) -> int:
        """Tokens before a position that its n-grams reach (``max_ngram_size - 1``)."""
        return self.max_ngram - 1

    def _compressed_numpy(self, raw: np.ndarray) -> np.ndarray:
        if raw.size and int(raw.max()) >= self.compression_map.size:
            raise ValueError(
                f"token id {int(raw.max())} is outside the compression map's "
                f"{self.compression_map.size} ids"
            )
        return np.where(raw >= 0, self.compression_map[np.maximum(raw, 0)], self.pad_id)

    def row_ids(self, token_ids: Any, context: Any = None) -> np.ndarray:
        """Row ids ``[N, T, layers, columns]`` for raw ``token_ids [N, T]``.

        ``context [N, k]`` holds the raw ids just before each sequence (the last
        :attr:`lookback` matter; -1, or a missing column on the left, is "before the start":
        the pad id). None: every sequence starts there.
        """
        tokens = np.asarray(token_ids, dtype=np.int64)
        if tokens.ndim != 2:
            raise ValueError(f"token_ids must be [N, T], got shape {tokens.shape}")
        n, t = tokens.shape
        before = np.full((n, self.lookback), -1, dtype=np.int64)
        if context is not None:
            ctx = np.asarray(context, dtype=np.int64).reshape(n, -1)[:, -self.lookback :]
            if ctx.shape[1]:
                before[:, -ctx.shape[1] :] = ctx
        seq = self._compressed_numpy(np.concatenate([before, tokens], axis=1))
        out = np.empty((n, t, len(self.layer_ids), self.columns), dtype=np.int64)
        start = self.lookback
        for li, m in enumerate(self.multipliers):
            mix = seq[:, start:] * m[0]
            for k in range(1, self.max_ngram):
                mix = np.bitwise_xor(mix, seq[:, start - k : start - k + t] * m[k])
                cols = slice((k - 1) * self.heads, k * self.heads)
                out[:, :, li, cols] = (
                    mix[..., None] % self.primes[li, cols] + self.offsets[li, cols]
                )
        return out

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._device_constants:
            self._device_constants[device] = tuple(
                torch.from_numpy(a).to(device)
                for a in (self.compression_map, self.multipliers, self.primes, self.offsets)
            )
        return self._device_constants[device]

    def torch_row_ids(self, token_ids: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """:meth:`row_ids` with torch ops on ``token_ids``' device: raw ``token_ids [N, T]`` and
        ``context [N, lookback]`` (-1: before the start), int64. Ids are not range-checked."""
        if token_ids.dim() != 2 or tuple(context.shape) != (token_ids.shape[0], self.lookback):
            raise ValueError(
                f"token_ids must be [N, T] and context [N, {self.lookback}]; got "
                f"{tuple(token_ids.shape)} and {tuple(context.shape)}"
            )
        cmap, multipliers, primes, offsets = self._constants(token_ids.device)
        raw = torch.cat([context, token_ids], dim=1)
        seq = torch.where(raw >= 0, cmap[raw.clamp(min=0)], self.pad_id)
        t = token_ids.shape[1]
        start = self.lookback
        per_layer = []
        for li in range(len(self.layer_ids)):
            mix = seq[:, start:] * multipliers[li, 0]
            orders = []
            for k in range(1, self.max_ngram):
                mix = torch.bitwise_xor(mix, seq[:, start - k : start - k + t] * multipliers[li, k])
                orders.append(mix.unsqueeze(-1).expand(-1, -1, self.heads))
            mixes = torch.cat(orders, dim=-1)
            per_layer.append(torch.remainder(mixes, primes[li]) + offsets[li])
        return torch.stack(per_layer, dim=2)
