"""One arm's run of one phase (:class:`Runner`): the model's steps (decode replayed from CUDA
graphs split at the Engram layers and checked against the same step run eagerly, prefill eager),
each step's timeline (:class:`StepMarks`: when each Engram layer's rows were in place, when the
segment before it had run) and what the run measured (:class:`Measured`)."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from offload_phases import LOOKBACK, Phase
from offload_sources import Source, TableSource

#: Most a decode step replayed from its CUDA graphs may differ from the same step run eagerly,
#: as a fraction of the largest logit (``Runner._check_graphs``). On the H200 the default SDPA
#: decode kernel is not deterministic (the same call twice differs by ~5e-4), which leaves
#: 2-3% after 36 layers (0 with ``ENGRAM_OFFLOAD_SDPA=math``); a graph reading a freed block
#: missed by 158%.
GRAPH_TOLERANCE = 0.25


class StepMarks:
    """Times within a step, from its start: when each Engram layer could start (the end of the
    segment before it) on the device, and helpers to place other marks on the same axis. On a
    GPU, device times come from events and host times from the host clock; the two are aligned
    at the step's start, when the device is idle (the step before ended with a sync)."""

    def __init__(self, cuda: bool, engram_layers: int):
        self.cuda = cuda
        self.t0 = 0.0
        self.start = torch.cuda.Event(enable_timing=True) if cuda else None
        self.segment_end = [torch.cuda.Event(enable_timing=True) for _ in range(engram_layers)]
        self.needed = [0.0] * engram_layers

    def begin(self) -> None:
        self.t0 = time.perf_counter()
        if self.cuda:
            self.start.record()

    def segment_done(self, j: int) -> None:
        """The segment before Engram layer ``j`` is queued (or, on the CPU, done)."""
        if self.cuda:
            self.segment_end[j].record()
        else:
            self.needed[j] = self.host_us(time.perf_counter())

    def end(self) -> None:
        """After the step's sync: the device marks are readable."""
        if self.cuda:
            self.needed = [self.device_us(e) for e in self.segment_end]

    def host_us(self, t: float) -> float:
        return (t - self.t0) * 1e6

    def device_us(self, event) -> float:
        return self.start.elapsed_time(event) * 1e3


@dataclasses.dataclass
class Measured:
    """One arm's run of one phase; the timeline is a mean over its timed steps."""

    seconds: float
    tokens: int
    wait_s: float
    logits_sha256: str
    needed_us: list[float]
    ready_us: list[float | None]
    #: The rows the last timed step's Engram layers consumed (bf16 bits); None without Engram.
    rows_sha256: str | None = None


