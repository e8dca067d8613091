"""`ringsim simulate` (one strategy) and `ringsim compare` (several, sorted by makespan)."""
from __future__ import annotations

import click

from ringsim.outputs import check_destinations
from ringsim.schedules import SCHEDULES
from ringsim.units import InputError, format_bytes, format_seconds, parse_seq_len

from .common import (build_cost_model, build_topology, build_workload, documents_options, emit, format_option,
                     output_path, pack_of, render_csv, render_table, system_options, to_json, topology_options,
                     workload_options)
from .job_opts import is_job, job_options, run_job_cli

SUMMARY = ["schedule", "world_size", "seq_len", "phase", "engine", "makespan_s", "layer_makespan_s",
           "ideal_bound_s", "efficiency", "imbalance", "overlap", "exposed_comm_s", "exposed_comm_mean_s",
           "hide_block_tokens", "transfers_hidden", "peak_memory_bytes", "bottleneck_hop", "applicable", "reason"]


_WORKLOAD_KEYS = ("model", "layers", "heads", "kv_heads", "head_dim", "hidden", "ffn", "seq_len", "batch", "dtype")
_TOPOLOGY_KEYS = ("topology", "world_size", "link_scale", "straggler", "degrade_link", "placement")


def _spec(schedule: str, opts: dict, default_limit: bool = False):
    """The SimSpec the shared workload, topology and system options describe. The memory limit is
    ``--device-memory``, else (``default_limit``: compare, advise) the topology's device memory."""
    from ringsim.engines import Knobs
    from ringsim.memory import parse_device_memory
    from ringsim.simulate import SimSpec

    pack, opts["seq_len"] = pack_of(click.get_current_context(), opts.get("documents"), opts["seq_len"],
                                    opts.get("seed", 0))
    wl = build_workload(**{k: opts[k] for k in _WORKLOAD_KEYS})
    topo = build_topology(**{k: opts[k] for k in _TOPOLOGY_KEYS})
    limit = parse_device_memory(opts.get("device_memory"))
    if limit is None and default_limit:
        limit = topo.device.memory_bytes or None
    cached = opts.get("cached_tokens")
    return SimSpec(workload=wl, topology=topo, schedule=schedule, world_size=opts["world_size"], mask=opts["mask"],
                   phase=opts["phase"], engine=opts["engine"],
                   knobs=Knobs(opts["overlap"], opts["rendezvous"], opts["double_buffer"]),
                   cost_model=build_cost_model(opts["calibration"], opts.get("kernels"), topo),
                   implementation=opts.get("implementation", "ringsim"), documents=pack,
                   cached_tokens=parse_seq_len(cached, "--cached-tokens") if cached else None,
                   memory_limit_bytes=limit)


def strategy_options(f):
    """--cached-tokens and --device-memory (strategy-level inputs)."""
    f = click.option("--device-memory", default=None,
                     help="Memory per GPU (e.g. 80GB, h100); a strategy needing more is listed as not applicable "
                          "[compare: the topology's device memory].")(f)
    return click.option("--cached-tokens", default=None,
                        help="Prefill with this many cached tokens (K/M binary) for pass-kv / pass-q.")(f)


def parse_specs(text: str, option: str, cached_tokens=None, documents=None) -> list[str]:
    """A comma list of strategy specs, each checked (an unknown name is bad input, exit 2); with
    ``documents`` (a --documents spec) the ring's document layouts (zigzag-doc, balanced[:K]) too."""
    from ringsim.strategies import STRATEGY_NAMES, parse_strategy

    names = [x.strip().lower() for x in str(text).split(",") if x.strip()]
    bad = []
    for x in names:
        try:
            parse_strategy(x, documents=[1] if documents else None, cached_tokens=parse_seq_len(cached_tokens, "--cached-tokens") if cached_tokens else None)
        except InputError as e:
            if not str(e).startswith("unknown strategy"):
                raise  # a known strategy with a malformed argument: its own message
            bad.append(x)
    if bad or not names:
        what = "schedule(s)" if option == "--schedules" else "strategy spec(s)"
        raise InputError(f"unknown {what} {', '.join(bad) or '(none)'} in {option}; use a comma list of "
                         f"{', '.join(STRATEGY_NAMES)}")
    return list(dict.fromkeys(names))


