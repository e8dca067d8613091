"""The exact fast path: a program without link contention as a max-plus recurrence over steps.

When no two messages ever stream on the same directed link at the same time, every message takes
exactly ``route latency + bytes / route bottleneck`` and the whole program is a recurrence in the
global step index n, evaluated for all ranks at once:

    E[n, r]  = T[n, r] + compute[n, r]                                (compute end)
    P_s[m]   = T[n, src] (send posted at the step start) or E[n, src] (at the compute end)
    P_r[m]   = T[n, dst] or E[n, dst]                                  (the receive's post)
    X[m]     = P_s[m] ⊕ P_r[m]    (⊕ P_r only when the receive counts: rendezvous, or a late receive)
    Y[m]     = X[m] + (latency[m] + bytes[m] / bottleneck[m])          (message end)
    T[n+1, r] = E[n, r] ⊕ max{Y[m] : m posted at n with r as src or dst}

with ⊕ = max. It needs every message waited for in the step that posts it.

**When it is exact** (:func:`inexact_reason` returns None): messages waited in their own step, and
for every directed link crossed by two different hops (src → dst pairs): the hops share their
sender — a rank's messages of different steps never overlap, since it waits for each before its
next step — or, under rendezvous, their receiver; and no two messages of one step cross it. A
ring whose hops use disjoint links (a DGX ring, one NVSwitch) qualifies; a ring whose hops share a
node's uplink does not and goes to the DES. The DES (:mod:`ringsim.engines.des`) implements the
same program independently; where this path is exact the two agree to 1e-9 (tests).

The loop over steps runs in C where the DES's compiled core was built (``_cdes.recurrence``, the
same arithmetic; ``RINGSIM_PURE_PYTHON=1`` forces the numpy loop; tests hold the two to 1e-12).
"""
from __future__ import annotations

import numpy as np

from ..program import FlatProgram
from ..topology import Topology
from .des import EngineArrays

__all__ = ["run_fast", "inexact_reason", "hop_routes"]


def hop_routes(flat: FlatProgram, topology: Topology) -> list[tuple[int, ...]]:
    return [tuple(topology.route(int(a), int(b))) for a, b in zip(flat.hop_src, flat.hop_dst)]


