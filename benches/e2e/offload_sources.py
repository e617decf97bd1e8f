"""Where an arm's Engram rows come from: nowhere (arm (a)), a gather kernel over tables the arm
holds (arms (b) and (c), :class:`TableSource`), or engram-store through
``engram_store.torch.EngramRowBackend`` (arms (d) and (e), :class:`StoreSource`). A source
begins a step's lookup and makes the model's stream wait for a layer's rows."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from offload_phases import Phase

from engram_store.torch import (
    gather_dequantize,
)

if TYPE_CHECKING:
    from offload_runner import Runner, StepMarks


class Source:
    """How an arm gets Engram rows into the model's staging buffers: ``begin`` at the start of a
    step, ``ready(j)`` before Engram layer ``j`` (outside any graph)."""

    with_engram = True
    device_ids = False  # wants the step's row ids hashed on the device (``Runner.ids``)
    # ``begin`` once the model's first segment is queued (``--after-first-segment``): a gather
    # on a side stream then waits for the ids alone (``Runner.ids_ready``), not that segment.
    after_first_segment = False
    # The CUDA priority of the stream the step runs on (``--model-priority``; None: the current
    # stream, as before).
    model_priority: int | None = None

    def start(self, run: Runner) -> None:
        """Before the first step of a phase."""

    def begin(self, run: Runner, step: int) -> None:
        """At the start of ``step``, once its tokens are on the device."""

    def ready(self, run: Runner, j: int) -> None:
        """Before Engram layer ``j`` reads ``run.state.rows[j]``."""

    def queued(self, run: Runner, j: int) -> None:
        """After ``ready(j)``, the model's layers before Engram layer ``j`` being queued: host work
        for later steps (not timed as the step's wait for rows)."""

    def rows_ready_us(self, marks: StepMarks) -> list[float | None]:
        """After the step: when each Engram layer's rows were in place, in microseconds since
        the step's start (None: not known)."""
        return [None] * len(marks.needed)


class NoEngram(Source):
    with_engram = False


class TableSource(Source):
    """Arms (b) and (c): a gather kernel over tables in VRAM or pinned host memory (UVA), inline
    or on a side stream that the main stream waits for before each Engram layer."""

    device_ids = True

    def __init__(
        self, tables: list, side_stream: bool, max_programs: int | None, priority: int = 0
    ):
        self.tables = tables
        self.max_programs = max_programs
        self.cuda = tables[0].is_cuda
        self.stream = None
        if side_stream and self.cuda:
            self.stream = torch.cuda.Stream(tables[0].device, priority=priority)
        # When each layer's gather ended: device events, or host times on the CPU.
        self.done = [torch.cuda.Event(enable_timing=True) for _ in tables] if self.cuda else []
        self.done_at = [0.0] * len(tables)

    def gather(self, ids, rows: list, after=None) -> None:
        """Rows of every layer for ``ids [tokens, layers, columns]`` into ``rows``, on the side
        stream if there is one (after the work queued so far on the current stream, or only
        after event ``after``)."""
        if self.stream is not None and after is not None:
            self.stream.wait_event(after)
        elif self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream())
        with (
            torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        ):
            for j, table in enumerate(self.tables):
                gather_dequantize(table, ids[:, j], rows[j], max_programs=self.max_programs)
                if self.cuda:
                    self.done[j].record()
                else:
                    self.done_at[j] = time.perf_counter()

    def begin(self, run: Runner, step: int) -> None:
        self.gather(run.ids, run.state.rows, after=run.begin_after(self))

    def ready(self, run: Runner, j: int) -> None:
        if self.stream is not None:
            torch.cuda.current_stream().wait_event(self.done[j])

    def rows_ready_us(self, marks: StepMarks) -> list[float | None]:
        if self.cuda:
            return [marks.device_us(event) for event in self.done]
        return [marks.host_us(t) for t in self.done_at]


