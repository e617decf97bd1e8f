"""Arms (d) and (e) and the variants of (d): the engram-store server an arm starts (its flags,
each table's VRAM share), the transport and ``EngramRowBackend`` it reads through, and the
arm's :class:`~offload_sources.Source` opened for the runs (:func:`arm_source`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import arm_variants
import torch
from offload_sources import NoEngram, Source, StoreSource, TableSource
from offload_warm import table_weights, tier_counters, warm_ram, warm_vram

from engram_store import Client
from engram_store.local_server import LocalServer
from engram_store.torch import (
    ChannelTransport,
    EngramLayer,
    EngramRowBackend,
    GrpcTransport,
    MappedTransport,
    cuda_view,
)


def sm_count(device) -> int | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


@contextlib.contextmanager
def arm_source(arm: str, ctx: dict[str, Any]) -> Iterator[Source]:
    """The ``Source`` of ``arm`` with what it needs set up (and torn down after), beginning its
    steps' lookups where ``--after-first-segment`` (or the variant's setting) says."""
    with _arm_source(arm, ctx) as source:
        late = ctx["args"].after_first_segment
        priority = ctx["args"].model_priority
        if arm_variants.is_variant(arm):
            variant = arm_variants.variant_of(ctx["args"].d_variants, arm)
            late = bool(variant.settings.get("after_first_segment", late))
            priority = variant.settings.get("model_priority", priority)
        source.after_first_segment = late
        source.model_priority = priority
        yield source


@contextlib.contextmanager
def _arm_source(arm: str, ctx: dict[str, Any]) -> Iterator[Source]:
    args, device = ctx["args"], ctx["device"]
    if arm == "a":
        yield NoEngram()
    elif arm in "bc":
        host = ctx["host"].get()
        if arm == "b":
            source = TableSource([t.to(device) for t in host], side_stream=False, max_programs=None)
        else:
            views = [cuda_view(t) for t in host] if device.type == "cuda" else host
            sms = sm_count(device)
            programs = args.uva_programs or (None if sms is None else sms // 2)
            source = TableSource(
                views, side_stream=True, max_programs=programs, priority=args.side_priority
            )
        try:
            yield source
        finally:
            source.tables.clear()
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the store's VRAM tier lives in another process
    else:
        with store_backend(arm, ctx) as backend:
            yield StoreSource(backend, ctx["layer_ids"], args.prefill_lookahead)


def store_flags(arm: str, ctx: dict[str, Any]) -> tuple[int, list[str]]:
    """RAM budget and extra ``serve`` flags of store arm ``arm``."""
    args, tables, device = ctx["args"], ctx["tables"], ctx["device"]
    ram = int(tables.nbytes * 1.25) + (8 << 20) if arm == "d" else tables.nbytes // 4
    extra = ["--io-engine", args.io_engine]
    if mapped(arm, ctx):
        free = shutil.disk_usage(args.share_dir).free
        if free < tables.nbytes * 1.05:
            raise RuntimeError(
                f"--share-dir {args.share_dir} has {free / 1e9:.1f} GB free, the tables need "
                f"{tables.nbytes / 1e9:.1f} GB: give a memory file system with room"
            )
        extra += ["--share-memory", args.share_dir]
    if device.type == "cuda":
        budget = args.store_gpu_budget or str(tables.nbytes // 4)
        extra += ["--gpu-budget", budget, "--gpu-device", str(device.index or 0)]
    if args.store_gpu_refresh_ms is not None:
        extra += ["--gpu-refresh-ms", str(args.store_gpu_refresh_ms)]
    if args.store_gpu_refresh_min_rows is not None:
        extra += ["--gpu-refresh-min-rows", str(args.store_gpu_refresh_min_rows)]
    for name, w in zip(tables.names, table_weights(ctx), strict=True):
        if w != 1.0:
            extra += ["--gpu-weight", f"{name}={w:g}"]
    return ram, extra


def mapped(arm: str, ctx: dict[str, Any]) -> bool:
    """Whether store arm ``arm`` reads rows itself from what the store shares (``--transport
    mapped``: arm (d), with its own kernel on a GPU, from the shared file on the CPU; arm (e)'s
    table is not whole in RAM, so it cannot be shared)."""
    return ctx["args"].transport == "mapped" and arm == "d"


@contextlib.contextmanager
def store_backend(arm: str, ctx: dict[str, Any]) -> Iterator[Any]:
    """An ``EngramRowBackend`` over a server configured for ``arm``: started here, or the one at
    ``--addr`` (arm (d) only)."""
    args, tables, log = ctx["args"], ctx["tables"], ctx["log"]
    if arm_variants.is_variant(arm):
        yield from variant_backend(arm, ctx)
        return
    with contextlib.ExitStack() as stack:
        if args.addr:
            addr = args.addr
        else:
            ram, extra = store_flags(arm, ctx)
            server = stack.enter_context(
                LocalServer(args.server_bin, tables.data_dir, ram_cache=str(ram), args=tuple(extra))
            )
            addr = server.addr
            if os.environ.get("ENGRAM_OFFLOAD_SERVER_LOGS"):
                # The server's log, kept (it goes with the server): with
                # RUST_LOG=engram_store::gpu_stages=debug, where its device writes spend time.
                keep = Path(os.environ["ENGRAM_OFFLOAD_SERVER_LOGS"])
                name = f"server-{args.shape}-{arm}.log"
                stack.callback(lambda: (keep / name).write_text(server.log()))
            log(
                f"arm ({arm}): engram-store on {addr}, --ram-cache {ram / 1e6:.1f} MB "
                f"({ram / tables.nbytes:.0%} of the tables) {' '.join(extra)}"
            )
        client = stack.enter_context(Client(addr))
        if arm == "d" and not mapped(arm, ctx):
            warm_ram(client, tables, log)
        if mapped(arm, ctx):  # shared (and loaded whole) before the warm reads rows
            sms = sm_count(ctx["device"])
            programs = args.mapped_programs or (None if sms is None else max(1, sms // 8))
            transport = MappedTransport(
                client,
                record_every=args.mapped_record_every,
                stage_ahead=args.mapped_stage_ahead,
                max_programs=programs,
                ahead_programs=args.mapped_ahead_programs,
                table_programs=late_table_programs(args.mapped_late_programs, ctx),
                predict_misses=args.mapped_predict_misses,
                copy_threads=args.mapped_copy_threads,
                split_misses=args.mapped_split_misses,
                fetch_misses=args.mapped_fetch_misses,
                count_hits=args.mapped_count_hits,
            )
            stack.callback(transport.close)
            stack.callback(lambda: log(
                f"arm ({arm}): gathers staged: {transport.staged_gathers}, "
                f"{transport.staged_rows:,} rows copied up in bulk"))  # fmt: skip
            stack.callback(lambda: log_residency(arm, transport, log, ctx))
            started = time.perf_counter()
            for name in tables.names:
                transport.table(name, ctx["device"])
            log(f"arm ({arm}): mapped the store's shared tables in "
                f"{time.perf_counter() - started:.1f}s")  # fmt: skip
        elif args.transport == "grpc":
            transport = GrpcTransport(client)
        else:
            transport = ChannelTransport(client)
        if args.store_warm_tokens:
            warmed = warm_vram(client, arm, ctx)
            ctx["store_vram"][arm] = warmed
            stack.callback(lambda: warmed.update(tier_counters(client, arm, log)))
        if isinstance(transport, MappedTransport):
            log_mapped_view(arm, transport, "after the warm", ctx)
            stack.callback(log_mapped_view, arm, transport, "after the runs", ctx)
        if arm == "d":  # for arm (d)'s variants, opened after it and closed before it
            ctx["d_transport"] = transport
            stack.callback(ctx.pop, "d_transport", None)
        backend = row_backend(transport, ctx)
        stack.callback(backend.close)
        stack.callback(note_host_time, arm, backend, transport, ctx)
        yield backend


def log_mapped_view(arm: str, transport: MappedTransport, when: str, ctx: dict[str, Any]) -> None:
    """Logs, per table, what the worker sees of the store's VRAM tier through its mapping: slots
    tagged with a row, and keys in the index the control word names active (the store's own
    count of resident rows is what it wrote, not what a worker's kernel finds)."""
    for name in ctx["tables"].names:
        view = transport.table(name, ctx["device"]).rows_view
        if view.arena is None:
            continue
        tagged = int((view.tags != -1).sum())
        active = int(view.control[0])
        keys = view.keys[active * view.buckets : (active + 1) * view.buckets]
        keyed = int((keys != -1).sum())
        ctx["log"](
            f"arm ({arm}): {name}'s VRAM tier as the worker maps it, {when}: {tagged:,} of "
            f"{view.capacity:,} slots tagged, index {active} active with {keyed:,} of "
            f"{view.buckets:,} buckets keyed"
        )


def later_tables(ctx: dict[str, Any]) -> list[str]:
    """The tables of every Engram layer after the first (the lowest layer id)."""
    by_layer = sorted(zip(ctx["layer_ids"], ctx["tables"].names, strict=True))
    return [name for _, name in by_layer[1:]]


def note_host_time(arm: str, backend: Any, transport: Any, ctx: dict[str, Any]) -> None:
    """Adds what ``backend`` (of arm ``arm``, over ``transport``) spent on the host foreseeing
    misses (``MappedTransport.gather_predicted``'s parts, and hashing token ids) to
    ``ctx["host_time"][arm]``, and the rows its gathers read from the VRAM tier
    (``count_hits``) to ``ctx["vram_hits"][arm]``, for :func:`log_residency`."""
    if getattr(transport, "count_hits", False):
        hits, rows = transport.take_vram_hits()
        total = ctx.setdefault("vram_hits", {}).setdefault(arm, [0, 0])
        total[0], total[1] = total[0] + hits, total[1] + rows
    gathers = getattr(transport, "predicted_gathers", 0)
    if not gathers:
        return
    total = ctx.setdefault("host_time", {}).setdefault(arm, {"gathers": 0, "hash": 0.0})
    total["gathers"] += gathers
    total["hash"] += backend.hash_seconds
    for part, seconds in transport.predict_seconds.items():
        total[part] = total.get(part, 0.0) + seconds
    # counted once: a view lives for one backend, (d)'s own transport for (d)'s only
    transport.predicted_gathers = 0
    transport.predict_seconds = dict.fromkeys(transport.predict_seconds, 0.0)


def log_residency(arm: str, transport: MappedTransport, log, ctx: dict[str, Any]) -> None:
    """What the gathers whose misses were foreseen on the host (``predict_misses``, arm (d) or
    a variant of it) copied up, and how often the foresight was wrong, over the whole run; per
    arm that counted them (``count_hits``), the rows its gathers read from the VRAM tier; and
    per arm, their host time per gather by part."""
    maps = transport.residency_maps()
    if maps:
        log(
            f"arm ({arm}): foreseen misses copied up: {sum(m.foreseen_misses for m in maps):,} "
            f"rows; foreseen in VRAM but read over PCIe: {sum(m.wrong_hits for m in maps):,}; "
            f"copied up but in VRAM: {sum(m.wrong_misses for m in maps):,}"
        )
    for name, (hits, rows) in sorted(ctx.pop("vram_hits", {}).items()):
        share = f"{hits / rows:.1%}" if rows else "-"
        log(f"arm ({name}): its gathers read {hits:,} of {rows:,} rows from the VRAM tier "
            f"({share}; the rest from host memory over PCIe, or dead positions)")  # fmt: skip
    for name, total in sorted(ctx.pop("host_time", {}).items()):
        n = total.pop("gathers")
        parts = ", ".join(f"{part} {seconds / n * 1e6:.0f} us" for part, seconds in total.items())
        log(f"arm ({name}): host time per foreseen gather ({n:,}): {parts}")


def late_table_programs(programs: int | None, ctx: dict[str, Any]) -> dict[str, int]:
    """``MappedTransport(table_programs=...)`` of ``--mapped-late-programs``: ``programs`` for
    every later layer's table (none when not given)."""
    return {} if programs is None else {name: programs for name in later_tables(ctx)}


def row_backend(transport, ctx: dict[str, Any], **overrides: Any):
    """The harness's ``EngramRowBackend`` over ``transport``: the flags' settings, ``overrides``
    (a variant's) over them."""
    args, tables = ctx["args"], ctx["tables"]
    layers = [
        EngramLayer(lid, name) for lid, name in zip(ctx["layer_ids"], tables.names, strict=True)
    ]
    settings = {
        "stagger_gathers": args.stagger_gathers,
        "inline_min_tokens": args.inline_min_tokens,
        "side_priority": args.side_priority,
        "stage_min_tokens": args.stage_min_tokens,
        **overrides,
    }
    return EngramRowBackend(
        transport,
        layers,
        max_tokens=ctx["max_tokens"],
        device=ctx["device"],
        hasher=tables.hasher,
        **settings,
    )


def variant_backend(arm: str, ctx: dict[str, Any]) -> Iterator[Any]:
    """Arm (d)'s variant ``arm``: a backend over (d)'s transport (open before it, closed after
    it), or over a view of it with other settings; the variant's settings over the flags'."""
    variant = arm_variants.variant_of(ctx["args"].d_variants, arm)
    transport = ctx.get("d_transport")
    if transport is None:
        raise RuntimeError(f"arm ({arm}) runs on arm (d)'s store, which is not open")
    overrides = arm_variants.transport_overrides(variant, later_tables(ctx))
    if overrides:
        if not isinstance(transport, MappedTransport):
            keys = ", ".join(k for k in variant.settings if k in arm_variants.TRANSPORT_KEYS)
            raise RuntimeError(f"arm ({arm}): {keys} needs --transport mapped")
        transport = transport.view(**overrides)
    elif getattr(transport, "count_hits", False):
        transport = transport.view()  # a view counts its own hits, not (d)'s
    backend = row_backend(transport, ctx, **arm_variants.backend_overrides(variant))
    try:
        yield backend
    finally:
        note_host_time(arm, backend, transport, ctx)
        backend.close()
