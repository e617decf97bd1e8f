"""The outputs of ``engram_offload.py``: the results table printed beside the Engram paper's
Table 4, the consistency check of the logits, and the SVG bar chart (tok/s per arm, the paper's
figures beside).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

#: The Engram paper's Table 4 (H800, a 100B-parameter Engram table in host DRAM): tok/s of the
#: backbone alone and with Engram, per backbone.
PAPER_TABLE4 = {
    "dense-4b": {"baseline": 9031.0, "engram": 8858.0},
    "dense-8b": {"baseline": 6315.0, "engram": 6140.0},
}

ARM_NAMES = {
    "a": "no Engram",
    "b": "tables in VRAM",
    "c": "pinned host, UVA gather",
    "d": "engram-store, all in RAM",
    "e": "engram-store, RAM <= 25%",
}
ARM_COLORS = {"a": "#9e9e9e", "b": "#4c72b0", "c": "#dd8452", "d": "#55a868", "e": "#8172b3"}
PAPER_COLORS = {"baseline": "#cfcfcf", "engram": "#e3b07a"}

ENGRAM_ARMS = ("b", "c", "d", "e")


def groups(rows: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
    """The (phase, batch) groups of ``rows`` in first-seen order."""
    seen: list[tuple[str, int]] = []
    for r in rows:
        key = (r["phase"], r["batch"])
        if key not in seen:
            seen.append(key)
    return seen


def check_logits(
    arms: Sequence[dict[str, Any]], unreproducible: Sequence[str] = ()
) -> list[str]:
    """What is wrong with the logits: within each (phase, batch), every Engram arm must have the
    same ``logits_sha256`` and arm (a) another one. Empty when all is well. Groups named in
    ``unreproducible`` (``"decode batch 64"``: arm (a) twice gave two logits there) are not
    compared: the rows are (:func:`check_rows`)."""
    problems = []
    for phase, batch in groups(arms):
        if f"{phase} batch {batch}" in unreproducible:
            continue
        group = {
            r["arm"]: r["logits_sha256"] for r in arms if (r["phase"], r["batch"]) == (phase, batch)
        }
        engram = {arm: sha for arm, sha in group.items() if arm in ENGRAM_ARMS}
        if len(set(engram.values())) > 1:
            listing = ", ".join(f"({arm}) {sha[:12]}" for arm, sha in sorted(engram.items()))
            problems.append(f"{phase} batch {batch}: the Engram arms' logits differ: {listing}")
        if "a" in group and group["a"] in engram.values():
            problems.append(f"{phase} batch {batch}: arm (a) has the Engram arms' logits")
    return problems


def check_rows(details: Sequence[dict[str, Any]]) -> list[str]:
    """What is wrong with the rows: within each (phase, batch), every Engram arm must have fed its
    Engram layers the same rows (``rows_sha256`` of the last timed step, bf16 bits)."""
    problems = []
    for phase, batch in groups(details):
        rows = {
            r["arm"]: r["rows_sha256"]
            for r in details
            if (r["phase"], r["batch"]) == (phase, batch) and r.get("rows_sha256")
        }
        if len(set(rows.values())) > 1:
            listing = ", ".join(f"({arm}) {sha[:12]}" for arm, sha in sorted(rows.items()))
            problems.append(f"{phase} batch {batch}: the Engram arms' rows differ: {listing}")
    return problems


def unreproducible(details: Sequence[dict[str, Any]]) -> list[str]:
    """The (phase, batch) groups where arm (a), run twice, gave different logits: there the
    backbone itself is not bit-reproducible on this device."""
    return [
        f"{r['phase']} batch {r['batch']}"
        for r in details
        if r["arm"] == "a" and r.get("logits_reproducible") is False
    ]


def without_arm_a(details: Sequence[dict[str, Any]]) -> list[str]:
    """The (phase, batch) groups arm (a) did not run in: there nothing says whether the backbone
    is bit-reproducible, so the Engram arms' logits cannot be held to be identical."""
    return [
        f"{phase} batch {batch}"
        for phase, batch in groups(details)
        if not any(r["arm"] == "a" and (r["phase"], r["batch"]) == (phase, batch) for r in details)
    ]


