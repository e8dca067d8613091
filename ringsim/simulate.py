"""One simulation point end to end: strategy → program → engine → metrics, as a JSON-ready result.

``simulate_point`` is what `ringsim simulate`, `compare`, `sweep` and `advise` call for every
point; it keeps the three inputs separate as ASTRA-sim does — workload (model, length, batch,
dtype), system (strategy, mask, phase, protocol knobs, cost model, engine) and network (topology).

Every result reports, besides the makespan:

- **exposed communication** (``exposed_comm_s`` the max over ranks, ``exposed_comm_mean_s`` the
  mean, all attention layers): the time a rank sits inside its program waiting for messages — per
  step, the step's end minus its compute's end, summed (a step without compute, such as an
  all-gather's or an all-to-all's, is waited through entirely). It is the communication the
  strategy does not hide behind compute; it includes waiting for a slower peer's message (so an
  unbalanced ring shows some here as well as in ``imbalance``);
- **memory per GPU** (``peak_memory_bytes``, the strategy's :meth:`~ringsim.strategies.Strategy.memory`)
  and whether it fits ``memory_limit_bytes`` (``--device-memory``, else the topology's device);
- the work balance (``work_imbalance``: max / mean of the pairs × heads each rank computes).

:func:`compare_schedules` lists a strategy that cannot run a configuration (its
:class:`~ringsim.strategies.NotApplicable` reason, or memory that does not fit) as a row with
``applicable: false`` and the ``reason``, after the ones that ran.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .costs import CostModel, resolve_kernels
from .metrics import critical_path, hide_block_tokens, program_metrics
from .topology import Topology
from .units import InputError
from .workload import Workload

__all__ = ["SimSpec", "simulate_point", "compare_schedules", "ideal_bound_s", "check_memory", "not_applicable_row"]

PHASES = ("fwd", "fwd+bwd")


def ideal_bound_s(workload: Workload, topology: Topology, cost_model: CostModel, plan, phase: str) -> float:
    """One attention layer's ideal time per rank: all its work as ONE kernel call over the whole
    sequence (per phase) at the cost model's rate — the device's best, large-block throughput: the
    faster of the mask's own call and the same pairs at the full-call rate —
    spread evenly over the ranks, with no communication, no memory work between kernels and no
    imbalance. A schedule's efficiency is this over its makespan, so small or odd-shaped blocks,
    merges, exposed transfers and imbalance all show as lost efficiency."""
    from .blocks import KIND_CODES

    T, G = plan.seq_len, plan.world_size
    kind = {"full": "full", "causal": "causal"}.get(plan.mask.kind, "masked")
    total = 0.0
    for ph in ("fwd",) if phase == "fwd" else ("fwd", "bwd"):
        # the call as the mask makes it, or its pairs at the full-call rate, whichever is faster (a
        # profile holds a causal curve at its largest measured size, below the full one)
        total += float(min(cost_model.call_seconds(workload, topology, np.array([T]), np.array([T]),
                                                   np.array([plan.total_pairs()]), np.array([KIND_CODES[k]]), ph)[0]
                           for k in dict.fromkeys((kind, "full"))))
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
    cached_tokens: int | None = None       # completes a bare pass-kv / pass-q spec
    memory_limit_bytes: float | None = None  # refuse (NotApplicable) above it; None: no check

    def resolved_world_size(self) -> int:
        G = self.world_size or self.topology.num_gpus
        self.topology.check_world_size(G)
        return G

    def resolved_mask(self) -> str:
        return self.mask or self.workload.default_mask()


def check_memory(strategy, memory: dict, limit_bytes: float | None, where: str = "") -> None:
    """Raise :class:`~ringsim.strategies.NotApplicable` when the strategy's peak memory per GPU
    exceeds ``limit_bytes`` (None: no limit)."""
    from .strategies import NotApplicable
    from .units import format_bytes

    if limit_bytes is not None and memory["peak_memory_bytes"] > limit_bytes:
        raise NotApplicable(f"{strategy.spec}: needs {format_bytes(memory['peak_memory_bytes'])} per GPU "
                            f"({format_bytes(memory['kv_shard_per_gpu_bytes'])} K/V of every layer + "
                            f"{format_bytes(memory['ring_working_set_bytes'])} for one layer's run), more than the "
                            f"{format_bytes(limit_bytes)}{where} of device memory")


def simulate_point(spec: SimSpec, keep_timeline: bool = False) -> dict:
    """Simulate one configuration; return metrics (and the timeline under ``"_timeline"`` if asked).
    Raises :class:`~ringsim.strategies.NotApplicable` for a configuration the strategy cannot run
    (including memory above ``spec.memory_limit_bytes``)."""
    import numpy as np

    from .engines import Knobs, simulate_program  # the engines pull in simpy only when simulating
    from .strategies import Ring, parse_strategy

    if spec.phase not in PHASES:
        raise InputError(f"unknown phase {spec.phase!r}; use fwd or fwd+bwd")
    G = spec.resolved_world_size()
    wl = spec.workload
    strategy = parse_strategy(spec.schedule, spec.implementation, spec.documents, cached_tokens=spec.cached_tokens)
    knobs = spec.knobs or Knobs()
    memory = strategy.memory(wl, G, spec.resolved_mask(), spec.phase, knobs.double_buffer)
    check_memory(strategy, memory, spec.memory_limit_bytes)
    program = strategy.build(wl, G, spec.resolved_mask(), spec.phase)
    plan = program.plan
    cost = spec.resolved_cost_model()
    res = simulate_program(program, wl, spec.topology, cost, knobs, spec.engine)
    m = program_metrics(res.program, res.arrays)
    topo = cost.apply_to_topology(spec.topology, program)
    layers = wl.layers
    flat = program.flat
    fwd = np.array([p == "fwd" for p in flat.step_phase])
    work = flat.work_pairs[fwd].sum(axis=0)            # pairs × share of heads, per rank (forward)
    work_imbalance = float(work.max() / work.mean()) if work.mean() > 0 else 1.0
    density = float(work.sum()) / float(plan.seq_len) ** 2
    ring = isinstance(strategy, Ring)  # the hide-block analysis is the ring's: hop r → r+1 per step
    hops = hide_block_tokens(wl, topo, G, cost, density) if ring else []
    ideal = ideal_bound_s(wl, topo, cost, plan, spec.phase)
    slowest = min(hops, key=lambda h: h["bottleneck_Bps"]) if hops else None
    busy = sorted(res.link_busy_s.items(), key=lambda kv: -kv[1])[:5]
    hide = max(h["hide_block_tokens"] for h in hops) if hops else (0 if ring else None)
    waits = np.array([p["wait_s"] for p in m["per_rank"]])
    out = {
        "schedule": strategy.spec,
        "strategy": strategy.spec,
        "applicable": True,
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
        "work_imbalance": work_imbalance,
        "overlap": m["overlap"],
        "exposed_comm_s": float(waits.max()) * layers if len(waits) else 0.0,
        "exposed_comm_mean_s": float(waits.mean()) * layers if len(waits) else 0.0,
        "sent_bytes_per_rank": max((p["bytes_sent"] for p in m["per_rank"]), default=0.0),
        "max_compute_s": max(p["compute_s"] for p in m["per_rank"]) * layers,
        # the most any rank's compute grew beside NCCL's send/recv kernels (their SMs), all layers
        "nccl_compute_slowdown_s": float(res.timeline.meta.get("nccl_compute_slowdown_s", 0.0)) * layers,
        "nccl_sm_share": res.timeline.meta.get("nccl_sm_share"),
        # the implementation's overhead on calls on a row slice of the queries, where it was charged
        "slice_overhead": _charged_slice_overhead(program, cost),
        # the busiest rank's compute as priced, split into kernel calls and memory work (all layers;
        # None where the cost model prices whole steps, as a calibration does)
        **_busiest_split(program, wl, topo, cost, [p["compute_s"] for p in m["per_rank"]], layers),
        "tokens_per_rank": plan.tokens_per_rank,
        **({"documents": plan.layout.describe()} if spec.documents is not None else {}),
        "shard_bytes": wl.shard_bytes(plan.tokens_per_rank),
        "hide_block_tokens": hide,
        "transfers_hidden": (bool(hops) and plan.tokens_per_rank >= hide) if ring else None,
        "bottleneck_hop": f"{slowest['src']}->{slowest['dst']} ({'/'.join(slowest['link_classes'])}, "
                          f"{slowest['bottleneck_Bps'] / 1e9:.4g} GB/s)" if slowest else None,
        "critical_path": critical_path(res.program, res.arrays, res.compute_s),
        **memory,
        "memory_limit_bytes": spec.memory_limit_bytes,
        "per_rank": m["per_rank"],
        "hops": hops,
        "busiest_links": [{"link": lid, "src": topo.links[lid].src, "dst": topo.links[lid].dst,
                           "link_class": topo.links[lid].link_class, "busy_s": t,
                           "bytes": res.link_bytes.get(lid, 0.0)} for lid, t in busy],
    }
    if keep_timeline:
        out["_timeline"] = res.timeline
    return out


def compute_split(program, workload: Workload, topology: Topology, cost: CostModel):
    """Per rank, the seconds of one layer's kernel calls and of its memory ops (merges,
    accumulations, copies) as ``cost`` prices them on ``topology`` (after ``apply_to_topology``),
    each ``[G]``; their sum is the rank's priced compute. None for a cost model that prices whole
    steps (a calibration), which has no such split."""
    from .costs import CostContext, speed_factors
    from .program import KernelOp

    if type(cost).step_seconds is not CostModel.step_seconds:
        return None
    ctx = CostContext(program, workload, topology)
    G = program.world_size
    kern, mem = np.zeros(G), np.zeros(G)
    for st in program.stages:
        for op in st.ops:
            if isinstance(op, KernelOp):
                kern += cost.kernel_seconds(op, ctx).sum(axis=0)
            else:
                mem += cost.memory_seconds(op, ctx).sum(axis=0)
    sf = speed_factors(topology, G)
    return kern / sf, mem / sf


def _busiest_split(program, workload, topology, cost, compute_s, layers: int) -> dict:
    """The busiest rank (most compute, as run) and its kernel and memory-op seconds (all layers)."""
    r = int(np.argmax(compute_s)) if len(compute_s) else 0
    split = compute_split(program, workload, topology, cost)
    if split is None:
        return {"busiest_rank": r, "busiest_kernel_s": None, "busiest_memory_s": None}
    return {"busiest_rank": r, "busiest_kernel_s": float(split[0][r]) * layers,
            "busiest_memory_s": float(split[1][r]) * layers}


def _charged_slice_overhead(program, cost) -> float:
    """The largest ``slice_overhead`` (:data:`ringsim.strategies.ring.SLICE_OVERHEAD`) the cost
    model charged a call of ``program`` (0 when none was: no sliced call, an implementation without
    one, or a model other than the kernel profile's)."""
    from .costs.kernels import ProfileCost
    from .program import KernelOp

    if not isinstance(cost, ProfileCost):
        return 0.0
    u = 0.0
    for st in program.stages:
        for op in st.ops:
            if isinstance(op, KernelOp) and op.slice_overhead and (op.sliced & op.active).any():
                u = max(u, float(op.slice_overhead))
    return u


def not_applicable_row(spec: SimSpec, schedule: str, reason: str) -> dict:
    """The row of a strategy that cannot run the configuration."""
    return {"schedule": schedule, "strategy": schedule, "applicable": False, "reason": reason,
            "world_size": spec.world_size or spec.topology.num_gpus, "seq_len": spec.workload.seq_len,
            "phase": spec.phase, "model": spec.workload.model.name, "topology": spec.topology.name}


def compare_schedules(spec: SimSpec, schedules: list[str], keep_timeline: bool = False) -> list[dict]:
    """Simulate each strategy (a spec; a bare layout name is the ring); sort by makespan; add
    speedups against contiguous (else the slowest) and the fastest. A strategy that cannot run the
    configuration becomes a not-applicable row (``applicable: false``, ``reason``) at the end."""
    from dataclasses import replace

    from .strategies import NotApplicable, parse_strategy

    results, refused = [], []
    for s in schedules:
        try:
            results.append(simulate_point(replace(spec, schedule=s), keep_timeline))
        except NotApplicable as e:
            name = parse_strategy(s, spec.implementation, spec.documents, cached_tokens=spec.cached_tokens).spec
            refused.append(not_applicable_row(spec, name, str(e)))
    results.sort(key=lambda r: (r["makespan_s"], r["schedule"]))
    if results:
        base = next((r for r in results if r["schedule"] == "contiguous"), results[-1])
        best = results[0]["makespan_s"]
        for r in results:
            r["speedup_vs_contiguous" if base["schedule"] == "contiguous" else "speedup_vs_slowest"] = \
                base["makespan_s"] / r["makespan_s"] if r["makespan_s"] > 0 else float("nan")
            r["slowdown_vs_best"] = r["makespan_s"] / best if best > 0 else float("nan")
    return results + refused
