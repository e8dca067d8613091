"""`ringsim plan`: the per-rank, per-step work table of one ring."""
from __future__ import annotations

import click

from ringsim.planreport import plan_report
from ringsim.schedules import SCHEDULES, Plan
from ringsim.units import InputError, format_bytes, parse_flops

from .common import (build_cost_model, build_workload, emit, format_option, render_csv, render_table, to_json,
                     workload_options)


def parse_tile(text: str | None):
    if text is None or str(text).lower() in ("none", "off", "0"):
        return None
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        q, k = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (int(parts[0]), int(parts[0]))
    except ValueError:
        raise InputError(f"tile {text!r} is not QxK; write e.g. 128x128 or 'none'") from None
    if q <= 0 or k <= 0:
        raise InputError(f"tile {text!r} must be positive, e.g. 128x128")
    return q, k


@click.command()
@click.option("--schedule", type=click.Choice(SCHEDULES), default="zigzag", show_default=True)
@click.option("--world-size", type=int, default=8, show_default=True)
@click.option("--mask", default=None,
              help="full, causal or sliding:W (default: the model's own — its sliding window, else causal).")
@click.option("--tile", default="128x128", show_default=True, help="Kernel tile QxK for tile counts, or none.")
@click.option("--peak-flops", default="989 TFLOP/s", show_default=True, help="Device peak for the ideal bound.")
@click.option("--efficiency", type=float, default=0.75, show_default=True,
              help="Achieved fraction of peak (FlashAttention-3 on H100 reaches ~0.75).")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="calib.json from `ringsim calibrate`: compute seconds from it instead of the roofline.")
@click.option("--steps/--no-steps", default=None, help="Per-step rows (default: on up to 64 ranks).")
@workload_options()
@format_option
def plan(schedule, world_size, mask, tile, peak_flops, efficiency, calibration, steps, model, layers, heads, kv_heads,
         head_dim, hidden, ffn, seq_len, batch, dtype, fmt, output):
    """Per-rank, per-step work of one ring (one attention layer): shard owner, allowed pairs,
    non-empty tiles, FLOPs, KV bytes received; per-rank totals, imbalance and the ideal bound."""
    if not 0 < efficiency <= 1:
        raise InputError(f"--efficiency must be in (0, 1], got {efficiency}")
    wl = build_workload(model=model, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                        hidden=hidden, ffn=ffn, seq_len=seq_len, batch=batch, dtype=dtype)
    p = Plan(schedule, world_size, wl.seq_len, mask or wl.default_mask())
    per_step = steps if steps is not None else world_size <= 64
    from ringsim.topology import Device, Topology

    tile_qk = parse_tile(tile)
    device = Device("plan device", parse_flops(peak_flops), efficiency, 0.0, tile_qk)
    topo = Topology("plan", device, [f"g{i}" for i in range(world_size)], [])
    doc = plan_report(p, wl, tile_qk, build_cost_model(calibration), topo, per_step)
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
