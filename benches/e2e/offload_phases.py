"""The harness's phases: which trace tokens each decode step and prefill chunk reads, round by
round, so that every arm of a round reads the same tokens and no store arm re-reads rows its
caches took in during the round before."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

LOOKBACK = 3  # tokens before a position that V4.1's 4-grams reach


@dataclasses.dataclass
class Phase:
    """The steps of one phase: ``tokens [steps, N, T]`` raw ids and their ``context [steps, N,
    LOOKBACK]`` (the ids just before each sequence; -1 before its start); ``positions``: where
    in the trace each token is (``tokens == trace[positions]``)."""

    kind: str
    batch: int
    tokens: np.ndarray
    context: np.ndarray
    warmup: int
    positions: np.ndarray

    @property
    def steps(self) -> int:
        return self.tokens.shape[0]

    @property
    def tokens_per_step(self) -> int:
        return self.tokens.shape[1] * self.tokens.shape[2]


def decode_phase(
    trace: np.ndarray, batch: int, steps: int, warmup: int, spread: int | None = None,
    shift: int = 0,
) -> Phase:  # fmt: skip
    """``batch`` sequences reading the trace from evenly spaced offsets over its first ``spread``
    tokens (default: all), ``shift`` tokens into each space, one token a step."""
    n = trace.size
    spread = n if spread is None else spread
    # (i * spread) // batch: sequence 4i of a batch of 256 starts where sequence i of a batch
    # of 64 does, so shifts keep their windows apart.
    offsets = np.arange(batch, dtype=np.int64) * spread // batch + LOOKBACK + shift
    pos = offsets[None, :] + np.arange(warmup + steps)[:, None]  # [S, B]
    context = trace[(pos[..., None] - LOOKBACK + np.arange(LOOKBACK)) % n]
    return Phase("decode", batch, trace[pos % n][..., None], context, warmup, (pos % n)[..., None])


def prefill_phase(trace: np.ndarray, chunk: int, chunks: int, warmup: int, start: int = 0) -> Phase:
    """Consecutive ``chunk``-token windows of the trace from ``start``, each a prompt of its
    own."""
    starts = start + np.arange(warmup + chunks) * chunk
    positions = ((starts[:, None] + np.arange(chunk)) % trace.size)[:, None, :]
    context = np.full((warmup + chunks, 1, LOOKBACK), -1, dtype=np.int64)
    return Phase("prefill", chunk, trace[positions], context, warmup, positions)


def round_phases(
    trace: np.ndarray, args: argparse.Namespace, rounds: int
) -> tuple[list[list[Phase]], int]:
    """Per phase (each decode batch, then prefill), one :class:`Phase` per round, laid out so
    that no two read the same tokens while the trace is long enough: prefill's chunks take the
    trace's tail, round after round; the decode sequences are spread over the rest, each batch
    and round reading on from where the one before stopped. A store arm must not be handed, as
    the next round or phase, the tokens whose rows its caches took in during the last (the
    rounds would measure a warm re-read, not a stream). Also returns how many token positions
    are read more than once (0 but for a trace too short: then they wrap around)."""
    n = trace.size
    prefill_span = rounds * (args.prefill_warmup + args.prefill_chunks) * args.prefill_chunk
    spread = max(n - prefill_span, n // 2)
    decode_span = args.decode_warmup + args.decode_steps
    out: list[list[Phase]] = []
    shift = 0
    for b in args.decode_batches:
        out.append([])
        for _ in range(rounds):
            out[-1].append(decode_phase(trace, b, args.decode_steps, args.decode_warmup, spread,
                                        shift))  # fmt: skip
            shift += decode_span
    if args.prefill_chunks > 0:
        out.append([
            prefill_phase(trace, args.prefill_chunk, args.prefill_chunks, args.prefill_warmup,
                          spread + k * (prefill_span // rounds))
            for k in range(rounds)
        ])  # fmt: skip
    reads = np.zeros(n, dtype=np.int64)
    for phases in out:
        for phase in phases:
            np.add.at(reads, phase.positions.reshape(-1), 1)
    return out, int((reads > 1).sum())