def _public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def _render(results: list[dict], fmt: str, output, speedups: bool) -> None:
    cols = list(SUMMARY)
    ran = [r for r in results if r.get("applicable", True)]
    refused = [r for r in results if not r.get("applicable", True)]
    if speedups and ran:
        cols.insert(5, next(k for k in ran[0] if k.startswith("speedup_vs")))
    if fmt == "json":
        emit(to_json({"results": [_public(r) for r in results]}), output)
    elif fmt == "csv":
        flat = [dict(_public(r), critical_path=(r.get("critical_path") or {}).get("holder")) for r in results]
        emit(render_csv(flat, cols + ["critical_path"]), output)
    else:
        r0 = ran[0] if ran else results[0]
        head = (f"{r0['model']} on {r0['topology']}: G={r0['world_size']}, T={r0['seq_len']}, "
                + (f"mask={r0['mask']}, " if ran else "") + f"phase={r0['phase']}"
                + (f", {r0['attention_layers']} attention layers, kernels {r0['kernels']}, "
                   f"implementation {r0['implementation']}" if ran else ""))
        rows = [dict(r, makespan=format_seconds(r["makespan_s"]), layer=format_seconds(r["layer_makespan_s"]),
                     ideal=format_seconds(r["ideal_bound_s"]), memory=format_bytes(r["peak_memory_bytes"]),
                     exposed=format_seconds(r["exposed_comm_s"]) + " / " + format_seconds(r["exposed_comm_mean_s"]),
                     critical=r["critical_path"]["holder"]) for r in ran]
        tcols = ["schedule", "makespan", "layer", "ideal", "efficiency", "imbalance", "exposed"]
        if speedups and ran:
            tcols.insert(2, cols[5])
        tcols += ["memory", "engine", "critical"]
        lines = [head, render_table(rows, tcols) if rows else "(no strategy could run)\n",
                 "exposed = communication not hidden by compute: time ranks wait for messages, max / mean over ranks"]
        lines += [f"{r['schedule']}: not applicable: {r['reason']}" for r in refused]
        share = next((r["nccl_sm_share"] for r in ran if r.get("nccl_sm_share")), None)
        if share:
            grew = ", ".join(f"{r['schedule']} +{format_seconds(r['nccl_compute_slowdown_s'])}" for r in ran)
            lines.append("NCCL send/recv kernels hold " + ", ".join(f"{v:.0%} of the SMs over {c}" for c, v in
                                                                  share.items())
                         + f" while in flight; the compute beside them grew (most on one rank): {grew}")
        sliced = [r for r in ran if r.get("slice_overhead")]
        if sliced:
            lines.append(f"{r0['implementation']}: calls on a row slice of the queries take "
                         + ", ".join(f"{r['schedule']} +{r['slice_overhead']:.1%}" for r in sliced)
                         + " of their kernel time beyond the profile (fitted to the development set's H800 half: "
                           "benchmarks/bench_devset.py --fit)")
        for r in ran:
            if not r.get("hops"):
                continue
            lines.append(f"{r['schedule']}: slowest hop {r['bottleneck_hop']}; transfers "
                         f"{'hidden' if r['transfers_hidden'] else 'NOT hidden'} at {r['tokens_per_rank']} tokens/rank "
                         f"(needs >= {r['hide_block_tokens']}); busiest link: "
                         + (f"{r['busiest_links'][0]['src']}->{r['busiest_links'][0]['dst']} "
                            f"({r['busiest_links'][0]['link_class']})" if r["busiest_links"] else "-"))
        emit("\n".join(lines) + "\n", output)


