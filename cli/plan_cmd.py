"""`ringsim plan`: the per-rank, per-step work table of one ring."""
from __future__ import annotations

import math

import click
import numpy as np

from ringsim.limits import MAX_TILE, TABLE_ROWS
from ringsim.outputs import check_destination
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
        if len(parts) not in (1, 2):
            raise ValueError
        nums = [int(p) if len(p.strip()) <= 12 else MAX_TILE + 1 for p in parts]
        q, k = (nums[0], nums[-1])
    except ValueError:
        raise InputError(f"tile {text!r} is not QxK; write e.g. 128x128 or 'none'") from None
    if not (0 < q <= MAX_TILE and 0 < k <= MAX_TILE):
        raise InputError(f"tile {text!r}: both sides must be in [1, {MAX_TILE}] tokens, e.g. 128x128")
    return q, k


def _check_layout(ctx, param, value):
    """--schedule: a schedule or, with --documents, a document layout; click's usual error otherwise."""
    from ringsim.documents import parse_layout

    try:
        parse_layout(value)
    except InputError as e:
        raise click.BadParameter(str(e)) from None
    return value.strip().lower()


@click.command()
@click.option("--schedule", default="zigzag", show_default=True, callback=_check_layout,
              help=f"{', '.join(SCHEDULES)}; with --documents also zigzag-doc or balanced[:K] (K chunks per rank).")
@click.option("--world-size", type=int, default=8, show_default=True)
@click.option("--mask", default=None,
              help="full, causal or sliding:W (default: the model's own — its sliding window, else causal).")
@click.option("--tile", default="128x128", show_default=True, help="Kernel tile QxK for tile counts, or none.")
@click.option("--peak-flops", default="989 TFLOP/s", show_default=True, help="Device peak for the ideal bound.")
@click.option("--efficiency", type=float, default=0.75, show_default=True,
              help="Achieved fraction of peak (FlashAttention-3 on H100 reaches ~0.75).")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="calib.json from `ringsim calibrate`: compute seconds from it instead of the roofline.")
@click.option("--kernels", default=None, metavar="roofline|PROFILE|FILE",
              help="Price the blocks with a kernel profile (a shipped name such as h100-sxm-fa3, or a file) "
                   "instead of the roofline of --peak-flops × --efficiency.")
@click.option("--implementation", type=click.Choice(["ringsim", "ring-flash-attn"]), default="ringsim",
              show_default=True, help="The memory work between kernels, priced with --kernels.")
@click.option("--memory-bandwidth", default=None, help="Device memory bandwidth for the memory work (e.g. 3.35TB/s).")
@click.option("--steps/--no-steps", default=None, help="Per-step rows (default: on up to 64 ranks).")
@click.option("--documents", default=None, metavar="SPEC",
              help="Packed documents, the mask applying within each: lengths (4K,60K,1000), a cu_seqlens list "
                   "([0,4096,10000]), a file of lengths, or a distribution (lognormal:mean=8K,sigma=1.2 | "
                   "lognormal:median=8K,sigma=1.2 | file:lengths.txt) to draw packs of --seq-len tokens from.")
