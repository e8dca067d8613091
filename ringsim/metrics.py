"""Metrics of one simulated (or measured) ring, computed from its Timeline.

Definitions (per attention layer unless a name says ``all_layers``):

- **makespan**: end of the last compute interval (DESIGN §3.2). The whole model's attention time
  is that × the number of attention layers (layers run one after another).
- per rank: **compute** (sum of compute intervals), **transfer** (time with a send or receive of
  this rank in flight), **wait** (wait intervals: idle inside a step for a transfer),
  **idle** = makespan − compute.
- **imbalance**: max / mean of per-rank compute time.
- **overlap**: share of transfer time hidden behind compute — for each rank, the time its
  transfers are in flight while it computes, over the time its transfers are in flight.
- **efficiency**: ideal bound / makespan, where the ideal bound is the total compute time spread
  evenly over the ranks with no communication (``sum(compute) / G``).
- **critical path**: walking back from the last compute end, each step of the path is held by
  the rank's own compute or by a transfer (hop src→dst); the path's time is attributed to those.
- **hide block**: per ring hop, the smallest tokens-per-rank c whose forward block hides that
  hop's transfer: ρ·c²·f/(F·e) ≥ α + c·b/B (ρ the mean share of a block's pairs the mask allows —
  1 for full, ~1/2 for causal —, f FLOPs per pair, F·e achieved FLOP/s, b shard bytes per token,
  α route latency, B route bottleneck): the quadratic's positive root.
"""
from __future__ import annotations

import math

import numpy as np

from .schedules import Plan
from .timeline import Timeline
from .topology import Topology
from .workload import Workload

__all__ = ["ring_metrics", "hide_block_tokens", "ring_memory_bytes", "critical_path"]


def _union_length(starts: np.ndarray, ends: np.ndarray) -> float:
    if len(starts) == 0:
        return 0.0
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    total, cur_s, cur_e = 0.0, s[0], e[0]
    for a, b in zip(s[1:], e[1:]):
        if a > cur_e:
            total += cur_e - cur_s
            cur_s, cur_e = a, b
        else:
            cur_e = max(cur_e, b)
    return total + cur_e - cur_s


