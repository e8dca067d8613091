"""`ringsim plan`: the per-rank, per-step work table of one ring."""
from __future__ import annotations

import math

import click

from ringsim.limits import MAX_TILE, TABLE_ROWS
from ringsim.outputs import check_destination
from ringsim.planreport import plan_report
from ringsim.schedules import SCHEDULES, Plan
from ringsim.units import InputError, format_bytes, parse_flops

from .common import build_workload, emit, format_option, render_csv, render_table, to_json, workload_options


def parse_tile(text: str | None):
    if text is None or str(text).lower() in ("none", "off", "0"):
        return None
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        nums = [int(p) if len(p.strip()) <= 12 else MAX_TILE + 1 for p in parts]
        q, k = (nums[0], nums[-1])
    except ValueError:
        raise InputError(f"tile {text!r} is not QxK; write e.g. 128x128 or 'none'") from None
    if not (0 < q <= MAX_TILE and 0 < k <= MAX_TILE):
        raise InputError(f"tile {text!r}: both sides must be in [1, {MAX_TILE}] tokens, e.g. 128x128")
    return q, k


@click.command()
@click.option("--schedule", type=click.Choice(SCHEDULES), default="zigzag", show_default=True)
@click.option("--world-size", type=int, default=8, show_default=True)
@click.option("--mask", default="causal", show_default=True, help="full, causal or sliding:W.")
@click.option("--tile", default="128x128", show_default=True, help="Kernel tile QxK for tile counts, or none.")
@click.option("--peak-flops", default="989 TFLOP/s", show_default=True, help="Device peak for the ideal bound.")
@click.option("--efficiency", type=float, default=0.75, show_default=True,
              help="Achieved fraction of peak (FlashAttention-3 on H100 reaches ~0.75).")
@click.option("--steps/--no-steps", default=None, help="Per-step rows (default: on up to 64 ranks).")
@workload_options()
@format_option
def plan(schedule, world_size, mask, tile, peak_flops, efficiency, steps, model, layers, heads, kv_heads,
         head_dim, hidden, ffn, seq_len, batch, dtype, fmt, output):
    """Per-rank, per-step work of one ring (one attention layer): shard owner, allowed pairs,
    non-empty tiles, FLOPs, KV bytes received; per-rank totals, imbalance and the ideal bound."""
    if not 0 < efficiency <= 1:
        raise InputError(f"--efficiency must be in (0, 1], got {efficiency}")
    per_step = steps if steps is not None else world_size <= 64
    if per_step and world_size > 0:  # G² rows: refuse before planning, not after minutes of it
        most = math.isqrt(TABLE_ROWS.value)
        TABLE_ROWS.check(world_size * world_size, f"--steps at world size {world_size}",
                         f"use --no-steps for the per-rank totals (--format json keeps per_rank), or a world size "
                         f"of at most {most}")
    check_destination(output, "--output")
    wl = build_workload(model=model, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                        hidden=hidden, ffn=ffn, seq_len=seq_len, batch=batch, dtype=dtype)
    tile_qk, peak = parse_tile(tile), parse_flops(peak_flops, "--peak-flops")
    p = Plan(schedule, world_size, wl.seq_len, mask)
    doc = plan_report(p, wl, tile_qk, peak, efficiency, per_step)
    if fmt == "json":
        emit(to_json(doc), output)
    elif fmt == "csv":
        rows = doc["steps"] if per_step else doc["per_rank"]
        emit(render_csv(rows), output)
    else:
        out = [f"plan: {schedule}, G={world_size}, T={wl.seq_len}, mask={p.mask}, model={wl.model.name} "
               f"(one ring = one attention layer of {wl.layers})"]
        if per_step:
            out.append(render_table(doc["steps"]))
        out.append("per-rank totals:")
        out.append(render_table(doc["per_rank"]))
        out.append(f"imbalance (max/mean work): {doc['imbalance']:.4f}"
                   + (f"   tile imbalance: {doc['tile_imbalance']:.4f}" if "tile_imbalance" in doc else ""))
        out.append(f"shard per step: {format_bytes(doc['shard_bytes'])}; "
                   f"ideal compute bound: {doc['ideal_compute_s']:.4g} s per layer, "
                   f"{doc['ideal_compute_s_all_layers']:.4g} s all layers (slowest rank {doc['max_rank_compute_s']:.4g} s)")
        emit("\n".join(out) + "\n", output)