def with_losses(details: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``details`` with ``loss_vs_a`` and ``loss_vs_c`` (1 - tok/s / the other arm's tok/s, in
    the same phase and batch; None where that arm did not run)."""
    out = []
    for r in details:
        same = {
            o["arm"]: o["tok_per_s"]
            for o in details
            if (o["phase"], o["batch"]) == (r["phase"], r["batch"])
        }
        r = dict(r)
        for ref in ("a", "c"):
            r[f"loss_vs_{ref}"] = 1 - r["tok_per_s"] / same[ref] if ref in same else None
        out.append(r)
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def table(details: Sequence[dict[str, Any]], shape: str, layer_ids: Sequence[int]) -> str:
    """The results as text, one line per arm and phase, the timeline of a step (for the Engram
    layers ``layer_ids``) and the paper's Table 4 beneath."""
    lines = [
        f"{'phase':8} {'batch':>6}  arm  {'tok/s':>12}  {'loss vs a':>9}  {'loss vs c':>9}  "
        f"{'step ms':>8}  {'wait us':>8}  {'gather us':>9}  what",
    ]
    for r in details:
        gather = r.get("gather_us")
        lines.append(
            f"{r['phase']:8} {r['batch']:>6}  ({r['arm']})  {r['tok_per_s']:>12,.1f}  "
            f"{_pct(r.get('loss_vs_a')):>9}  {_pct(r.get('loss_vs_c')):>9}  "
            f"{r['step_ms']:>8.3f}  {r['wait_us']:>8.1f}  "
            f"{'-' if gather is None else f'{gather:.1f}':>9}  {ARM_NAMES[r['arm']]}"
        )
    if any("rounds_tok_per_s" in r for r in details):
        lines.append("")
        lines.append(
            "rounds (every arm in turn, per round; the line above: the median round): tok/s, and "
            "the ratio to (c)'s in the same round, its median first"
        )
        for r in details:
            rounds = "  ".join(f"{t:,.0f}" for t in r.get("rounds_tok_per_s", []))
            ratio = ""
            if "rounds_vs_c" in r:
                each = " ".join(f"{x:.4f}" for x in r["rounds_vs_c"])
                ratio = f"   x (c): {r['median_vs_c']:.4f} ({each})"
            lines.append(f"  {r['phase']:8} {r['batch']:>6}  ({r['arm']})  {rounds}{ratio}")
    lines.append("")
    lines.append(
        "timeline (us from the step's start, mean of the timed steps): per Engram layer, when its "
        "rows were in place / when the segment before it had run"
    )
    for r in details:
        cells = [
            f"layer {lid}: {'-' if ready is None else f'{ready:,.0f}'} / {needed:,.0f}"
            for lid, ready, needed in zip(layer_ids, r["ready_us"], r["needed_us"], strict=True)
        ]
        lines.append(f"  {r['phase']:8} {r['batch']:>6}  ({r['arm']})  " + "   ".join(cells))
    lines.append("")
    lines.append("Engram paper, Table 4 (H800, 100B-parameter table in host DRAM, prefetched):")
    for name, p in PAPER_TABLE4.items():
        mark = "  <- this backbone's shape" if name == shape else ""
        loss = 1 - p["engram"] / p["baseline"]
        lines.append(
            f"  {name}: {p['baseline']:,.0f} -> {p['engram']:,.0f} tok/s ({100 * loss:.1f}% loss)"
            f"{mark}"
        )
    return "\n".join(lines)


def svg_chart(details: Sequence[dict[str, Any]], title: str, shape: str) -> str:
    """A bar chart: one panel per (phase, batch) with a bar per arm (its own tok/s scale), and a
    panel with the paper's Table 4 figures for ``shape`` (when it has them)."""
    panels: list[tuple[str, list[tuple[str, float, str]]]] = []
    for phase, batch in groups(details):
        bars = [
            (f"({r['arm']})", r["tok_per_s"], ARM_COLORS[r["arm"]])
            for r in details
            if (r["phase"], r["batch"]) == (phase, batch)
        ]
        unit = "tokens/chunk" if phase == "prefill" else "sequences"
        panels.append((f"{phase}, {batch} {unit}", bars))
    if shape in PAPER_TABLE4:
        p = PAPER_TABLE4[shape]
        panels.append(
            (
                f"paper Table 4 ({shape}, H800)",
                [
                    ("base", p["baseline"], PAPER_COLORS["baseline"]),
                    ("Engram", p["engram"], PAPER_COLORS["engram"]),
                ],
            )
        )
    bar_w, gap, panel_gap, plot_h, top, left = 34, 8, 40, 220, 60, 20
    widths = [len(bars) * (bar_w + gap) + gap for _, bars in panels]
    width = left + sum(widths) + panel_gap * (len(panels) - 1) + 20
    height = top + plot_h + 120
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14" font-weight="bold">{html.escape(title)}</text>',
        f'<text x="{left}" y="40" fill="#555">tok/s per arm; each panel has its own scale</text>',
    ]
    x0 = left
    base = top + plot_h
    for (label, bars), w in zip(panels, widths, strict=True):
        peak = max(v for _, v, _ in bars) or 1.0
        out.append(f'<line x1="{x0}" y1="{base}" x2="{x0 + w}" y2="{base}" stroke="#333"/>')
        for k, (name, value, color) in enumerate(bars):
            h = plot_h * value / peak
            x = x0 + gap + k * (bar_w + gap)
            out.append(
                f'<rect x="{x}" y="{base - h:.1f}" width="{bar_w}" height="{h:.1f}" '
                f'fill="{color}"><title>{html.escape(name)}: {value:,.1f} tok/s</title></rect>'
            )
            out.append(
                f'<text x="{x + bar_w / 2}" y="{base - h - 4:.1f}" text-anchor="middle" '
                f'font-size="9">{value:,.0f}</text>'
            )
            out.append(
                f'<text x="{x + bar_w / 2}" y="{base + 14}" text-anchor="middle">'
                f"{html.escape(name)}</text>"
            )
        out.append(
            f'<text x="{x0 + w / 2}" y="{base + 32}" text-anchor="middle" '
            f'font-weight="bold">{html.escape(label)}</text>'
        )
        x0 += w + panel_gap
    legend_y = base + 60
    for k, (arm, name) in enumerate(ARM_NAMES.items()):
        x = left + (k % 3) * 230
        y = legend_y + (k // 3) * 16
        out.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{ARM_COLORS[arm]}"/>')
        out.append(f'<text x="{x + 14}" y="{y}">({arm}) {html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