def _merge(starts, ends):
    if len(starts) == 0:
        return []
    order = np.argsort(starts, kind="stable")
    out = []
    for a, b in zip(np.asarray(starts)[order], np.asarray(ends)[order]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _intersection_length(xs: list, ys: list) -> float:
    """Length of the intersection of two sorted lists of disjoint intervals."""
    i = j = 0
    total = 0.0
    while i < len(xs) and j < len(ys):
        lo = max(xs[i][0], ys[j][0])
        hi = min(xs[i][1], ys[j][1])
        if hi > lo:
            total += hi - lo
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return total


def ring_metrics(tl: Timeline, world_size: int) -> dict:
    df = tl.df
    G = world_size
    makespan = tl.makespan_s()
    comp = df[df["kind"] == "compute"]
    xfer = df[df["kind"].isin(["send", "recv"])]
    waits = df[df["kind"] == "wait"]
    per_rank = []
    total_transfer = total_hidden = 0.0
    for r in range(G):
        c = comp[comp["rank"] == r]
        x = xfer[xfer["rank"] == r]
        w = waits[waits["rank"] == r]
        c_iv = _merge(c["start_s"].to_numpy(), c["end_s"].to_numpy())
        x_iv = _merge(x["start_s"].to_numpy(), x["end_s"].to_numpy())
        compute_s = float((c["end_s"] - c["start_s"]).sum())
        transfer_s = sum(b - a for a, b in x_iv)
        hidden = _intersection_length(c_iv, x_iv)
        total_transfer += transfer_s
        total_hidden += hidden
        per_rank.append({
            "rank": r,
            "compute_s": compute_s,
            "transfer_s": float(transfer_s),
            "wait_s": float((w["end_s"] - w["start_s"]).sum()),
            "idle_s": max(makespan - compute_s, 0.0),
            "busy_fraction": compute_s / makespan if makespan > 0 else 0.0,
            "bytes_sent": float(df[(df["kind"] == "send") & (df["rank"] == r)]["bytes"].sum()),
            "end_s": float(c["end_s"].max()) if len(c) else 0.0,
        })
    compute = np.array([p["compute_s"] for p in per_rank])
    mean = compute.mean() if G else 0.0
    ideal = float(compute.sum() / G) if G else 0.0
    return {
        "layer_makespan_s": makespan,
        "ideal_bound_s": ideal,
        "efficiency": ideal / makespan if makespan > 0 else 1.0,
        "imbalance": float(compute.max() / mean) if mean > 0 else 1.0,
        "overlap": total_hidden / total_transfer if total_transfer > 0 else 1.0,
        "per_rank": per_rank,
    }


def hide_block_tokens(workload: Workload, topology: Topology, world_size: int, density: float = 1.0) -> list[dict]:
    """Per hop of the ring: the minimal tokens per rank whose forward block hides the transfer.

    ``density`` is the share of a block's pairs the mask allows on average (1 for full attention,
    about 1/2 for a causal ring's blocks), so the block computes density·c² pairs.
    """
    dev = topology.device
    a = density * workload.flops_per_pair() / (dev.peak_flops * dev.efficiency)  # seconds per c²
    b_tok = workload.shard_bytes(1)  # bytes per token of the shard
    out = []
    for hop in topology.ring_hops(world_size):
        B, alpha = hop["bottleneck_Bps"], hop["latency_s"]
        b = b_tok / B if B != float("inf") else 0.0
        c = (b + math.sqrt(b * b + 4 * a * alpha)) / (2 * a)
        out.append({"src": hop["src"], "dst": hop["dst"], "link_classes": hop["link_classes"],
                    "bottleneck_Bps": B, "latency_s": alpha, "hide_block_tokens": int(math.ceil(c))})
    return out


def ring_memory_bytes(plan: Plan, workload: Workload, phase: str, double_buffer: bool = True) -> dict:
    """Peak memory per rank: the whole model's KV cache of its tokens plus one layer's ring working set.

    Working set of one attention layer's ring: Q, O (dtype) and the fp32 output accumulator and
    log-sum-exp of the rank's queries; its own K/V shard plus one ring buffer (two with double
    buffering: the shard being computed on and the one arriving). Backward adds dQ (fp32), the
    saved O/lse already counted, and the travelling K/V + dK/dV buffers (dK/dV in fp32).
    """
    m, n, B = workload.model, plan.tokens_per_rank, workload.batch
    bpv = workload.bytes_per_value
    q = B * n * m.heads * m.head_dim * bpv
    o = B * n * m.heads * m.v_dim * bpv
    acc = B * n * m.heads * m.v_dim * 4 + B * n * m.heads * 4
    shard = workload.shard_bytes(n)
    buffers = 2 if double_buffer else 1
    ring = q + o + acc + shard * (1 + buffers)
    if phase == "fwd+bwd":
        dq = B * n * m.heads * m.head_dim * 4
        dkv = shard * 4 // bpv  # fp32 accumulators of the travelling shard
        ring += dq + buffers * dkv
    kv_cache = workload.shard_bytes(n) * workload.layers
    return {"ring_working_set_bytes": int(ring), "kv_cache_per_gpu_bytes": int(kv_cache),
            "peak_memory_bytes": int(ring + kv_cache)}


def critical_path(tl: Timeline, world_size: int) -> dict:
    """Walk back from the last compute end and attribute the path's time to what held each step.

    At each step boundary of rank r the next step waited for the latest of: r's compute, the
    receive into r (hop r−1→r) and the send out of r (hop r→r+1). The walk follows the latest; a
    transfer's duration is charged to its hop, and the walk continues at whichever end posted later.
    Returns the share of the makespan held by each rank's compute and each hop, and the top one.
    """
    df = tl.df
    comp = df[df["kind"] == "compute"]
    if not len(comp):
        return {"holder": None, "compute_s": {}, "hops_s": {}}
    G = world_size
    key = lambda d: {(int(r), str(p), int(s)): (a, b) for r, p, s, a, b in
                     zip(d["rank"], d["phase"], d["step"], d["start_s"], d["end_s"])}
    c = key(comp)
    sends = key(df[df["kind"] == "send"])
    last = comp.loc[comp["end_s"].idxmax()]
    r, ph, s = int(last["rank"]), str(last["phase"]), int(last["step"])
    compute_s: dict[int, float] = {}
    hops_s: dict[str, float] = {}

    def charge_compute(rank, phase, step):
        a, b = c[(rank, phase, step)]
        compute_s[rank] = compute_s.get(rank, 0.0) + (b - a)

    charge_compute(r, ph, s)
    for _ in range(4 * G * G + 10):  # bounded walk back through step boundaries
        # at the start of step s of rank r: what did it wait for?
        prev = s - 1 if s > 0 else (G - 1 if ph == "bwd" else None)
        pph = ph if s > 0 else "fwd"
        if prev is None or (r, pph, prev) not in c:
            break
        cand = [("compute", c[(r, pph, prev)][1], r)]
        left = (r - 1) % G
        if (left, pph, prev) in sends:
            cand.append(("hop", sends[(left, pph, prev)][1], left))
        if (r, pph, prev) in sends:
            cand.append(("hop", sends[(r, pph, prev)][1], r))
        kind, end, src = max(cand, key=lambda x: (x[1], x[0] == "compute"))
        if kind == "compute":
            charge_compute(r, pph, prev)
        else:
            a, b = sends[(src, pph, prev)]
            hop = f"{src}->{(src + 1) % G}"
            hops_s[hop] = hops_s.get(hop, 0.0) + (b - a)
            # the transfer started when the later of its two ends posted: continue from that end
            dst = (src + 1) % G
            r = max((src, dst), key=lambda x: c.get((x, pph, prev), (0.0, 0.0))[0])
        ph, s = pph, prev
    holders = [(f"rank {k} compute", v) for k, v in compute_s.items()] + [(f"hop {k}", v) for k, v in hops_s.items()]
    top = max(holders, key=lambda x: x[1])[0] if holders else None
    return {"holder": top, "compute_s": {str(k): v for k, v in sorted(compute_s.items())},
            "hops_s": dict(sorted(hops_s.items()))}