@click.option("--samples", type=int, default=None,
              help="With a --documents distribution: draw this many packs and report the imbalance distribution.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for drawing packs.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="With --documents and --samples: also write an HTML report of the imbalance distribution.")
@click.option("--layouts", default=None, metavar="A,B,...",
              help="With --documents: layouts to compare (comma list, or 'all'); "
                   "default: --schedule, zigzag-doc, balanced.")
@workload_options()
@format_option
@click.pass_context
def plan(ctx, schedule, world_size, mask, tile, peak_flops, efficiency, calibration, kernels, implementation,
         memory_bandwidth, steps, documents, samples, seed, report, layouts, model, layers, heads, kv_heads, head_dim,
         hidden, ffn, seq_len, batch, dtype, fmt, output):
    """Per-rank, per-step work of one ring (one attention layer): shard owner, allowed pairs,
    non-empty tiles, FLOPs, KV bytes received; per-rank totals, imbalance and the ideal bound.

    With --documents: the same for a pack of documents (the imbalance checker), or with --samples N
    the distribution of the imbalance over N drawn packs for several layouts."""
    if not 0 < efficiency <= 1:
        raise InputError(f"--efficiency must be in (0, 1], got {efficiency}")
    if documents is not None:
        return _plan_documents(ctx, schedule, world_size, mask, peak_flops, efficiency, steps, documents, samples,
                               seed, layouts, model, layers, heads, kv_heads, head_dim, hidden, ffn, seq_len, batch,
                               dtype, fmt, output, report)
    for flag, value in (("--samples", samples), ("--layouts", layouts), ("--report", report)):
        if value is not None:
            raise InputError(f"{flag} needs --documents; give e.g. --documents lognormal:mean=16K,sigma=1")
    if schedule.strip().lower() not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)} "
                         "(zigzag-doc and balanced need --documents)")
    schedule = schedule.strip().lower()
    per_step = steps if steps is not None else world_size <= 64
    if per_step and world_size > 0:  # G² rows: refuse before planning, not after minutes of it
        most = math.isqrt(TABLE_ROWS.value)
        TABLE_ROWS.check(world_size * world_size, f"--steps at world size {world_size}",
                         f"use --no-steps for the per-rank totals (--format json keeps per_rank), or a world size "
                         f"of at most {most}")
    check_destination(output, "--output")
    wl = build_workload(model=model, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                        hidden=hidden, ffn=ffn, seq_len=seq_len, batch=batch, dtype=dtype)
    p = Plan(schedule, world_size, wl.seq_len, mask or wl.default_mask())
    from ringsim.topology import Device, Topology

    from ringsim.units import parse_bandwidth

    tile_qk = parse_tile(tile)
    hbm = parse_bandwidth(memory_bandwidth, "--memory-bandwidth") if memory_bandwidth else None
    device = Device("plan device", parse_flops(peak_flops, "--peak-flops"), efficiency, 0.0, tile_qk, memory_bandwidth_Bps=hbm)
    topo = Topology("plan", device, [f"g{i}" for i in range(world_size)], [])
    if kernels and kernels != "roofline" and not calibration:
        from ringsim.costs import ProfileCost
        from ringsim.kernelprofile import load_profile

        cost = ProfileCost(load_profile(kernels), kernels)
    else:  # a calibration, or the roofline of --peak-flops × --efficiency
        cost = build_cost_model(calibration, kernels, None)
    doc = plan_report(p, wl, tile_qk, cost, topo, per_step, implementation)
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


