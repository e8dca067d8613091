"""`ringsim simulate --cp-degree C`: every CP group of a job on one fabric (ringsim.job)."""
from __future__ import annotations

import click

from ringsim.units import InputError, format_bytes, format_seconds

from .common import emit, render_csv, render_table, to_json

JOB_KEYS = ("cp_degree", "tp", "dp", "placement_policy", "tp_nvlink_share", "symmetry")


def job_options(f):
    """--cp-degree/--tp/--dp/--placement-policy/--tp-nvlink-share/--symmetry."""
    opts = [
        click.option("--cp-degree", type=int, default=None,
                     help="Simulate a job: world / (C·TP) CP groups of C ranks each, all at once on the topology "
                          "(their transfers contend).", metavar="C"),
        click.option("--tp", type=int, default=None, metavar="TP",
                     help="Tensor parallelism inside the node (with --cp-degree): each CP rank is TP GPUs, each "
                          "running heads/TP; TP traffic takes --tp-nvlink-share of NVLink [default 1].",),
        click.option("--dp", type=int, default=None, metavar="D",
                     help="Data-parallel replicas = CP groups (with --cp-degree) [default: all that fit].",),
        click.option("--placement-policy", type=click.Choice(["contiguous", "rail-aligned"]), default=None,
                     help="Where the job's ranks go (with --cp-degree): contiguous (job rank j on GPU j) or "
                          "rail-aligned (each CP rank on its own node, same local GPU) [default contiguous; "
                          "--placement GPU,... gives your own order]."),
        click.option("--tp-nvlink-share", type=float, default=None, metavar="F",
                     help="Share of every NVLink link taken by TP traffic [default 0.5 when --tp > 1, else 0]."),
        click.option("--symmetry/--no-symmetry", default=True, show_default=True,
                     help="Simulate equivalent groups that share no link once (exact; see `symmetry` in the output)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def is_job(opts: dict) -> bool:
    return any(opts.get(k) is not None for k in ("cp_degree", "tp", "dp", "placement_policy", "tp_nvlink_share"))


def _link(l: dict | None) -> str:
    if not l:
        return "-"
    return (f"{l['src']}->{l['dst']} ({l['link_class']}, {format_bytes(l['bandwidth_Bps'])}/s): "
            f"{l['groups']} groups, {l['flows']} flows")


def run_job_cli(spec, opts: dict, fmt: str, output, trace) -> None:
    """Simulate the job the options describe and print it."""
    from ringsim.job import simulate_job

    if trace:
        raise InputError("--trace is not supported with --cp-degree; drop --trace (or simulate one ring without "
                         "--cp-degree)")
    if opts.get("cp_degree") is None:
        raise InputError("--tp, --dp, --placement-policy and --tp-nvlink-share describe a job; add --cp-degree C")
    policy = opts.get("placement_policy")
    if opts.get("placement"):
        if policy is not None:
            raise InputError("--placement gives the job's GPU order itself; drop --placement-policy")
        policy = "placement"
    res = simulate_job(spec, opts["cp_degree"], opts.get("tp") or 1, opts.get("dp"), policy or "contiguous",
                       opts.get("tp_nvlink_share"), opts.get("symmetry", True))
    if fmt == "json":
        emit(to_json({"results": [res]}), output)
        return
    if fmt == "csv":
        rows = [dict(g, schedule=res["schedule"], placement=res["placement"], topology=res["topology"])
                for g in res["per_group"]]
        emit(render_csv(rows, ["topology", "schedule", "placement", "group", "makespan_s", "layer_makespan_s",
                               "first_gpu", "last_gpu"]), output)
        return
    sym = res["symmetry"]
    lines = [f"{res['model']} on {res['topology']}: job of {res['world_size']} GPUs = {res['groups']} CP groups × "
             f"cp {res['cp_degree']} × tp {res['tp']}, placement {res['placement']}, T={res['seq_len']}, "
             f"{res['schedule']}, mask={res['mask']}, phase={res['phase']}, engine {res['engine']}",
             f"slowest group {res['slowest_group']['group']}: makespan {format_seconds(res['makespan_s'])} "
             f"({format_seconds(res['layer_makespan_s'])} per layer × {res['attention_layers']}); fastest group "
             f"{format_seconds(res['fastest_group']['makespan_s'])} (spread {res['group_spread']:.4f})",
             f"links shared by groups: {res['links_shared_by_groups']}; most shared link: "
             f"{_link(res['most_shared_link'])}",
             "symmetry: " + (f"used — simulated {sym['simulated_units']} of {sym['units']} rings "
                             f"({sym['classes']} class(es) of {sym['components']} independent components)"
                             if sym["used"] else f"not used ({sym['components']} components, {sym['classes']} classes)")]
    other = res.get("other_placement")
    if other:
        if "error" in other:
            lines.append(f"placement {other['placement']}: not applicable ({other['error']})")
        else:
            lines.append(f"placement {other['placement']} instead: makespan {format_seconds(other['makespan_s'])} "
                         f"(× {other['ratio_to_this']:.4f}), {other['links_shared_by_groups']} links shared by groups; "
                         f"most shared: {_link(other['most_shared_link'])}")
    if res["shared_links"]:
        rows = [dict(l, bandwidth=format_bytes(l["bandwidth_Bps"]) + "/s", **{"busy per layer": format_seconds(l["busy_s"])})
                for l in res["shared_links"]]
        lines.append(render_table(rows, ["src", "dst", "link_class", "bandwidth", "groups", "flows", "busy per layer"]).rstrip())
    emit("\n".join(lines) + "\n", output)