def inexact_reason(flat: FlatProgram, topology: Topology, knobs, routes=None) -> str | None:
    """Why the recurrence would not be exact for this program on this topology (None: it is)."""
    if not flat.wait_after_zero:
        return "a message is waited for at a later step than the one that posts it"
    if flat.duplicate_hops:
        return "two messages between the same ranks in one step"
    routes = routes if routes is not None else hop_routes(flat, topology)
    users: dict[int, list[int]] = {}
    for h, rt in enumerate(routes):
        for lid in set(rt):
            users.setdefault(lid, []).append(h)
    shared = {lid: hs for lid, hs in users.items() if len(hs) > 1}
    if not shared:
        return None
    hs_src, hs_dst = flat.hop_src, flat.hop_dst
    for lid, hs in shared.items():
        same_src = len({int(hs_src[h]) for h in hs}) == 1
        same_dst = len({int(hs_dst[h]) for h in hs}) == 1 and knobs.rendezvous
        if not (same_src or same_dst):
            a, b = hs[0], hs[1]
            return (f"hops {hs_src[a]}->{hs_dst[a]} and {hs_src[b]}->{hs_dst[b]} share link {lid} "
                    f"({topology.links[lid].src}->{topology.links[lid].dst})")
    # no two messages of one step on a shared link
    shared_ids = np.array(sorted(shared), dtype=np.int64)
    per_hop = [np.array([l for l in set(rt) if l in shared], dtype=np.int64) for rt in routes]
    n_sh = np.array([len(x) for x in per_hop], dtype=np.int64)
    cnt = n_sh[flat.hop]
    if cnt.sum():
        links = np.concatenate([per_hop[h] for h in flat.hop[cnt > 0].tolist()])
        steps = np.repeat(flat.post_step[cnt > 0], cnt[cnt > 0])
        key = links * (flat.N + 1) + steps
        u, c = np.unique(key, return_counts=True)
        if (c > 1).any():
            lid = int(u[c > 1][0] // (flat.N + 1))
            return f"two messages of one step cross link {lid} at once"
    del shared_ids
    return None


def run_fast(flat: FlatProgram, compute_s: np.ndarray, topology: Topology, knobs, routes=None) -> EngineArrays:
    """Evaluate the recurrence (see the module docstring); the caller checks :func:`inexact_reason`."""
    G, N, M = flat.world_size, flat.N, flat.M
    comp = np.asarray(compute_s, dtype=np.float64).reshape(N, G)
    routes = routes if routes is not None else hop_routes(flat, topology)
    lat_h = np.array([topology.route_latency_s(rt) for rt in routes], dtype=np.float64)
    bw_h = np.array([topology.route_bottleneck_Bps(rt) for rt in routes], dtype=np.float64)
    m_lat = lat_h[flat.hop] if M else np.zeros(0)
    m_x = flat.bytes / bw_h[flat.hop] if M else np.zeros(0)
    counts_recv = np.full(M, bool(knobs.rendezvous)) | flat.recv_end
    T = np.empty((N + 1, G))
    E = np.empty((N, G))
    XS = np.full(M, np.nan)
    XE = np.full(M, np.nan)
    ptr = flat.step_msgs
    src, dst, send_end, recv_end = flat.src, flat.dst, flat.send_end, flat.recv_end
    m_fixed = m_lat + m_x
    from .des import compiled_core

    core = compiled_core()
    if core is not None and hasattr(core, "recurrence"):  # the same loop in C (_cdes.c)
        i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)
        u8 = lambda a: np.ascontiguousarray(a, dtype=np.uint8)
        core.recurrence(G, N, M, np.ascontiguousarray(comp), i64(ptr), i64(src), i64(dst), u8(send_end),
                        u8(recv_end), u8(counts_recv), np.ascontiguousarray(m_fixed, dtype=np.float64), T, E, XS, XE)
        return _arrays(flat, routes, m_lat, T, E, XS, XE)
    # per step, once: does any message post at the compute's end, count its receive post, and are
    # its senders (receivers) distinct ranks (then a plain scatter replaces the slower maximum.at)
    def any_per_step(flags):
        out = np.zeros(N, dtype=bool)
        if M:
            nz = ptr[1:] > ptr[:-1]
            out[nz] = np.logical_or.reduceat(flags, ptr[:-1][nz])
        return out
    any_se, any_cr, any_re = any_per_step(send_end), any_per_step(counts_recv), any_per_step(recv_end)
    distinct = flat.step_distinct_ends
    t = np.zeros(G)
    for n in range(N):
        T[n] = t
        e = t + comp[n]
        E[n] = e
        a, b = int(ptr[n]), int(ptr[n + 1])
        if a == b:
            t = e
            continue
        s_, d_ = src[a:b], dst[a:b]
        ps = np.where(send_end[a:b], e[s_], t[s_]) if any_se[n] else t[s_]
        if any_cr[n]:
            pr = np.where(recv_end[a:b], e[d_], t[d_]) if any_re[n] else t[d_]
            cr = counts_recv[a:b]
            start = np.maximum(ps, pr) if cr.all() else np.where(cr, np.maximum(ps, pr), ps)
        else:
            start = ps
        end = start + m_fixed[a:b]
        XS[a:b] = start
        XE[a:b] = end
        t = e.copy()
        if distinct[n]:
            t[s_] = np.maximum(t[s_], end)
            t[d_] = np.maximum(t[d_], end)
        else:
            np.maximum.at(t, s_, end)
            np.maximum.at(t, d_, end)
    T[N] = t
    return _arrays(flat, routes, m_lat, T, E, XS, XE)


def _arrays(flat: FlatProgram, routes, m_lat, T, E, XS, XE) -> EngineArrays:
    M = flat.M
    # per link: bytes and streaming time (each hop's links carry only that hop's messages, one at a time)
    link_bytes: dict[int, float] = {}
    link_busy: dict[int, float] = {}
    if M:
        H = len(routes)
        hb = np.bincount(flat.hop, weights=flat.bytes, minlength=H)
        stream = (XE - (XS + m_lat))
        hs = np.bincount(flat.hop, weights=np.where(flat.bytes > 0, stream, 0.0), minlength=H)
        for h, rt in enumerate(routes):
            for lid in rt:
                link_bytes[lid] = link_bytes.get(lid, 0.0) + float(hb[h])
                link_busy[lid] = link_busy.get(lid, 0.0) + float(hs[h])
    return EngineArrays(T, E, XS, XE, link_bytes, link_busy)
