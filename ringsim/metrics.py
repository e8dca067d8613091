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


def _merged(rank: np.ndarray, start: np.ndarray, end: np.ndarray, G: int, span: float):
    """Per-rank union of intervals, vectorised: returns (rank, start, end) of disjoint intervals.

    Times are shifted by ``rank × span`` (span > any time) so one global running maximum of the
    end times never carries over from one rank to the next.
    """
    if len(start) == 0:
        return rank[:0], start[:0], end[:0]
    off = rank * span
    s_, e_ = start + off, end + off
    order = np.argsort(s_, kind="stable")  # the rank offset makes one key enough
    s_, e_, r_ = s_[order], e_[order], rank[order]
    reach = np.maximum.accumulate(e_)
    new = np.ones(len(s_), dtype=bool)
    new[1:] = s_[1:] > reach[:-1]
    idx = np.flatnonzero(new)
    m_start = s_[idx]
    m_end = np.maximum.reduceat(e_, idx)
    m_rank = r_[idx]
    return m_rank, m_start - m_rank * span, m_end - m_rank * span


def _per_rank_intersection(a, b, G: int, span: float) -> np.ndarray:
    """Per rank, the length of time inside both interval sets (each already merged/disjoint)."""
    ra, sa, ea = a
    rb, sb, eb = b
    times = np.concatenate([sa + ra * span, ea + ra * span, sb + rb * span, eb + rb * span])
    da = np.concatenate([np.ones(len(sa)), -np.ones(len(ea)), np.zeros(len(sb) + len(eb))])
    db = np.concatenate([np.zeros(len(sa) + len(ea)), np.ones(len(sb)), -np.ones(len(eb))])
    if len(times) == 0:
        return np.zeros(G)
    order = np.argsort(times, kind="stable")
    t, da, db = times[order], np.cumsum(da[order]), np.cumsum(db[order])
    both = (da[:-1] > 0) & (db[:-1] > 0)
    seg = np.diff(t)
    rank_of = np.floor(t[:-1] / span).astype(np.int64)
    return np.bincount(rank_of[both], weights=seg[both], minlength=G)[:G]


def ring_metrics(tl: Timeline, world_size: int) -> dict:
    df = tl.df
    G = world_size
    makespan = tl.makespan_s()
    kcat = df["kind"].astype("category").cat
    kcode = kcat.codes.to_numpy()
    code = {k: i for i, k in enumerate(kcat.categories)}
    is_kind = lambda k: kcode == code.get(k, -2)
    rank = df["rank"].to_numpy().astype(np.int64)
    start = df["start_s"].to_numpy()
    end = df["end_s"].to_numpy()
    dur = end - start
    span = (max(float(end.max()), 0.0) + 1.0) * 2.0 if len(end) else 1.0
    is_c, is_w, is_s = is_kind("compute"), is_kind("wait"), is_kind("send")
    is_x = is_s | is_kind("recv")
    compute = np.bincount(rank[is_c], weights=dur[is_c], minlength=G)[:G]
    wait = np.bincount(rank[is_w], weights=dur[is_w], minlength=G)[:G]
    sent = np.bincount(rank[is_s], weights=df["bytes"].to_numpy()[is_s], minlength=G)[:G]
    c_end = np.zeros(G)
    np.maximum.at(c_end, rank[is_c], end[is_c])
    c_iv = _merged(rank[is_c], start[is_c], end[is_c], G, span)
    x_iv = _merged(rank[is_x], start[is_x], end[is_x], G, span)
    transfer = np.bincount(x_iv[0], weights=x_iv[2] - x_iv[1], minlength=G)[:G]
    hidden = _per_rank_intersection(c_iv, x_iv, G, span)
    per_rank = [{
        "rank": r,
        "compute_s": float(compute[r]),
        "transfer_s": float(transfer[r]),
        "wait_s": float(wait[r]),
        "idle_s": max(makespan - float(compute[r]), 0.0),
        "busy_fraction": float(compute[r]) / makespan if makespan > 0 else 0.0,
        "bytes_sent": float(sent[r]),
        "end_s": float(c_end[r]),
    } for r in range(G)]
    mean = compute.mean() if G else 0.0
    ideal = float(compute.sum() / G) if G else 0.0
    total_transfer = float(transfer.sum())
    return {
        "layer_makespan_s": makespan,
        "ideal_bound_s": ideal,
        "efficiency": ideal / makespan if makespan > 0 else 1.0,
        "imbalance": float(compute.max() / mean) if mean > 0 else 1.0,
        "overlap": float(hidden.sum()) / total_transfer if total_transfer > 0 else 1.0,
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
    ph_idx = {"fwd": 0, "bwd": 1}

    def table(d):
        """(2, G, G) arrays of start/end indexed [phase, rank, step]; NaN where absent."""
        st = np.full((2, G, G), np.nan)
        en = np.full((2, G, G), np.nan)
        p = d["phase"].map(ph_idx).to_numpy()
        ok = ~np.isnan(p.astype(float)) & (d["step"].to_numpy() >= 0)
        p = p[ok].astype(np.int64)
        r_, s_ = d["rank"].to_numpy()[ok], d["step"].to_numpy()[ok]
        st[p, r_, s_] = d["start_s"].to_numpy()[ok]
        en[p, r_, s_] = d["end_s"].to_numpy()[ok]
        return st, en

    c_st, c_en = table(comp)
    x_st, x_en = table(df[df["kind"] == "send"])
    c = _Lookup(c_st, c_en, ph_idx)
    sends = _Lookup(x_st, x_en, ph_idx)
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


class _Lookup:
    """``(rank, phase, step) in table`` and ``table[(rank, phase, step)] → (start, end)`` over arrays."""

    def __init__(self, st, en, ph_idx):
        self.st, self.en, self.ph = st, en, ph_idx

    def __contains__(self, key):
        r, p, s = key
        return 0 <= s < self.st.shape[2] and not np.isnan(self.st[self.ph[p], r, s])

    def __getitem__(self, key):
        r, p, s = key
        return float(self.st[self.ph[p], r, s]), float(self.en[self.ph[p], r, s])

    def get(self, key, default):
        return self[key] if key in self else default
