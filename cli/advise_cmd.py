"""`ringsim advise`: rank every strategy and degree that fits; say why the winner wins."""
from __future__ import annotations

import click

from ringsim.units import format_bytes, format_seconds

from .common import emit, format_option, render_table, system_options, to_json, topology_options, workload_options
from .simulate_cmd import _spec, parse_specs, strategy_options


@click.command()
@workload_options(seq_len_default="1M")
@topology_options
@system_options
@strategy_options
@click.option("--strategies", default=None,
              help="Rank only these specs (comma list) instead of every candidate the topology suggests.")
@format_option
def advise(strategies, fmt, output, **opts):
    """Rank every context-parallel strategy and degree that fits the memory limit (ring layouts,
    all-gather, Ulysses, USP and double-ring factorizations aligned with the node, pass-KV/pass-Q
    with --cached-tokens) by simulated makespan, and say in one line each why the winner wins.

    \b
    Example: ringsim advise --model llama3-70b --seq-len 1M --topology dgx-h100-16n --phase fwd+bwd \\
                            --device-memory 80GB --format json
    """
    from ringsim.advise import advise as run_advise

    specs = parse_specs(strategies, "--strategies", opts.get("cached_tokens")) if strategies else None
    doc = run_advise(_spec("zigzag", opts, default_limit=True), specs)
    if fmt == "json":
        emit(to_json(doc), output)
        return
    q = doc["query"]
    head = (f"{q['model']}, T={q['seq_len']}, {q['phase']}, on {q['topology']} (G={q['world_size']}, "
            f"{q['node_size']} per node), memory limit "
            f"{format_bytes(q['memory_limit_bytes']) if q['memory_limit_bytes'] else 'none'}: "
            f"{doc['candidates']} candidates in {doc['elapsed_s']:.1f} s")
    rows = [dict(r, makespan=format_seconds(r["makespan_s"]), memory=format_bytes(r["peak_memory_bytes"]),
                 exposed=f"{format_seconds(r['exposed_comm_s'])} / {format_seconds(r['exposed_comm_mean_s'])}",
                 slowdown=r["slowdown_vs_best"]) for r in doc["ranked"]]
    lines = [head, render_table(rows, ["rank", "schedule", "makespan", "slowdown", "exposed", "work_imbalance",
                                       "memory", "engine"]) if rows else "(no strategy fits)\n"]
    if doc["best"]:
        lines.append("best: " + doc["best"]["reason"])
        lines += ["  vs " + r["why_not"] for r in doc["ranked"][1:]]
    lines += [f"not applicable: {r['reason']}" for r in doc["not_applicable"]]
    emit("\n".join(lines) + "\n", output)