class Runner:
    """Runs one phase's steps the same way for every arm: the step's tokens to the device, its row
    ids hashed there when the arm gathers rows itself, the arm's ``begin``, the segments with the
    arm's ``ready`` between them (CUDA graphs for decode on a GPU), the sampled tokens back to the
    host. Decode state (KV cache, convolution history, position) starts the same for every arm."""

    def __init__(self, model, rounds: Sequence[Phase], kv, hasher, graphs: bool):
        self.torch = torch
        self.model = model
        #: The phase's tokens for each round (same shapes, other tokens); ``phase``: this round's.
        self.rounds = list(rounds)
        self.phase = phase = self.rounds[0]
        self.hasher = hasher
        self.device = model.device
        self.cuda = self.device.type == "cuda"
        n, t = phase.tokens.shape[1:]
        if phase.kind == "decode":
            self.state = model.decode_state(kv, n)
        else:
            self.state = model.prefill_state(t)
        pin = self.cuda
        self.tokens_host = torch.empty(n * t, dtype=torch.int64, pin_memory=pin)
        self.context_host = torch.empty((n, LOOKBACK), dtype=torch.int64, pin_memory=pin)
        # -1 (before the start) until a step's context is copied in: the hash graph's warm-up
        # and capture read it before the first step (uninitialized, it indexed the compression
        # map out of bounds under CUDA MPS, whose fresh memory is not zero).
        self.context = torch.full((n, LOOKBACK), -1, dtype=torch.int64, device=self.device)
        self.sampled = torch.empty(
            n if phase.kind == "decode" else 1, dtype=torch.int64, pin_memory=pin
        )
        self.graphs = graphs and self.cuda and phase.kind == "decode"
        self._captured: dict[bool, tuple[list, Any, Any]] = {}
        #: Per Engram on/off: how far the graphs' step was from the eager one (``_check_graphs``).
        self.graph_error: dict[bool, float] = {}
        self._hash_graph = None
        self.ids = None
        #: Recorded once the step's ids are hashed (on a GPU): what a late ``begin`` waits for.
        self.ids_ready = torch.cuda.Event() if self.cuda else None
        #: The streams of ``--model-priority``, by priority.
        self._model_streams: dict[int, Any] = {}

    def begin_after(self, source: Source):
        """The event ``source``'s gather waits for instead of the current stream: the ids being
        hashed, when its ``begin`` comes after the first segment is queued; else None."""
        return self.ids_ready if source.after_first_segment else None

    # -- pieces --------------------------------------------------------------------------------

    def _hash(self):
        n, t = self.phase.tokens.shape[1:]
        ids = self.hasher.torch_row_ids(self.state.tokens.view(n, t), self.context)
        return ids.view(n * t, ids.shape[2], ids.shape[3])

    def _capture(self, fn):
        torch = self.torch
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()
        return graph, out

    def _segments(self, with_engram: bool):
        """Callables of the step's segments and the tensors holding its logits and argmax."""
        model, st = self.model, self.state
        if not self.graphs:
            pieces = [lambda i=i: model.segment(i, st, with_engram) for i in range(model.segments)]
            return pieces, None
        if with_engram not in self._captured:
            for i in range(model.segments):  # warm every piece up once, in order
                model.segment(i, st, with_engram)
            self.torch.cuda.synchronize()
            graphs, keep = [], []
            for i in range(model.segments):
                # Piece i reads st.x, the hidden state piece i - 1's graph writes (keep[-1]).
                # _capture runs the piece eagerly once before capturing it, and that run points
                # st.x at a tensor of its own, freed as soon as the capture replaces it: without
                # handing the piece its input on every call, its graph reads that freed block at
                # every replay (the next capture's empty_cache can unmap it: an illegal memory
                # access; reused, it gives logits that change run to run).
                x_in = keep[-1] if keep else None
                graph, _ = self._capture(lambda i=i, x_in=x_in: self._piece(i, x_in, with_engram))
                graphs.append(graph)
                keep.append(st.x)  # each piece's output, alive as long as its graph
            replays = [g.replay for g in graphs]
            outputs = (st.logits, st.argmax)
            self._check_graphs(replays, outputs, with_engram)
            self._captured[with_engram] = (replays, outputs, keep)
        replays, outputs, _ = self._captured[with_engram]
        return replays, outputs

    def _piece(self, i: int, x_in, with_engram: bool) -> None:
        """Piece ``i`` of a step on ``x_in``, the hidden state the piece before wrote."""
        self.state.x = x_in
        self.model.segment(i, self.state, with_engram)

    def _check_graphs(self, replays: list, outputs: tuple, with_engram: bool) -> None:
        """The guard on the capture: one decode step replayed from the graphs must give the
        logits the same step gives eagerly from the same state (cache, convolution history,
        position, staging rows). A graph that reads a buffer the step does not write (a block
        freed after the capture, another piece's stale output) gives other logits."""
        st = self.state
        self.reset(0)
        for i in range(self.model.segments):
            self.model.segment(i, st, with_engram)
        eager = st.logits.float()
        self.reset(0)
        for replay in replays:
            replay()
        graphed = outputs[0].float()
        err = float(((graphed - eager).abs().max() / eager.abs().max().clamp_min(1e-6)).item())
        if not err <= GRAPH_TOLERANCE:  # NaN fails too
            raise RuntimeError(
                f"decode batch {self.phase.batch}: the step replayed from its CUDA graphs "
                f"(Engram {'on' if with_engram else 'off'}) differs from the eager step by "
                f"{err:.3g} of the logits' range: a graph reads memory the step does not write"
            )
        self.graph_error[with_engram] = err

    def _hasher_fn(self):
        if not self.graphs:

            def run():
                self.ids = self._hash()

            return run
        if self._hash_graph is None:
            self._hash()  # the hasher's constants move to the device outside the capture
            graph, self.ids = self._capture(self._hash)
            self._hash_graph = graph
        return self._hash_graph.replay

    def reset(self, seed: int) -> None:
        """Decode: the cache full of the same random context, empty convolution history, the
        first step at position ``window``."""
        st = self.state
        if self.phase.kind != "decode":
            return
        gen = self.torch.Generator(device=self.device).manual_seed(seed)
        for k, v in zip(st.k, st.v, strict=True):
            k.normal_(generator=gen)
            v.normal_(generator=gen)
        for c in st.conv:
            c.zero_()
        st.position.fill_(st.window)

    def use_round(self, k: int) -> None:
        """Runs from now on read round ``k``'s tokens (the buffers and graphs stay)."""
        self.phase = self.rounds[k]

    # -- the loop ------------------------------------------------------------------------------

    def run(self, source: Source, seed: int) -> Measured:
        """The phase's steps for ``source``'s arm, on a stream of its ``model_priority`` if it
        has one (on a GPU; the side streams' gathers then rank above or below the model's
        kernels when the block scheduler has SMs to give)."""
        priority = source.model_priority
        if priority is None or not self.cuda:
            return self._run(source, seed)
        stream = self._model_streams.get(priority)
        if stream is None:
            stream = self.torch.cuda.Stream(self.device, priority=priority)
            self._model_streams[priority] = stream
        stream.wait_stream(self.torch.cuda.current_stream())
        with self.torch.cuda.stream(stream):
            measured = self._run(source, seed)
        self.torch.cuda.current_stream().wait_stream(stream)
        return measured

    def _run(self, source: Source, seed: int) -> Measured:
        torch, st, phase = self.torch, self.state, self.phase
        pieces, outputs = self._segments(source.with_engram)
        hash_fn = self._hasher_fn() if source.device_ids else None
        self.reset(seed)
        source.start(self)
        layers = self.model.segments - 1
        marks = StepMarks(self.cuda, layers)
        sampled, needed, ready = [], [], []
        wait_s = start = 0.0
        for step in range(phase.steps):
            if step == phase.warmup:
                self._sync()
                start, wait_s = time.perf_counter(), 0.0
            self.tokens_host.copy_(torch.from_numpy(phase.tokens[step].reshape(-1)))
            st.tokens.copy_(self.tokens_host, non_blocking=True)
            marks.begin()
            if hash_fn is not None:
                self.context_host.copy_(torch.from_numpy(phase.context[step]))
                self.context.copy_(self.context_host, non_blocking=True)
                hash_fn()
                if self.ids_ready is not None:
                    self.ids_ready.record()
            if not source.after_first_segment:
                source.begin(self, step)
            for j in range(layers):
                pieces[j]()
                marks.segment_done(j)
                if j == 0 and source.after_first_segment:
                    source.begin(self, step)
                t = time.perf_counter()
                source.ready(self, j)
                wait_s += time.perf_counter() - t
                source.queued(self, j)
            pieces[layers]()
            argmax = outputs[1] if outputs is not None else st.argmax
            self.sampled.copy_(argmax, non_blocking=True)
            self._sync()
            if step >= phase.warmup:
                marks.end()
                sampled.append(self.sampled.numpy().copy())
                needed.append(list(marks.needed))
                ready.append(source.rows_ready_us(marks))
        seconds = time.perf_counter() - start
        logits = outputs[0] if outputs is not None else st.logits
        digest = hashlib.sha256(logits.contiguous().view(torch.int16).cpu().numpy().tobytes())
        digest.update(np.concatenate(sampled).tobytes())
        rows_digest = None
        if source.with_engram:
            rows_digest = hashlib.sha256()
            for rows in st.rows:
                rows_digest.update(rows.contiguous().view(torch.int16).cpu().numpy().tobytes())
        measured_steps = phase.steps - phase.warmup
        ready_known = [[r for r in column if r is not None] for column in zip(*ready, strict=True)]
        return Measured(
            seconds,
            measured_steps * phase.tokens_per_step,
            wait_s / measured_steps,
            digest.hexdigest(),
            needed_us=[float(np.mean(column)) for column in zip(*needed, strict=True)],
            ready_us=[float(np.mean(c)) if c else None for c in ready_known],
            rows_sha256=None if rows_digest is None else rows_digest.hexdigest(),
        )

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.current_stream().synchronize()

    def sync_device(self) -> None:
        """Waits for every stream of the device."""
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def stage(self, step: int):
        """``step``'s tokens on the device and its row ids, hashed eagerly (not into ``ids``)."""
        torch = self.torch
        self.state.tokens.copy_(torch.from_numpy(self.phase.tokens[step].reshape(-1)))
        self.context.copy_(torch.from_numpy(self.phase.context[step]))
        return self._hash()

    def layer_us(self) -> dict[str, float | None]:
        """One decoder layer on this phase's shapes: eager, and replayed as a CUDA graph (decode on
        a GPU), in microseconds."""
        torch, model, st = self.torch, self.model, self.state
        n = st.tokens.numel()
        x = torch.randn(n, model.b.hidden, device=self.device).to(torch.bfloat16)
        reps = 20 if self.cuda else 3

        def timed(fn) -> float:
            fn()
            self._sync()
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            self._sync()
            return (time.perf_counter() - t) / reps * 1e6

        eager = timed(lambda: model.layer(2, x, st))
        graph = None
        if self.graphs:
            g, _ = self._capture(lambda: model.layer(2, x, st))
            graph = timed(g.replay)
        return {"eager_us": eager, "graph_us": graph}


def gather_us(source: TableSource, run: Runner, step: int) -> float:
    """Microseconds the arm's gather of one step's rows (every layer) takes alone."""
    ids = run.stage(step)
    reps = 20 if run.cuda else 3
    source.gather(ids, run.state.rows)
    run.sync_device()
    t = time.perf_counter()
    for _ in range(reps):
        source.gather(ids, run.state.rows)
    run.sync_device()
    return (time.perf_counter() - t) / reps * 1e6
