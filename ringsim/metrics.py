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
- **critical path** (:func:`critical_path`, from the program and the engine's arrays): walking
  back from the rank that finished last, each step boundary was held by the rank's own compute or
  by a message it waited for (hop src→dst); the path's time is attributed to those.
- **hide block** (:func:`hide_block_tokens`): per ring hop, the smallest tokens-per-rank c whose
  forward block hides that hop's transfer, with the block's time from the cost model in use.
"""
from __future__ import annotations

import math

import numpy as np

from .costs import CostModel
from .program import Program
from .schedules import Plan
from .timeline import Timeline
from .topology import Topology
from .workload import Workload

__all__ = ["ring_metrics", "program_metrics", "hide_block_tokens", "ring_memory_bytes", "critical_path"]


def _merged(rank: np.ndarray, start: np.ndarray, end: np.ndarray, G: int, span: float):
    """Per-rank union of intervals, vectorised: returns (rank, start, end) of disjoint intervals,
    sorted by rank, then time.

    Times are shifted by ``rank × span`` (span > any time) to sort and merge, so one global running
    maximum of the end times never carries over from one rank to the next; the returned times are
    the given ones, not shifted and back (which would round them by the rank's offset).
    """
    if len(start) == 0:
        return rank[:0], start[:0], end[:0]
    off = rank * span
    order = np.argsort(start + off, kind="stable")  # the rank offset makes one key enough
    r_, s0, e0 = rank[order], start[order], end[order]
    s_, e_ = s0 + off[order], e0 + off[order]
    reach = np.maximum.accumulate(e_)
    new = np.ones(len(s_), dtype=bool)
    new[1:] = s_[1:] > reach[:-1]
    idx = np.flatnonzero(new)
    return r_[idx], s0[idx], np.maximum.reduceat(e0, idx)


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
    return _summary(makespan, compute, transfer, wait, sent, c_end, hidden)


def program_metrics(program: Program, arrays, world_size: int | None = None, closed_form: bool = True) -> dict:
    """:func:`ring_metrics` computed from a simulated program's arrays, without building the
    Timeline's rows (same definitions: compute = the compute intervals of steps with compute
    ops, transfer = the union of the rank's messages in flight, wait = idle between a compute's
    end and its step's end). Rings take a closed form per (rank, step) (:func:`_transfer_by_step`;
    ``closed_form=False`` forces the general sweep, which sorts every interval)."""
    flat = program.flat
    G, N = flat.world_size, flat.N
    T, E = arrays.step_start_s, arrays.compute_end_s
    makespan = float(T[N].max()) if G else 0.0
    hc = flat.has_compute
    comp_iv = (E - T[:N])[hc]
    compute = comp_iv.sum(axis=0) if len(comp_iv) else np.zeros(G)
    wait = np.maximum(T[1:] - E, 0.0).sum(axis=0)
    M = flat.M
    sent = np.bincount(flat.src, weights=flat.bytes, minlength=G)[:G] if M else np.zeros(G)
    c_end = E[hc].max(axis=0) if hc.any() else np.zeros(G)
    by_step = _transfer_by_step(flat, T, E, arrays.msg_start_s, arrays.msg_end_s) if M and closed_form else None
    if by_step is not None:
        transfer, hidden = by_step
        return _summary(makespan, compute, transfer, wait, sent, c_end, hidden)
    span = (max(makespan, 0.0) + 1.0) * 2.0
    ranks = np.arange(G)
    cn = np.nonzero(hc)[0]
    c_rank = np.tile(ranks, len(cn))
    c_iv = _merged(c_rank, T[cn].reshape(-1), E[cn].reshape(-1), G, span)
    x_rank = np.concatenate([flat.src, flat.dst])
    x_iv = _merged(x_rank, np.concatenate([arrays.msg_start_s] * 2), np.concatenate([arrays.msg_end_s] * 2), G, span)
    transfer = np.bincount(x_iv[0], weights=x_iv[2] - x_iv[1], minlength=G)[:G]
    hidden = _per_rank_intersection(c_iv, x_iv, G, span)
    return _summary(makespan, compute, transfer, wait, sent, c_end, hidden)


def _transfer_by_step(flat, T, E, XS, XE):
    """Per rank: time with a message in flight (``transfer``) and the part of it during compute
    (``hidden``), without sorting, for programs whose messages are all waited for in the step that
    posts them and where a rank has at most two messages per step (a ring's send and receive).
    Then a message of rank r's step n lies inside ``[T[n, r], T[n+1, r]]`` — after the rank posted
    it, before it moved on — so per (rank, step) the union of its messages A ∪ B and its overlap
    with the step's compute C = [T[n, r], E[n, r]] are closed forms:

        |A ∪ B| = |A| + |B| − |A ∩ B|,   |(A ∪ B) ∩ C| = |A ∩ C| + |B ∩ C| − |A ∩ B ∩ C|.

    Returns None where that does not hold — checked, not assumed: an eager send (no rendezvous) can
    start before its receiver reached the step — and the general sweep in :func:`program_metrics` runs."""
    if not flat.wait_after_zero:
        return None
    G, N = flat.world_size, flat.N
    key = np.concatenate([flat.post_step * G + flat.src, flat.post_step * G + flat.dst])
    count = np.bincount(key, minlength=N * G)
    if count.max() > 2:
        return None
    a, b = np.concatenate([XS, XS]), np.concatenate([XE, XE])
    Tn, En = T[:N].reshape(-1)[key], E.reshape(-1)[key]
    if np.any(a < Tn) or np.any(b > T[1:].reshape(-1)[key]):
        return None  # a message in flight outside its step (an eager send before the receiver got there)
    sum_len = np.bincount(key, weights=b - a, minlength=N * G)
    sum_hid = np.bincount(key, weights=np.maximum(np.minimum(b, En) - np.maximum(a, Tn), 0.0), minlength=N * G)
    max_a = np.full(N * G, -np.inf)
    min_b = np.full(N * G, np.inf)
    np.maximum.at(max_a, key, a)
    np.minimum.at(min_b, key, b)
    two = count == 2
    both = np.where(two, np.maximum(min_b - max_a, 0.0), 0.0)
    Tk, Ek = T[:N].reshape(-1), E.reshape(-1)
    both_c = np.where(two, np.maximum(np.minimum(min_b, Ek) - np.maximum(max_a, Tk), 0.0), 0.0)
    transfer = (sum_len - both).reshape(N, G).sum(axis=0)
    hidden = (sum_hid - both_c).reshape(N, G).sum(axis=0)
    return transfer, hidden


def _summary(makespan, compute, transfer, wait, sent, c_end, hidden) -> dict:
    G = len(compute)
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


def hide_block_tokens(workload: Workload, topology: Topology, world_size: int, cost_model: CostModel,
                      density: float = 1.0) -> list[dict]:
    """Per hop r → r+1 of the ring: the smallest tokens per rank c whose mean forward block
    (c × c, ``density``·c² allowed pairs: 1 for full attention, about 1/2 for a causal ring) takes
    at least as long, by ``cost_model``, as the hop's transfer of c tokens' K/V
    (``latency + c·shard_bytes_per_token / bottleneck``). Hops with the same latency and
    bottleneck share one search (an exponential search, then bisection on integers)."""
    b_tok = workload.shard_bytes(1)
    kind = 1 if density >= 1.0 else 2  # full, else causal (KIND_CODES)

    def compute_s(c):
        c = np.asarray(c, dtype=np.float64)
        return cost_model.call_seconds(workload, topology, c, c, np.round(density * c * c), np.full(c.shape, kind),
                                       "fwd")

    def hides(c, lat, bw):
        xfer = lat + (c * b_tok / bw if bw != float("inf") else 0.0)
        return float(compute_s(np.array([c]))[0]) >= xfer

    cache: dict[tuple[float, float], int] = {}

    def smallest(lat, bw):
        key = (lat, bw)
        if key not in cache:
            hi = 1
            while not hides(hi, lat, bw):
                hi *= 2
                if hi > 1 << 40:
                    break
            lo = hi // 2
            while hi - lo > 1:  # hides(hi), not hides(lo)
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if hides(mid, lat, bw) else (mid, hi)
            cache[key] = hi
        return cache[key]

    out = []
    for hop in topology.ring_hops(world_size):
        B, alpha = hop["bottleneck_Bps"], hop["latency_s"]
        out.append({"src": hop["src"], "dst": hop["dst"], "link_classes": hop["link_classes"],
                    "bottleneck_Bps": B, "latency_s": alpha, "hide_block_tokens": int(smallest(alpha, B))})
    return out


def ring_memory_bytes(plan: Plan, workload: Workload, phase: str, double_buffer: bool = True) -> dict:
    """Peak memory per rank: the whole model's K/V of its own tokens plus one layer's ring working set.

    Working set of one attention layer's ring: Q, O (dtype) and the fp32 output accumulator and
    log-sum-exp of the rank's queries; its own K/V shard plus one ring buffer (two with double
    buffering: the shard being computed on and the one arriving). Backward adds dQ (fp32) and the
    travelling dK/dV accumulators (fp32, as many as K/V buffers). ``kv_shard_per_gpu_bytes`` is
    :func:`ringsim.memory.kv_memory`'s, the same figure ``ringsim memory`` prints.
    """
    from .memory import kv_memory

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
        ring += dq + buffers * workload.grad_shard_bytes(n)
    kv = kv_memory(workload, plan.world_size, plan.tokens_per_rank)["kv_shard_per_gpu_bytes"]
    return {"ring_working_set_bytes": int(ring), "kv_shard_per_gpu_bytes": int(kv),
            "peak_memory_bytes": int(ring + kv)}


def critical_path(program: Program, arrays, compute_s: np.ndarray) -> dict:
    """Walk back from the rank that finished last and attribute the path's time to what held it.

    A rank's step n+1 started when the latest of these was done: its compute of step n and every
    message it waited for at step n. The walk follows the latest: compute is charged to the rank
    (``compute_s``) and the walk moves to that step's start; a message's duration is charged to
    its hop, and the walk continues at the end that posted it later (at that step's start, or —
    for a post at the compute's end — through that rank's compute first). Returns the share of
    the makespan held by each rank's compute and each hop, and the top holder.
    """
    flat = program.flat
    G, N = flat.world_size, flat.N
    T, E = arrays.step_start_s, arrays.compute_end_s
    XS, XE = arrays.msg_start_s, arrays.msg_end_s
    if N == 0 or G == 0:
        return {"holder": None, "compute_s": {}, "hops_s": {}}
    # messages each rank waits for at each step: ids[ptr[n·G + r]:ptr[n·G + r + 1]]
    from .engines.des import csr

    ids = np.arange(flat.M, dtype=np.int64)
    ptr, wait_ids = csr(np.concatenate([flat.wait_step * G + flat.src, flat.wait_step * G + flat.dst]),
                        np.concatenate([ids, ids]), N * G)
    compute: dict[int, float] = {}
    hops: dict[str, float] = {}

    def charge(r, n):
        compute[r] = compute.get(r, 0.0) + float(E[n, r] - T[n, r])

    r = int(np.argmax(T[N]))
    n = N  # at the start of step n (n = N: the end) of rank r
    for _ in range(4 * N * G + 10):
        if n == 0:
            break
        p = n - 1
        cand = [(float(E[p, r]), 1, "compute", None)]
        i = p * G + r
        for m in wait_ids[ptr[i]:ptr[i + 1]].tolist():
            cand.append((float(XE[m]), 0, "msg", m))
        end, _, what, m = max(cand, key=lambda x: (x[0], x[1]))
        if what == "compute":
            charge(r, p)
            n = p
            continue
        hop = f"{int(flat.src[m])}->{int(flat.dst[m])}"
        hops[hop] = hops.get(hop, 0.0) + float(XE[m] - XS[m])
        # the message started when the later of the posts it needed arrived: continue from that
        # end (a receive posted after the start did not hold it: an eager send)
        q = int(flat.post_step[m])
        ends = []
        for who, late in ((int(flat.src[m]), bool(flat.send_end[m])), (int(flat.dst[m]), bool(flat.recv_end[m]))):
            t_post = float(E[q, who] if late else T[q, who])
            if t_post <= XS[m] or not ends:
                ends.append((t_post, late, who))
        t_post, late, who = max(ends)
        r = who
        if late:
            charge(r, q)
        n = q
    holders = [(f"rank {k} compute", v) for k, v in compute.items()] + [(f"hop {k}", v) for k, v in hops.items()]
    top = max(holders, key=lambda x: x[1])[0] if holders else None
    return {"holder": top, "compute_s": {str(k): v for k, v in sorted(compute.items())},
            "hops_s": dict(sorted(hops.items()))}