class StoreSource(Source):
    """Arms (d) and (e): :class:`engram_store.torch.EngramRowBackend` prefetches a step's rows from
    its token ids at the step's start (and a prefill chunk's during the chunk before, with
    lookahead); ``rows`` dequantizes them into the staging buffer. With a transport that gathers
    on the device (``mapped``) it takes the step's row ids hashed on the device, as arm (c), and
    the rows land in the staging buffers, except a looked-ahead chunk's, which wait in their slot
    and are copied there."""

    def __init__(self, backend, layer_ids: Sequence[int], lookahead: bool):
        self.backend = backend
        self.layer_ids = list(layer_ids)
        self.device_ids = bool(getattr(backend.transport, "device_gather", False))
        #: The transport foresees a step's misses from its ids on the host: hashed there.
        self.host_ids = bool(getattr(backend.transport, "predict_misses", False))
        self.lookahead = lookahead
        self.prefetched: dict[int, int] = {}
        self.slot = 0
        self.step = 0

    def _prefetch(self, phase: Phase, step: int) -> int:
        return self.backend.prefetch(token_ids=phase.tokens[step], context=phase.context[step])

    def _next_ids(self, run: Runner, step: int):
        """Row ids of ``step``, hashed on the device from its own copies of the tokens (the
        step's staging tensors belong to the step running). The copies go through page-locked
        memory without blocking: from pageable memory the host would wait for the work queued
        before them (the chunk's first segment) and launch the chunk's next layers late."""
        phase = run.phase
        n, t = phase.tokens.shape[1:]

        def upload(a: np.ndarray) -> torch.Tensor:
            host = torch.from_numpy(np.ascontiguousarray(a))
            if not run.cuda:
                return host
            return host.pin_memory().to(run.device, non_blocking=True)

        tokens = upload(phase.tokens[step].reshape(n, t))
        context = upload(phase.context[step])
        ids = run.hasher.torch_row_ids(tokens, context)
        return ids.view(n * t, ids.shape[2], ids.shape[3])

    def start(self, run: Runner) -> None:
        self.prefetched.clear()

    def begin(self, run: Runner, step: int) -> None:
        phase = run.phase
        slot = self.prefetched.pop(step, None)
        if slot is not None:
            self.slot = slot
        elif self.device_ids and self.host_ids:  # into the staging buffers, ids from the host
            self.slot = self.backend.prefetch(
                token_ids=phase.tokens[step],
                context=phase.context[step],
                out=run.state.rows,
                after=run.begin_after(self),
            )
        elif self.device_ids:  # the rows land in the staging buffers, as arm (c)'s
            self.slot = self.backend.prefetch(
                hash_ids=run.ids, out=run.state.rows, after=run.begin_after(self)
            )
        else:
            self.slot = self._prefetch(phase, step)
        self.step = step
        if not self.device_ids:
            self._look_ahead(run)

    def _look_ahead(self, run: Runner) -> None:
        """A prefill chunk's rows during the chunk before. Arm (d) mapped issues it once the
        layers up to the last Engram layer are queued (from :meth:`queued`): its hashing and
        launches are ~2 ms of host work, which issued after the first segment (until 2026-12-01,
        BENCHMARKS 10g) left the device idle, its queue empty, between that segment and the next
        one; there the device has the chunk's middle layers queued to run meanwhile, and the
        rows still have the chunk's last layers to land."""
        step, phase = self.step, run.phase
        if self.lookahead and phase.kind == "prefill" and step + 1 < phase.steps:
            if self.device_ids:
                ahead = self.backend.prefetch(hash_ids=self._next_ids(run, step + 1), ahead=True)
            else:
                ahead = self._prefetch(phase, step + 1)
            self.prefetched[step + 1] = ahead

    def ready(self, run: Runner, j: int) -> None:
        self.backend.rows(self.layer_ids[j], slot=self.slot, out=run.state.rows[j])

    def queued(self, run: Runner, j: int) -> None:
        if j == len(self.layer_ids) - 1 and self.device_ids:
            self._look_ahead(run)

    def rows_ready_us(self, marks: StepMarks) -> list[float | None]:
        out: list[float | None] = []
        for layer in self.layer_ids:
            event = self.backend.ready_event(layer, self.slot)
            if event is not None:
                out.append(marks.device_us(event))
            else:
                t = self.backend.fetched_at(layer, self.slot)
                out.append(None if t is None else marks.host_us(t))
        return out