def _trace_names(trace: str | None, schedules: list[str] | None) -> dict:
    """schedule → trace file (``schedules`` None: one run, the name as given)."""
    if not trace:
        return {}
    if schedules is None:
        return {None: trace}
    base, dot, ext = trace.rpartition(".")
    return {s: f"{base}.{s.replace(':', '-')}.{ext}" if dot else f"{trace}.{s.replace(':', '-')}" for s in schedules}


def _write_trace(results: list[dict], names: dict) -> None:
    for r in results:
        path = names.get(None) or names.get(r["schedule"])
        if path and "_timeline" in r:  # a strategy that was not applicable ran nothing
            r["_timeline"].write(path)


@click.command()
@click.option("--strategy", default=None,
              help="Strategy spec: zigzag | striped | contiguous (the ring; with --documents also zigzag-doc, "
                   "balanced[:K]), allgather[:tree], ulysses, usp:UxR[:ring-inner], double-ring:IxO, pass-kv[:P], "
                   "pass-q[:P] [default: zigzag].")
@click.option("--schedule", default=None,
              help=f"The ring's layout (the older name of --strategy for the ring): {', '.join(SCHEDULES)}.")
@workload_options()
@documents_options
@topology_options
@system_options
@strategy_options
@job_options
@click.option("--trace", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Write the simulated timeline as Chrome-trace JSON (opens in Perfetto).")
@format_option
def simulate(strategy, schedule, trace, fmt, output, **opts):
    """Simulate one strategy on a topology: makespan, exposed communication, per-rank busy/idle,
    imbalance, overlap, efficiency, memory per GPU, and what holds it back.

    With --cp-degree C: a whole job — every CP group at once on the topology — with per-group
    makespans, the slowest group, the links where groups meet and the other placement's result.

    With no flags: zigzag, llama3-8b, 128K tokens, causal, forward, on dgx-h100-8.
    """
    from ringsim.simulate import simulate_point

    if strategy and schedule and strategy != schedule:
        raise InputError(f"give --strategy or --schedule, not both ({strategy} vs {schedule})")
    spec = parse_specs(strategy or schedule or "zigzag", "--strategy", opts.get("cached_tokens"),
                       opts.get("documents"))[0]
    if is_job(opts):
        return run_job_cli(_spec(spec, opts), opts, fmt, output, trace)
    names = _trace_names(trace, None)
    check_destinations([(output, "--output")] + [(n, "--trace") for n in names.values()])
    res = simulate_point(_spec(spec, opts), keep_timeline=bool(trace))
    _write_trace([res], names)
    _render([res], fmt, output, speedups=False)


@click.command()
@click.option("--strategies", default=None,
              help="Comma list of strategy specs, e.g. zigzag,striped,allgather,ulysses,usp:4x2,double-ring:8x4 "
                   "(a bare layout name is the ring with it).")
@click.option("--schedules", default=None, help="Comma list of ring layouts (the older name of --strategies) "
              "[default: contiguous,striped,zigzag; with --documents also zigzag-doc, balanced[:K]].")
@workload_options()
@documents_options
@topology_options
@system_options
@strategy_options
@click.option("--trace", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Write each strategy's timeline to FILE with the strategy name before the extension.")
@format_option
def compare(strategies, schedules, trace, fmt, output, **opts):
    """Simulate several strategies on one configuration, sorted by makespan, with speedups,
    exposed communication and memory per GPU; a strategy that cannot run it is listed with the
    reason."""
    from ringsim.simulate import compare_schedules

    if strategies and schedules:
        raise InputError("give --strategies or --schedules, not both (--schedules is the older name)")
    names = parse_specs(strategies or schedules or "contiguous,striped,zigzag",
                        "--strategies" if strategies else "--schedules", opts.get("cached_tokens"),
                        opts.get("documents"))
    traces = _trace_names(trace, names)
    check_destinations([(output, "--output")] + [(n, "--trace") for n in traces.values()])
    results = compare_schedules(_spec(names[0], opts, default_limit=True), names, keep_timeline=bool(trace))
    _write_trace(results, traces)
    _render(results, fmt, output, speedups=True)