def _plan_documents(ctx, schedule, world_size, mask, peak_flops, efficiency, steps, documents, samples, seed,
                    layouts, model, layers, heads, kv_heads, head_dim, hidden, ffn, seq_len, batch, dtype, fmt,
                    output, report=None):
    """`ringsim plan --documents`: one pack's per-rank work, or the imbalance over sampled packs."""
    from click.core import ParameterSource

    from ringsim.documents import (LAYOUTS, imbalance_distribution, make_layout, pair_table, parse_documents,
                                   parse_layout, sample_packs)
    from ringsim.planreport import documents_report
    from ringsim.schedules import parse_mask
    from ringsim.units import parse_seq_len

    if world_size <= 0:
        raise InputError(f"--world-size must be positive, got {world_size}")
    from ringsim.workload import build_model

    mask = parse_mask(mask or build_model(model, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                                          hidden=hidden, ffn=ffn).default_mask())
    parse_layout(schedule)
    schedule = schedule.strip().lower()
    if layouts is None:
        names = [schedule] + [x for x in ("zigzag-doc", "balanced") if x != schedule]
    elif layouts.strip().lower() == "all":
        names = list(LAYOUTS)
    else:
        names = [x.strip().lower() for x in layouts.split(",") if x.strip()]
        if not names:
            raise InputError("--layouts is empty; give a comma list such as zigzag,zigzag-doc,balanced or 'all'")
    for x in names:
        parse_layout(x)
    names = list(dict.fromkeys(names))
    seq_len_given = ctx.get_parameter_source("seq_len") not in (ParameterSource.DEFAULT, None)
    spec = parse_documents(documents, parse_seq_len(seq_len) if seq_len_given else None)
    if spec.is_distribution:
        T = parse_seq_len(seq_len)
    else:
        if samples is not None:
            raise InputError("--samples draws packs from a distribution, but --documents lists one pack; "
                             "drop --samples or give e.g. lognormal:mean=16K,sigma=1")
        T = sum(spec.lengths)
    if report and samples is None:
        raise InputError("--report draws the imbalance distribution; give --samples N with a --documents distribution")
    if samples is not None:
        packs = sample_packs(spec, T, samples, seed)
        dist = imbalance_distribution(packs, world_size, mask, names)
        if report:
            from ringsim.docreport import write_documents_report

            try:
                write_documents_report(dist, spec.describe(), report)
            except OSError as e:
                raise InputError(f"cannot write --report {report}: {e.strerror or e}") from None
        counts = np.array([len(p) for p in packs])
        doc = {"documents": spec.describe(), "world_size": world_size, "seq_len": T, "mask": str(mask),
               "samples": samples, "seed": seed,
               "documents_per_pack": {"mean": float(counts.mean()), "min": int(counts.min()), "max": int(counts.max())},
               "layouts": dist["layouts"]}
        if fmt == "json":
            emit(to_json(doc), output)
        elif fmt == "csv":
            emit(render_csv(doc["layouts"]), output)
        else:
            out = [f"imbalance (max/mean work per rank) over {samples} packs of {T} tokens drawn from {spec.source} "
                   f"(seed {seed}), G={world_size}, mask={mask} within each document; "
                   f"{counts.mean():.1f} documents per pack ({counts.min()}-{counts.max()})",
                   render_table(doc["layouts"])]
            emit("\n".join(out), output)
        return
    lengths = np.asarray(spec.lengths if not spec.is_distribution else sample_packs(spec, T, 1, seed)[0])
    wl = build_workload(model=model, layers=layers, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                        hidden=hidden, ffn=ffn, seq_len=str(T), batch=batch, dtype=dtype)
    compare = {x: make_layout(x, lengths, world_size, mask) for x in names}
    lay = compare[schedule] if schedule in compare else make_layout(schedule, lengths, world_size, mask)
    pairs = pair_table(lay, mask)
    per_step = steps if steps is not None else world_size <= 64
    doc = documents_report(lay, pairs, wl, mask, compare, parse_flops(peak_flops), efficiency, per_step)
    doc["documents"] = spec.describe()
    if spec.is_distribution:
        doc["documents"]["seed"] = seed
        doc["doc_lengths"] = lengths.tolist()
    if fmt == "json":
        emit(to_json(doc), output)
    elif fmt == "csv":
        emit(render_csv(doc["steps"] if per_step else doc["per_rank"]), output)
    else:
        L = doc["layout"]
        out = [f"plan: {schedule} over a pack of {len(lengths)} documents ({L['seq_len']} tokens, padded to "
               f"{L['padded_len']}), G={world_size}, mask={mask} within each document, model={wl.model.name} "
               f"(one ring = one attention layer of {wl.layers})"]
        if per_step:
            out.append(render_table(doc["steps"]))
        out.append("per-rank totals:")
        out.append(render_table(doc["per_rank"]))
        out.append(f"imbalance (max/mean work): {doc['imbalance']:.4f}   "
                   f"lockstep imbalance (sum over steps of the slowest rank / mean): {doc['lockstep_imbalance']:.4f}")
        out.append("layouts on this pack:")
        out.append(render_table(doc["layouts"]))
        if "ideal_compute_s" in doc:
            out.append(f"shard per step: {format_bytes(doc['shard_bytes'])}; ideal compute bound: "
                       f"{doc['ideal_compute_s']:.4g} s per layer (slowest rank {doc['max_rank_compute_s']:.4g} s)")
        emit("\n".join(out) + "\n", output)
