"""`ringsim simulate` (one schedule) and `ringsim compare` (several, sorted by makespan)."""
from __future__ import annotations

import click

from ringsim.schedules import SCHEDULES
from ringsim.units import InputError, format_bytes, format_seconds

from .job_opts import is_job, job_options, run_job_cli
from .common import (build_cost_model, build_topology, build_workload, emit, format_option, render_csv,
                     render_table, system_options, to_json, topology_options, workload_options)

SUMMARY = ["schedule", "world_size", "seq_len", "phase", "engine", "makespan_s", "layer_makespan_s",
           "ideal_bound_s", "efficiency", "imbalance", "overlap", "hide_block_tokens", "transfers_hidden",
           "peak_memory_bytes", "bottleneck_hop"]


_WORKLOAD_KEYS = ("model", "layers", "heads", "kv_heads", "head_dim", "hidden", "ffn", "seq_len", "batch", "dtype")
_TOPOLOGY_KEYS = ("topology", "world_size", "link_scale", "straggler", "degrade_link", "placement")


def _spec(schedule: str, opts: dict):
    """The SimSpec the shared workload, topology and system options describe."""
    from ringsim.engines import Knobs
    from ringsim.simulate import SimSpec

    wl = build_workload(**{k: opts[k] for k in _WORKLOAD_KEYS})
    topo = build_topology(**{k: opts[k] for k in _TOPOLOGY_KEYS})
    return SimSpec(workload=wl, topology=topo, schedule=schedule, world_size=opts["world_size"], mask=opts["mask"],
                   phase=opts["phase"], engine=opts["engine"],
                   knobs=Knobs(opts["overlap"], opts["rendezvous"], opts["double_buffer"]),
                   cost_model=build_cost_model(opts["calibration"]))


def _public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def _render(results: list[dict], fmt: str, output, speedups: bool) -> None:
    cols = list(SUMMARY)
    if speedups:
        cols.insert(5, next(k for k in results[0] if k.startswith("speedup_vs")))
    if fmt == "json":
        emit(to_json({"results": [_public(r) for r in results]}), output)
    elif fmt == "csv":
        flat = [dict(_public(r), critical_path=r["critical_path"]["holder"]) for r in results]
        emit(render_csv(flat, cols + ["critical_path"]), output)
    else:
        r0 = results[0]
        head = (f"{r0['model']} on {r0['topology']}: G={r0['world_size']}, T={r0['seq_len']}, mask={r0['mask']}, "
                f"phase={r0['phase']}, {r0['attention_layers']} attention layers, cost model {r0['cost_model']}")
        rows = [dict(r, makespan=format_seconds(r["makespan_s"]), layer=format_seconds(r["layer_makespan_s"]),
                     ideal=format_seconds(r["ideal_bound_s"]), memory=format_bytes(r["peak_memory_bytes"]),
                     critical=r["critical_path"]["holder"]) for r in results]
        tcols = ["schedule", "makespan", "layer", "ideal", "efficiency", "imbalance", "overlap"]
        if speedups:
            tcols.insert(2, cols[5])
        tcols += ["hide_block_tokens", "memory", "engine", "critical"]
        lines = [head, render_table(rows, tcols)]
        for r in results:
            lines.append(f"{r['schedule']}: slowest hop {r['bottleneck_hop']}; transfers "
                         f"{'hidden' if r['transfers_hidden'] else 'NOT hidden'} at {r['tokens_per_rank']} tokens/rank "
                         f"(needs >= {r['hide_block_tokens']}); busiest link: "
                         + (f"{r['busiest_links'][0]['src']}->{r['busiest_links'][0]['dst']} "
                            f"({r['busiest_links'][0]['link_class']})" if r["busiest_links"] else "-"))
        emit("\n".join(lines) + "\n", output)


def _write_trace(results: list[dict], trace: str | None) -> None:
    if not trace:
        return
    if len(results) == 1:
        results[0]["_timeline"].write(trace)
        return
    base, dot, ext = trace.rpartition(".")
    for r in results:
        r["_timeline"].write(f"{base}.{r['schedule']}.{ext}" if dot else f"{trace}.{r['schedule']}")


@click.command()
@click.option("--schedule", type=click.Choice(SCHEDULES), default="zigzag", show_default=True)
@workload_options()
@topology_options
@system_options
@job_options
@click.option("--trace", type=click.Path(dir_okay=False), default=None,
              help="Write the simulated timeline as Chrome-trace JSON (opens in Perfetto).")
@format_option
def simulate(schedule, trace, fmt, output, **opts):
    """Simulate one schedule on a topology: makespan, per-rank busy/idle, imbalance, overlap,
    efficiency, memory per GPU, and the hop that holds the ring back.

    With --cp-degree C: a whole job — every CP group at once on the topology — with per-group
    makespans, the slowest group, the links where groups meet and the other placement's result.

    With no flags: zigzag, llama3-8b, 128K tokens, causal, forward, on dgx-h100-8.
    """
    from ringsim.simulate import simulate_point

    if is_job(opts):
        return run_job_cli(_spec(schedule, opts), opts, fmt, output, trace)

    res = simulate_point(_spec(schedule, opts), keep_timeline=bool(trace))
    _write_trace([res], trace)
    _render([res], fmt, output, speedups=False)


@click.command()
@click.option("--schedules", default="contiguous,striped,zigzag", show_default=True,
              help="Comma list of schedules to compare.")
@workload_options()
@topology_options
@system_options
@click.option("--trace", type=click.Path(dir_okay=False), default=None,
              help="Write each schedule's timeline to FILE with the schedule name before the extension.")
@format_option
def compare(schedules, trace, fmt, output, **opts):
    """Simulate several schedules on one configuration, sorted by makespan, with speedups."""
    from ringsim.simulate import compare_schedules

    names = [s.strip().lower() for s in schedules.split(",") if s.strip()]
    bad = [s for s in names if s not in SCHEDULES]
    if bad or not names:
        raise InputError(f"unknown schedule(s) {', '.join(bad) or '(none)'} in --schedules; use a comma list of "
                         f"{', '.join(SCHEDULES)}")
    results = compare_schedules(_spec(names[0], opts), list(dict.fromkeys(names)), keep_timeline=bool(trace))
    _write_trace(results, trace)
    _render(results, fmt, output, speedups=True)
