"""The exact fast path: the ring protocol of DESIGN.md §3.2 as a recurrence over ring steps.

When no two hops of a ring cross the same directed link, no flow ever shares a link with another
(each hop's transfers are sequential: rank r's transfer of step s+1 is posted only after its
transfer of step s has completed, and ranks start the backward ring only after their forward
ring). Every transfer then takes exactly ``route latency + bytes / route bottleneck`` and the
whole protocol is a max-plus recurrence in the step index, evaluated for all ranks at once:

    E[r, s]  = T[r, s] + compute[r, s]                               (compute end)
    P[r, s]  = T[r, s]   (overlap on)   or   E[r, s]   (overlap off)  (batched send+recv post)
    X[r, s]  = P[r, s]                                                (transfer r → r+1 start)
               ⊕ P[r+1, s]     if rendezvous      (the receiver has posted)
               ⊕ E[r+1, s]     if not double_buffer (the receiver's only buffer is free)
    Y[r, s]  = (X[r, s] + latency[r]) + bytes / bottleneck[r]         (transfer end)
    T[r, s+1] = E[r, s] ⊕ Y[r, s] ⊕ Y[r−1, s]                        (next step start)

with ⊕ = max. The backward ring starts at each rank's forward end, carries twice the bytes at
steps s < G−1 and a final dK/dV message (1× bytes) after the compute of its last step.

The discrete-event engine (:mod:`ringsim.engine`) implements the same protocol independently with
simpy events and :class:`ringsim.network.FlowNetwork`; on rings without shared links the two
agree to 1e-9 relative (tests check it on many random cases).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Knobs, RingArrays, RingProblem

__all__ = ["run_fast"]


def run_fast(problem: "RingProblem", knobs: "Knobs") -> "RingArrays":
    """Evaluate the recurrence for every phase of ``problem``; returns the per-step arrays."""
    from .engine import RingArrays  # local import: engine imports this module

    G = problem.world_size
    lat = np.asarray(problem.hop_latency_s, dtype=np.float64)
    bw = np.asarray(problem.hop_bottleneck_Bps, dtype=np.float64)
    out = RingArrays.empty(G, len(problem.phases))
    t0 = np.zeros(G)
    for pi, phase in enumerate(problem.phases):
        cT = np.ascontiguousarray(problem.compute_s[pi].T)  # [step, rank]
        T, E = out.step_start_s[pi], out.compute_end_s[pi]
        XS, XE = out.xfer_start_s[pi], out.xfer_end_s[pi]
        T[:, 0] = t0
        t = t0
        for s in range(G):
            e = t + cT[s]
            E[:, s] = e
            nbytes = problem.message_bytes(pi, s)
            if nbytes is None:  # no transfer at this step
                t = e
            else:
                post = e if problem.posts_after_compute(pi, s, knobs) else t
                start = post
                if knobs.rendezvous:
                    start = np.maximum(start, np.roll(post, -1))
                if not knobs.double_buffer:
                    start = np.maximum(start, np.roll(e, -1))
                end = (start + lat) + nbytes / bw
                XS[:, s] = start
                XE[:, s] = end
                t = np.maximum(np.maximum(e, end), np.roll(end, 1))
            T[:, s + 1] = t
        t0 = t
    # per-link bytes and streaming time: each hop's links carry only that hop's transfers
    hop_bytes = 0.0
    hop_busy = np.zeros(G)
    for pi in range(len(problem.phases)):
        sizes = [problem.message_bytes(pi, s) for s in range(G)]
        hop_bytes += sum(b for b in sizes if b is not None)
        streams = np.array([b is not None and b > 0 for b in sizes])
        if streams.any():  # time each hop streamed: end − (start + latency), summed over its transfers
            hop_busy += (out.xfer_end_s[pi][:, streams] - (out.xfer_start_s[pi][:, streams] + lat[:, None])).sum(axis=1)
    link_bytes: dict[int, float] = {}
    link_busy: dict[int, float] = {}
    if G > 1:
        for r in range(G):
            for lid in problem.hop_routes[r]:
                link_bytes[lid] = link_bytes.get(lid, 0.0) + hop_bytes
                link_busy[lid] = link_busy.get(lid, 0.0) + float(hop_busy[r])
    out.link_bytes, out.link_busy_s = link_bytes, link_busy
    return out
