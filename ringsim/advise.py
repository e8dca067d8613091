"""`ringsim advise`: rank every context-parallel strategy and degree that fits, and say why the
winner wins.

For a workload (model, sequence length), a topology, a phase and a memory limit per GPU, the
candidates (:func:`candidates`) are:

- the ring with each layout (``zigzag``, ``striped``, ``contiguous``);
- the all-gather of K/V (``allgather``; ``allgather:tree`` when G is a power of two);
- Ulysses over every rank (``ulysses``: listed even when the heads refuse it, so the answer says why);
- USP ``usp:UxR`` for every U dividing both G and the query heads (1 < U < G) whose Ulysses groups
  align with the node (U divides the node size or the node size divides U), and the reverse
  placement ``usp:UxR:ring-inner`` where the ring's R aligns with the node instead;
- the double ring ``double-ring:IxO`` for every inner degree I that aligns with the node;
- with a cached prefix (``--cached-tokens``, forward only) only ``pass-kv`` and ``pass-q``: the
  others know no cache and would recompute every token's queries — another problem.

The node size is the topology's innermost dimension (hierarchical files), else the number of
leading ranks that reach rank 0 at its best bandwidth. Every candidate is simulated exactly as
`ringsim compare` does (the fast path where it is exact, the DES otherwise); a candidate whose
memory exceeds the limit, or that cannot run the configuration, is listed with the reason.

**Ranking**: by makespan, then exposed communication, then memory per GPU. **Why** (one line per
other candidate, :func:`why_not`): the factor that costs it the most against the winner — exposed
communication (time its ranks wait for messages: an un-overlapped collective, a slow link), work
imbalance (its busiest rank computes more than the mean), more compute on its busiest rank (the SMs
NCCL's send/recv kernels hold beside it, or, split as the cost model priced it, its kernel calls or
its memory work between them: merges, accumulations, copies), or, at equal time, more memory.
"""
from __future__ import annotations

import time
from dataclasses import replace

from .simulate import SimSpec, compare_schedules
from .topology import Topology
from .units import format_bytes, format_seconds

__all__ = ["node_size", "candidates", "advise", "why_not"]

TIE = 0.005  # makespans within 0.5 % are a tie: memory and exposed communication decide


def node_size(topology: Topology, world_size: int) -> int:
    """GPUs per node: the innermost dimension of a hierarchical topology, else the leading ranks
    that reach rank 0 at its best bandwidth (every rank: one node)."""
    dims = topology.meta.get("dimensions") or []
    if len(dims) > 1:
        return max(1, min(int(dims[0]["size"]), world_size))
    if len(dims) == 1:
        return world_size
    bw = [topology.route_bottleneck_Bps(topology.route(0, r)) for r in range(1, world_size)]
    if not bw:
        return 1
    best, k = max(bw), 1
    for b in bw:
        if b < best:
            break
        k += 1
    return k


def _aligned(d: int, node: int) -> bool:
    return node % d == 0 or d % node == 0


def candidates(workload, topology: Topology, world_size: int, phase: str, cached_tokens: int | None = None) -> list[str]:
    """The strategy specs :func:`advise` ranks (see the module docstring)."""
    G, H = world_size, workload.model.heads
    if cached_tokens:
        if phase != "fwd":
            from .units import InputError

            raise InputError("--cached-tokens is for prefill (--phase fwd): pass-kv and pass-q have no backward")
        return [f"pass-kv:{cached_tokens}", f"pass-q:{cached_tokens}"]
    node = node_size(topology, G)
    specs = ["zigzag", "striped", "contiguous", "allgather"]
    if G & (G - 1) == 0 and G > 1:
        specs.append("allgather:tree")
    specs.append("ulysses")
    divisors = [d for d in range(2, G) if G % d == 0]
    for U in divisors:
        R = G // U
        if H % U:
            continue
        if _aligned(U, node):
            specs.append(f"usp:{U}x{R}")
        if _aligned(R, node):
            specs.append(f"usp:{U}x{R}:ring-inner")
    for I in divisors:
        if _aligned(I, node):
            specs.append(f"double-ring:{I}x{G // I}")
    return specs


def _pct(x: float, of: float) -> str:
    return f"{100 * x / of:.1f} %" if of > 0 else "-"


