"""One simulation point end to end: strategy → program → engine → metrics, as a JSON-ready result.

``simulate_point`` is what `ringsim simulate`, `compare` and `sweep` call for every point; it
keeps the three inputs separate as ASTRA-sim does — workload (model, length, batch, dtype),
system (strategy, mask, phase, protocol knobs, cost model, engine) and network (topology).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import CostModel, resolve_kernels
from .metrics import critical_path, hide_block_tokens, program_metrics
from .topology import Topology
from .units import InputError
from .workload import Workload

__all__ = ["SimSpec", "simulate_point", "compare_schedules", "ideal_bound_s"]

PHASES = ("fwd", "fwd+bwd")


def ideal_bound_s(workload: Workload, topology: Topology, cost_model: CostModel, plan, phase: str) -> float:
    """One attention layer's ideal time per rank: all its work as ONE kernel call over the whole
    sequence (per phase) at the cost model's rate — the device's best, large-block throughput —
    spread evenly over the ranks, with no communication, no memory work between kernels and no
    imbalance. A schedule's efficiency is this over its makespan, so small or odd-shaped blocks,
    merges, exposed transfers and imbalance all show as lost efficiency."""
    from .blocks import KIND_CODES

    T, G = plan.seq_len, plan.world_size
    kind = {"full": "full", "causal": "causal"}.get(plan.mask.kind, "masked")
    total = 0.0
    for ph in ("fwd",) if phase == "fwd" else ("fwd", "bwd"):
        total += float(cost_model.call_seconds(workload, topology, np.array([T]), np.array([T]),
                                               np.array([plan.total_pairs()]), np.array([KIND_CODES[kind]]), ph)[0])
    return total / G


@dataclass
class SimSpec:
    workload: Workload
    topology: Topology
    schedule: str = "zigzag"        # a strategy spec (a bare layout name: the ring with it)
    world_size: int | None = None   # default: every GPU of the topology
    mask: str | None = None         # default: the model's own (its sliding window, else causal)
    phase: str = "fwd"
    engine: str = "auto"
    knobs: object = None            # ringsim.engines.Knobs; None → defaults
    cost_model: CostModel | None = None  # None: the device's default kernels (a profile, or the roofline)
    implementation: str = "ringsim"  # the memory work between kernels (ringsim, ring-flash-attn)
    documents: list | None = None   # packed document lengths (None: one sequence)

    def resolved_cost_model(self) -> CostModel:
        return self.cost_model if self.cost_model is not None else resolve_kernels(None, self.topology)

    def resolved_world_size(self) -> int:
        G = self.world_size or self.topology.num_gpus
        self.topology.check_world_size(G)
        return G

    def resolved_mask(self) -> str:
        return self.mask or self.workload.default_mask()


def simulate_point(spec: SimSpec, keep_timeline: bool = False) -> dict:
    """Simulate one configuration; return metrics (and the timeline under ``"_timeline"`` if asked)."""
    from .engines import Knobs, simulate_program  # the engines pull in simpy only when simulating
    from .strategies import parse_strategy

    if spec.phase not in PHASES:
        raise InputError(f"unknown phase {spec.phase!r}; use fwd or fwd+bwd")
    G = spec.resolved_world_size()
    wl = spec.workload
    strategy = parse_strategy(spec.schedule, spec.implementation, spec.documents)
    program = strategy.build(wl, G, spec.resolved_mask(), spec.phase)
    plan = program.plan
    knobs = spec.knobs or Knobs()
    cost = spec.resolved_cost_model()
    res = simulate_program(program, wl, spec.topology, cost, knobs, spec.engine)
    m = program_metrics(res.program, res.arrays)
    topo = cost.apply_to_topology(spec.topology, program)
    layers = wl.layers
    density = plan.total_pairs() / float(plan.seq_len) ** 2
    hops = hide_block_tokens(wl, topo, G, cost, density)
    ideal = ideal_bound_s(wl, topo, cost, plan, spec.phase)
    slowest = min(hops, key=lambda h: h["bottleneck_Bps"]) if hops else None
    busy = sorted(res.link_busy_s.items(), key=lambda kv: -kv[1])[:5]
    hide = max(h["hide_block_tokens"] for h in hops) if hops else 0
    out = {
        "schedule": spec.schedule,
        "world_size": G,
        "seq_len": wl.seq_len,
        "mask": str(plan.mask),
        "phase": spec.phase,
        "model": wl.model.name,
        "topology": spec.topology.name,
        "engine": res.engine,
        "cost_model": cost.name,
        "kernels": cost.describe().get("profile", cost.name),
        "implementation": spec.implementation,
        "makespan_s": m["layer_makespan_s"] * layers,
        "layer_makespan_s": m["layer_makespan_s"],
        "attention_layers": layers,
        "ideal_bound_s": ideal * layers,
        "efficiency": ideal / m["layer_makespan_s"] if m["layer_makespan_s"] > 0 else 1.0,
        "mean_compute_s": m["ideal_bound_s"] * layers,
        "imbalance": m["imbalance"],
        "work_imbalance": plan.imbalance(),
        "overlap": m["overlap"],
        "max_compute_s": max(p["compute_s"] for p in m["per_rank"]) * layers,
        "tokens_per_rank": plan.tokens_per_rank,
        **({"documents": plan.layout.describe()} if spec.documents is not None else {}),
        "shard_bytes": wl.shard_bytes(plan.tokens_per_rank),
        "hide_block_tokens": hide,
        "transfers_hidden": bool(hops) and plan.tokens_per_rank >= hide,
        "bottleneck_hop": f"{slowest['src']}->{slowest['dst']} ({'/'.join(slowest['link_classes'])}, "
                          f"{slowest['bottleneck_Bps'] / 1e9:.4g} GB/s)" if slowest else None,
        "critical_path": critical_path(res.program, res.arrays, res.compute_s),
        **strategy.memory(wl, G, spec.resolved_mask(), spec.phase, knobs.double_buffer),
        "per_rank": m["per_rank"],
        "hops": hops,
        "busiest_links": [{"link": lid, "src": topo.links[lid].src, "dst": topo.links[lid].dst,
                           "link_class": topo.links[lid].link_class, "busy_s": t,
                           "bytes": res.link_bytes.get(lid, 0.0)} for lid, t in busy],
    }
    if keep_timeline:
        out["_timeline"] = res.timeline
    return out


def compare_schedules(spec: SimSpec, schedules: list[str], keep_timeline: bool = False) -> list[dict]:
    """Simulate each schedule; sort by makespan; add speedups against contiguous and the fastest."""
    from dataclasses import replace

    results = [simulate_point(replace(spec, schedule=s), keep_timeline) for s in schedules]
    results.sort(key=lambda r: (r["makespan_s"], r["schedule"]))
    base = next((r for r in results if r["schedule"] == "contiguous"), results[-1])
    best = results[0]["makespan_s"]
    for r in results:
        r["speedup_vs_contiguous" if base["schedule"] == "contiguous" else "speedup_vs_slowest"] = \
            base["makespan_s"] / r["makespan_s"] if r["makespan_s"] > 0 else float("nan")
        r["slowdown_vs_best"] = r["makespan_s"] / best if best > 0 else float("nan")
    return results
