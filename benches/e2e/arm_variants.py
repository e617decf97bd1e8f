"""Variants of arm (d) for ``engram_offload.py --d-variant``: the same store, tables and mapping
as arm (d), the backend or its gather set another way, run in the same rounds as (d) so an A/B
of a knob costs no second server, mapping or warm, and both sides read the same tokens.

A variant is ``NAME:KEY=VALUE[,KEY=VALUE...]``, e.g. ``staged:stage_min_tokens=64`` or
``p16:mapped_programs=16``; its arm is named ``d:NAME``. Keys are the harness flags of the same
name (``--stage-min-tokens`` ...), each an int: see :data:`VARIANT_KEYS`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

#: What a variant may set, and what it sets: an ``EngramRowBackend`` argument, or (``mapped_*``)
#: a setting of the mapped transport for the variant's gathers.
VARIANT_KEYS = {
    "stage_min_tokens": "EngramRowBackend(stage_min_tokens=N)",
    "inline_min_tokens": "EngramRowBackend(inline_min_tokens=N)",
    "side_priority": "EngramRowBackend(side_priority=N)",
    "stagger_gathers": "EngramRowBackend(stagger_gathers=bool(N))",
    "after_first_segment": "the step's lookup begun after the model's first segment is "
    "queued (--after-first-segment; 1: after, 0: before)",
    "model_priority": "the CUDA priority of the stream the variant's steps run on "
    "(--model-priority; e.g. -1, above the gathers' side stream at 0)",
    "mapped_programs": "MappedTransport.view(max_programs=N) (--transport mapped)",
    "mapped_record_every": "MappedTransport.view(record_every=N) (--transport mapped; 0: the "
    "variant's gathers are not recorded with the store)",
    "mapped_warps": "MappedTransport.view(num_warps=N): warps per program of the gather kernel "
    "(--transport mapped; 1, 2, 4, 8 or 16, default 4)",
    "mapped_block_rows": "MappedTransport.view(block_rows=N): rows per block of the gather "
    "kernel (--transport mapped; a power of two, default 16)",
    "mapped_predict_misses": "MappedTransport.view(predict_misses=bool(N)) (--transport mapped; "
    "the step's ids hashed on the host, its misses foreseen and copied up at once)",
    "mapped_copy_threads": "MappedTransport.view(copy_threads=N) (with mapped_predict_misses: "
    "threads copying a step's foreseen misses out of the host file)",
    "mapped_late_programs": "MappedTransport.view(table_programs=...): the grid cap N of the "
    "gathers of every Engram layer after the first (--transport mapped)",
    "mapped_split_misses": "MappedTransport.view(split_misses=bool(N)) (--transport mapped; the "
    "VRAM tier's rows in one kernel, the misses over PCIe in a second)",
    "mapped_fetch_misses": "MappedTransport.view(fetch_misses=bool(N)) (--transport mapped; the "
    "misses read over PCIe at prefetch, the VRAM tier's rows where the layer reads them)",
    "mapped_count_hits": "MappedTransport.view(count_hits=bool(N)) (--transport mapped; the "
    "variant's gathers count the rows they read from the VRAM tier, logged after the runs)",
}

#: The variant keys that set how the harness drives the backend, not the backend.
SOURCE_KEYS = {"after_first_segment", "model_priority"}

#: The variant keys that set the mapped transport, and the :meth:`MappedTransport.view` setting
#: each one is.
TRANSPORT_KEYS = {
    "mapped_programs": "max_programs",
    "mapped_record_every": "record_every",
    "mapped_warps": "num_warps",
    "mapped_block_rows": "block_rows",
    "mapped_late_programs": "table_programs",
    "mapped_predict_misses": "predict_misses",
    "mapped_copy_threads": "copy_threads",
    "mapped_split_misses": "split_misses",
    "mapped_fetch_misses": "fetch_misses",
    "mapped_count_hits": "count_hits",
}

#: The prefix of a variant's arm name.
PREFIX = "d:"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    settings: dict[str, int]

    @property
    def arm(self) -> str:
        return PREFIX + self.name


def parse_variant(text: str) -> Variant:
    """``NAME:KEY=VALUE,...`` as a :class:`Variant`; ValueError naming what is wrong."""
    name, sep, rest = text.partition(":")
    if not sep or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"--d-variant {text!r}: expected NAME:KEY=VALUE[,KEY=VALUE...]")
    settings: dict[str, int] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if key not in VARIANT_KEYS:
            known = ", ".join(VARIANT_KEYS)
            raise ValueError(f"--d-variant {text!r}: unknown key {key!r} (known: {known})")
        if not eq:
            raise ValueError(f"--d-variant {text!r}: {key} needs a value ({key}=N)")
        try:
            settings[key] = int(value)
        except ValueError:
            raise ValueError(
                f"--d-variant {text!r}: {key} needs an integer, got {value!r}"
            ) from None
    if not settings:
        raise ValueError(f"--d-variant {text!r}: sets nothing (give KEY=VALUE after the colon)")
    return Variant(name, settings)


def parse_variants(texts: Sequence[str]) -> list[Variant]:
    """Every ``--d-variant``, names distinct."""
    variants = [parse_variant(t) for t in texts]
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"--d-variant names must differ, got {names}")
    return variants


def is_variant(arm: str) -> bool:
    return arm.startswith(PREFIX)


def variant_of(variants: Sequence[Variant], arm: str) -> Variant:
    """The variant whose arm is ``arm``."""
    return next(v for v in variants if v.arm == arm)


def backend_overrides(variant: Variant) -> dict[str, object]:
    """The ``EngramRowBackend`` keyword arguments ``variant`` sets."""
    out: dict[str, object] = {}
    for key, value in variant.settings.items():
        if key == "stagger_gathers":
            out[key] = bool(value)
        elif key not in TRANSPORT_KEYS and key not in SOURCE_KEYS:
            out[key] = value
    return out


def transport_overrides(variant: Variant, later_tables: Sequence[str] = ()) -> dict[str, object]:
    """The :meth:`MappedTransport.view` settings ``variant`` sets; ``mapped_late_programs`` caps
    the grid of ``later_tables`` (the tables of the Engram layers after the first)."""
    out: dict[str, object] = {}
    for key, value in variant.settings.items():
        if key == "mapped_late_programs":
            out[TRANSPORT_KEYS[key]] = {table: value for table in later_tables}
        elif key in ("mapped_predict_misses", "mapped_split_misses", "mapped_fetch_misses",
                     "mapped_count_hits"):  # fmt: skip
            out[TRANSPORT_KEYS[key]] = bool(value)
        elif key in TRANSPORT_KEYS:
            out[TRANSPORT_KEYS[key]] = value
    return out


def check_rows(variants: Sequence[dict], arms: Sequence[dict]) -> list[str]:
    """What is wrong with the variants' rows: each must have fed its layers the same rows, bit
    for bit, as arm (d) in the same phase and batch (a knob that changes how rows move must not
    change which rows arrive). Empty when all is well or (d) did not finish the phase."""
    problems = []
    for v in variants:
        group = (v["phase"], v["batch"])
        d = next((a for a in arms if a["arm"] == "d" and (a["phase"], a["batch"]) == group), None)
        if d is not None and v.get("rows_sha256") != d.get("rows_sha256"):
            problems.append(
                f"{v['phase']} batch {v['batch']}: arm ({v['arm']}) fed other rows than (d): "
                f"{str(v.get('rows_sha256'))[:12]} vs {str(d.get('rows_sha256'))[:12]}"
            )
    return problems