def why_not(best: dict, other: dict) -> str:
    """One line: why ``best`` beats ``other`` (see the module docstring)."""
    name, b = other["schedule"], best["schedule"]
    ratio = other["makespan_s"] / best["makespan_s"] if best["makespan_s"] > 0 else 1.0
    if ratio - 1 <= TIE:
        mem = other["peak_memory_bytes"] - best["peak_memory_bytes"]
        if mem > 0:
            return (f"{name}: ties within {100 * TIE:g} % ({format_seconds(other['makespan_s'])}) but needs "
                    f"{format_bytes(mem)} more per GPU ({format_bytes(other['peak_memory_bytes'])})")
        return (f"{name}: ties within {100 * TIE:g} % ({format_seconds(other['makespan_s'])}); {b} exposes "
                f"{format_seconds(best['exposed_comm_s'])} of communication against "
                f"{format_seconds(other['exposed_comm_s'])}")
    gap = other["makespan_s"] - best["makespan_s"]
    extra_exposed = other["exposed_comm_s"] - best["exposed_comm_s"]
    extra_compute = other["max_compute_s"] - best["max_compute_s"]
    imb = other.get("work_imbalance", 1.0)
    if imb > best.get("work_imbalance", 1.0) + 0.02 and extra_compute >= 0.5 * gap:
        return (f"{name}: {ratio:.2f}× slower — work imbalance: its busiest rank computes {imb:.2f}× the mean "
                f"({format_seconds(other['max_compute_s'])} against {format_seconds(best['max_compute_s'])})")
    if extra_exposed >= 0.5 * gap:
        return (f"{name}: {ratio:.2f}× slower — exposed communication: its ranks wait "
                f"{format_seconds(other['exposed_comm_s'])} for messages (max; mean "
                f"{format_seconds(other['exposed_comm_mean_s'])}) against {format_seconds(best['exposed_comm_s'])}")
    nccl = other.get("nccl_compute_slowdown_s", 0.0) - best.get("nccl_compute_slowdown_s", 0.0)
    if nccl > 0 and nccl >= 0.5 * max(extra_compute, 0.0) and extra_compute > 0:
        return (f"{name}: {ratio:.2f}× slower — more compute on its busiest rank "
                f"({format_seconds(other['max_compute_s'])} against {format_seconds(best['max_compute_s'])}): "
                f"up to {format_seconds(other['nccl_compute_slowdown_s'])} of a rank's compute lost to the SMs "
                "its NCCL send/recv kernels hold while transfers are in flight")
    head = (f"{name}: {ratio:.2f}× slower — more compute on its busiest rank "
            f"({format_seconds(other['max_compute_s'])} against {format_seconds(best['max_compute_s'])})")
    split = ("busiest_kernel_s", "busiest_memory_s")
    if all(best.get(k) is not None and other.get(k) is not None for k in split):
        d_kernel = other["busiest_kernel_s"] - best["busiest_kernel_s"]
        d_memory = other["busiest_memory_s"] - best["busiest_memory_s"]
        if d_memory > d_kernel and d_memory > 0:
            return (f"{head}: mostly memory work between kernels (merges, accumulations, copies): "
                    f"{format_seconds(other['busiest_memory_s'])} against {format_seconds(best['busiest_memory_s'])}, "
                    f"kernel calls {format_seconds(other['busiest_kernel_s'])} against "
                    f"{format_seconds(best['busiest_kernel_s'])}")
        if d_kernel > 0:
            return (f"{head}: mostly kernel calls (their shapes run less efficiently, or cover more partly "
                    f"masked tiles): {format_seconds(other['busiest_kernel_s'])} against "
                    f"{format_seconds(best['busiest_kernel_s'])}, memory work "
                    f"{format_seconds(other['busiest_memory_s'])} against {format_seconds(best['busiest_memory_s'])}")
    return f"{head}: its calls cover more partly masked tiles, or it does more memory work"


def _best_reason(best: dict, ranked: list[dict]) -> str:
    ms = best["makespan_s"]
    line = (f"{best['schedule']} is fastest at {format_seconds(ms)}: exposed communication "
            f"{format_seconds(best['exposed_comm_s'])} ({_pct(best['exposed_comm_s'], ms)} of it), work imbalance "
            f"{best['work_imbalance']:.2f}, {format_bytes(best['peak_memory_bytes'])} per GPU")
    if len(ranked) > 1:
        nxt = ranked[1]
        line += f"; next {nxt['schedule']} at {format_seconds(nxt['makespan_s'])} ({why_not(best, nxt).split(': ', 1)[1]})"
    return line


_KEEP = ("schedule", "strategy", "makespan_s", "layer_makespan_s", "exposed_comm_s", "exposed_comm_mean_s",
         "imbalance", "work_imbalance", "efficiency", "max_compute_s", "peak_memory_bytes", "sent_bytes_per_rank",
         "nccl_compute_slowdown_s", "busiest_kernel_s", "busiest_memory_s", "engine")


def advise(spec: SimSpec, strategies: list[str] | None = None) -> dict:
    """Rank the candidates for ``spec`` (workload, topology, world size, phase, memory limit): the
    JSON-ready answer with ``ranked``, ``not_applicable``, ``best`` (and its ``reason``) and the
    time it took."""
    t0 = time.perf_counter()
    G = spec.resolved_world_size()
    specs = strategies or candidates(spec.workload, spec.topology, G, spec.phase, spec.cached_tokens)
    rows = compare_schedules(replace(spec, world_size=G), specs)
    ok = [r for r in rows if r.get("applicable", True)]
    ranked = sorted(ok, key=lambda r: (r["makespan_s"], r["exposed_comm_s"], r["peak_memory_bytes"], r["schedule"]))
    out_ranked = []
    for i, r in enumerate(ranked):
        e = {k: r.get(k) for k in _KEEP}
        e["rank"] = i + 1
        e["slowdown_vs_best"] = r["makespan_s"] / ranked[0]["makespan_s"] if ranked[0]["makespan_s"] > 0 else 1.0
        if i:
            e["why_not"] = why_not(ranked[0], r)
        out_ranked.append(e)
    refused = [{"strategy": r["schedule"], "reason": r["reason"]} for r in rows if not r.get("applicable", True)]
    best = None
    if ranked:
        best = dict(out_ranked[0], reason=_best_reason(ranked[0], ranked))
    return {
        "query": {"model": spec.workload.model.name, "seq_len": spec.workload.seq_len, "topology": spec.topology.name,
                  "world_size": G, "node_size": node_size(spec.topology, G), "phase": spec.phase,
                  "mask": spec.resolved_mask(), "memory_limit_bytes": spec.memory_limit_bytes,
                  "cached_tokens": spec.cached_tokens, "cost_model": spec.cost_model.name},
        "candidates": len(specs),
        "ranked": out_ranked,
        "not_applicable": refused,
        "best": best,
        "elapsed_s": time.perf_counter() - t0,
    }
