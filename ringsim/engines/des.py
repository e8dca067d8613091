"""The optimised discrete-event engine: any program, with link contention.

Think of G people passing folders round a table (or across it): each reads the folder in hand
(compute) while handing folders to others and taking new ones (messages through the
:class:`~ringsim.engines.network.FlowNetwork`); they move on when they have read, handed over and
received what the step asks for.

Each rank is a state machine driven by callbacks on an :class:`~ringsim.engines.loop.EventLoop`
(what a simpy process per rank would do, without a generator per rank): it blocks on exactly one
thing at a time and that thing's callback resumes it. Per (global step n, rank r), flattened as
``i = n·G + r``, the program is read from flat arrays built once with numpy (CSR lists):

- the message sides the rank posts at the step's start (``sp``), at its compute's end (``ep``),
  and the messages it waits for at the step's end (``w``);
- the compute time ``comp[i]`` (from the cost model).

A message starts when its last required post arrives (its send, and under rendezvous — or when
the receiver posts late because its only buffer is busy — its receive) and completes through the
network's callback, which wakes each endpoint blocked on it. When nothing happens at the compute
end (no end posts) a step costs the rank one wake-up: at max(compute end, last awaited message).

A *hop* (src → dst) whose links no other hop crosses and whose messages never overlap in time (each
posted after the previous one was waited for) is *private*: its flows cost one event each.

**The compiled core.** :func:`run_des` (what ``engine="des"`` runs) uses ``_cdes``, the same state
machine and link model written in C (``_cdes.c``, built by ``pip install`` when a C compiler is
there), and falls back to :class:`ProgramDES` where it was not built or ``RINGSIM_PURE_PYTHON=1``.
The contended DES is event-bound: a flow start, a flow end and a rank wake-up per rank-step, a few
microseconds each in CPython and tens of nanoseconds in C — the difference between 0.5× and 8–12×
SimGrid's C++ speed on the contended ring (``benchmarks/bench_simgrid.py``). The trade-off: a second
implementation of the engine to keep in step (the tests hold both to the reference engine, and to
each other to 1e-12, on drawn programs) and a build step that needs a C compiler and Python's
headers for full speed (without them everything still works, at the Python DES's speed).
:class:`ProgramDES` remains the readable optimised engine and the one that records rate logs.
"""
from __future__ import annotations

import gc
import math
from array import array
from heapq import heappush

import numpy as np

from ..program import FlatProgram
from ..topology import Topology
from ..units import InputError
from .loop import EventLoop
from .network import FlowNetwork

__all__ = ["ProgramDES", "ProtocolStuck", "EngineArrays", "csr", "private_hops", "run_des", "compiled_core"]


class ProtocolStuck(InputError):
    """The program could not finish: some rank waits forever (its message names them)."""


class EngineArrays:
    """What an engine computed (seconds from the common origin): ``step_start_s[n, r]`` for
    n ≤ N (row N: the rank's end), ``compute_end_s[n, r]``, and per message ``msg_start_s[m]`` /
    ``msg_end_s[m]``; per directed link the bytes carried and the time with a streaming flow."""

    __slots__ = ("step_start_s", "compute_end_s", "msg_start_s", "msg_end_s", "link_bytes", "link_busy_s")

    def __init__(self, step_start_s, compute_end_s, msg_start_s, msg_end_s, link_bytes=None, link_busy_s=None):
        self.step_start_s = step_start_s
        self.compute_end_s = compute_end_s
        self.msg_start_s = msg_start_s
        self.msg_end_s = msg_end_s
        self.link_bytes = dict(sorted((link_bytes or {}).items()))
        self.link_busy_s = dict(sorted((link_busy_s or {}).items()))


def csr(keys: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Group ``values`` by integer ``keys`` in [0, n): ``(ptr, vals)`` with the values of key k at
    ``vals[ptr[k]:ptr[k + 1]]``, in their given order (a stable sort)."""
    order = np.argsort(keys, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=n), out=ptr[1:])
    return ptr, np.asarray(values)[order]


def private_hops(flat: FlatProgram, routes: list) -> np.ndarray:
    """Per hop: no other hop crosses any of its links, and its messages never overlap in time
    (each is posted at a step after the one that waited for the previous)."""
    H = len(routes)
    users: dict[int, int] = {}
    for rt in routes:
        for lid in set(rt):
            users[lid] = users.get(lid, 0) + 1
    private = np.array([all(users[lid] == 1 for lid in rt) for rt in routes], dtype=bool)
    if flat.M and H:
        order = np.lexsort((flat.post_step, flat.hop))
        h, post, wait = flat.hop[order], flat.post_step[order], flat.wait_step[order]
        same = h[1:] == h[:-1]
        overlap = same & (post[1:] <= wait[:-1])
        if overlap.any():
            private[np.unique(h[1:][overlap])] = False
    return private


def compiled_core():
    """The compiled DES (:mod:`ringsim.engines._cdes`, built from ``_cdes.c`` at install when a C
    compiler is there), or None: not built, or ``RINGSIM_PURE_PYTHON=1`` in the environment."""
    import os

    if os.environ.get("RINGSIM_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _cdes
    except ImportError:
        return None
    return _cdes


def _program_lists(flat: FlatProgram, knobs):
    """Per rank-step CSR lists of message ids (see :class:`ProgramDES`): posted at the step's start,
    posted at the compute's end, waited at the step's end; and each message's required posts."""
    G, N, M = flat.world_size, flat.N, flat.M
    counts_recv = np.full(M, bool(knobs.rendezvous)) | flat.recv_end
    need = (1 + counts_recv.astype(np.uint8))
    post, src, dst = flat.post_step, flat.src, flat.dst
    ids = np.arange(M, dtype=np.int64)
    send_start = ~flat.send_end
    recv_start = counts_recv & ~flat.recv_end
    recv_endp = counts_recv & flat.recv_end
    keys = np.concatenate([(post * G + src)[send_start], (post * G + dst)[recv_start]])
    vals = np.concatenate([ids[send_start], ids[recv_start]])
    sp_ptr, sp = csr(keys, vals, N * G)
    keys = np.concatenate([(post * G + src)[flat.send_end], (post * G + dst)[recv_endp]])
    vals = np.concatenate([ids[flat.send_end], ids[recv_endp]])
    ep_ptr, ep = csr(keys, vals, N * G)
    wait = flat.wait_step
    w_ptr, w = csr(np.concatenate([wait * G + src, wait * G + dst]), np.concatenate([ids, ids]), N * G)
    return need, sp_ptr, sp, ep_ptr, ep, w_ptr, w


def run_des(flat: FlatProgram, compute_s: np.ndarray, topology: Topology, knobs) -> EngineArrays:
    """Run the optimised DES: the compiled core where it was built (:func:`compiled_core`), else
    :class:`ProgramDES`. Both implement the same model and are held to the reference engine to
    1e-9 by the tests; a stuck program is reported by :class:`ProgramDES` (which names the ranks)."""
    core = compiled_core()
    if core is None:
        return ProgramDES(flat, compute_s, topology, knobs).run()
    G, N, M = flat.world_size, flat.N, flat.M
    i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)
    comp = f64(np.asarray(compute_s, dtype=np.float64).reshape(N, G))
    need, sp_ptr, sp, ep_ptr, ep, w_ptr, w = _program_lists(flat, knobs)
    routes = [tuple(topology.route(int(a), int(b))) for a, b in zip(flat.hop_src, flat.hop_dst)]
    H, L = len(routes), len(topology.links)
    hop_ptr = np.zeros(H + 1, dtype=np.int64)
    np.cumsum([len(rt) for rt in routes], out=hop_ptr[1:])
    hop_links = np.array([l for rt in routes for l in rt], dtype=np.int64)
    hop_lat = np.array([topology.route_latency_s(rt) for rt in routes], dtype=np.float64)
    hop_bw = np.array([topology.route_bottleneck_Bps(rt) for rt in routes], dtype=np.float64)
    capacity = np.array([l.bandwidth_Bps for l in topology.links], dtype=np.float64)
    T = np.zeros((N + 1, G))
    E = np.zeros((N, G))
    XS = np.full(M, np.nan)
    XE = np.full(M, np.nan)
    lb, lbusy, used = np.zeros(L), np.zeros(L), np.zeros(L, dtype=np.uint8)
    stuck = core.run(G, N, M, H, L, comp, i64(sp_ptr), i64(sp), i64(ep_ptr), i64(ep), i64(w_ptr), i64(w),
                     i64(flat.src), i64(flat.dst), i64(flat.wait_step), i64(flat.hop), f64(flat.bytes),
                     np.ascontiguousarray(need, dtype=np.uint8), hop_ptr, i64(hop_links), hop_lat, hop_bw, capacity,
                     T, E, XS, XE, lb, lbusy, used)
    if stuck:
        return ProgramDES(flat, compute_s, topology, knobs).run()  # raises ProtocolStuck, naming the ranks
    ids = np.flatnonzero(used).tolist()
    return EngineArrays(T, E, XS, XE, {l: float(lb[l]) for l in ids}, {l: float(lbusy[l]) for l in ids})


class ProgramDES:
    """Run a flat program on a topology with per-(step, rank) compute times (see the module
    docstring). ``knobs`` is :class:`ringsim.engines.Knobs`; ``record`` logs every link rate change
    (``network.rate_log``) and turns the private-hop shortcut off."""

    def __init__(self, flat: FlatProgram, compute_s: np.ndarray, topology: Topology, knobs, record: bool = False):
        self.flat = flat
        self.knobs = knobs
        self.loop = EventLoop()
        self.network = FlowNetwork(self.loop, topology, record=record)
        G, N, M = flat.world_size, flat.N, flat.M
        self._G, self._N = G, N
        comp = np.ascontiguousarray(np.asarray(compute_s, dtype=np.float64).reshape(N, G))
        self._comp = array("d", comp.tobytes())
        self._T = array("d", bytes(8 * (N + 1) * G))
        self._E = array("d", bytes(8 * N * G))
        nan = array("d", [math.nan])
        self._xs = nan * M
        self._xe = nan * M
        # CSR lists per rank-step: start posts, end posts, waits
        need, sp_ptr, sp, ep_ptr, ep, w_ptr, w = _program_lists(flat, knobs)
        self._need = bytearray(need.tobytes())
        self._done = bytearray(M)
        src, dst, wait = flat.src, flat.dst, flat.wait_step
        as_q = lambda a: array("q", np.ascontiguousarray(a, dtype=np.int64).tobytes())
        self._sp_ptr, self._sp, self._ep_ptr, self._ep = as_q(sp_ptr), as_q(sp), as_q(ep_ptr), as_q(ep)
        self._w_ptr, self._w = as_q(w_ptr), as_q(w)
        self._src, self._dst, self._wait = as_q(src), as_q(dst), as_q(wait)
        self._bytes = array("d", np.ascontiguousarray(flat.bytes, dtype=np.float64).tobytes())
        routes = [tuple(topology.route(int(a), int(b))) for a, b in zip(flat.hop_src, flat.hop_dst)]
        private = private_hops(flat, routes)
        hop_args = [(rt, self.network.route_info(rt), bool(p)) for rt, p in zip(routes, private)]
        self._msg_args = [hop_args[h] for h in flat.hop.tolist()]
        # per rank: the step it is blocked in waiting for messages (−1: none), how many it still
        # waits for, and its compute end if that has not passed yet
        self._blocked = [-1] * G
        self._missing = [0] * G
        self._deadline = [0.0] * G

    # ---- messages ----------------------------------------------------------------------------
    def _post(self, m: int) -> None:
        need = self._need
        need[m] -= 1
        if need[m] == 0:
            self._xs[m] = self.loop.now
            route, info, private = self._msg_args[m]
            self.network.start_flow(route, self._bytes[m], self._on_done, m, info, private)

    def _on_done(self, m: int, now: float) -> None:
        """Message m's last byte arrived: wake its endpoints if they are blocked waiting for it
        (the last message a blocked rank waits for wakes it at max(now, its compute end))."""
        self._xe[m] = now
        self._done[m] = 1
        w = self._wait[m]
        blocked, missing = self._blocked, self._missing
        for rank in (self._src[m], self._dst[m]):
            if blocked[rank] == w:
                missing[rank] -= 1
                if missing[rank] == 0:
                    blocked[rank] = -1
                    end = self._deadline[rank]
                    loop = self.loop
                    heappush(loop.queue, (now if now >= end else end, next(loop.seq), self._run, rank))

    # ---- ranks ------------------------------------------------------------------------------
    def _machine(self):
        """The rank state machine as a closure over the engine's arrays (see the module docstring).
        Resume points per rank (``where[r]``): 0 start of the program, 1 end of the current step,
        2 compute end of the current step (only for steps with end posts)."""
        loop = self.loop
        queue, seq = loop.queue, loop.seq
        G, N = self._G, self._N
        comp, T, E = self._comp, self._T, self._E
        sp_ptr, sp, ep_ptr, ep, w_ptr, w = self._sp_ptr, self._sp, self._ep_ptr, self._ep, self._w_ptr, self._w
        done, post = self._done, self._post
        blocked, missing, deadline = self._blocked, self._missing, self._deadline
        where = [0] * G
        at_step = [0] * G
        finished = bytearray(G)

        def run(r):
            n, resume_at = at_step[r], where[r]
            while True:
                if resume_at == 1:  # the end of step n: on to the next
                    n += 1
                    T[n * G + r] = loop.now
                    if n == N:
                        finished[r] = 1
                        return
                i = n * G + r
                if resume_at != 2:  # the start of step n
                    at_step[r] = n
                    now = loop.now
                    for j in range(sp_ptr[i], sp_ptr[i + 1]):
                        post(sp[j])
                    c = comp[i]
                    if ep_ptr[i] == ep_ptr[i + 1]:  # nothing at the compute end: one wake-up at most
                        E[i] = end = now + c
                        k = 0
                        for j in range(w_ptr[i], w_ptr[i + 1]):
                            if not done[w[j]]:
                                k += 1
                        if k:
                            blocked[r], missing[r], deadline[r] = n, k, end
                            where[r] = 1
                            return
                        if c > 0:
                            where[r] = 1
                            heappush(queue, (end, next(seq), run, r))
                            return
                        resume_at = 1
                        continue
                    if c > 0:
                        where[r] = 2
                        heappush(queue, (now + c, next(seq), run, r))
                        return
                # the compute of step n has ended: late posts, then the wait
                E[i] = loop.now
                resume_at = 1
                for j in range(ep_ptr[i], ep_ptr[i + 1]):
                    post(ep[j])
                k = 0
                for j in range(w_ptr[i], w_ptr[i + 1]):
                    if not done[w[j]]:
                        k += 1
                if k:
                    blocked[r], missing[r], deadline[r] = n, k, -math.inf
                    where[r] = 1
                    return

        return run, finished

    def _stuck_message(self, stuck: list[int]) -> str:
        flat = self.flat
        parts = []
        for r in stuck[:8]:
            n = self._blocked[r]
            if n < 0:
                parts.append(f"rank {r}")
                continue
            i = n * self._G + r
            waiting = [m for m in self._w[self._w_ptr[i]:self._w_ptr[i + 1]] if not self._done[m]]
            what = ", ".join(f"its {'send to' if flat.src[m] == r else 'receive from'} rank "
                             f"{flat.dst[m] if flat.src[m] == r else flat.src[m]}" for m in waiting[:2])
            parts.append(f"rank {r} at {flat.step_phase[n]} step {int(flat.step_label[n])} (waiting for {what})")
        more = f" and {len(stuck) - 8} more" if len(stuck) > 8 else ""
        return (f"program stuck at t={self.loop.now:.9g} s: " + "; ".join(parts) + more
                + "; a partner never posted the matching send/receive")

    def run(self) -> EngineArrays:
        G, N = self._G, self._N
        self._run, finished = self._machine()
        # The run allocates millions of short-lived objects and creates no garbage cycles while
        # it runs, so the cyclic collector would only re-scan long-lived state: paused for the run.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for r in range(G):
                self._run(r)
            self.loop.run()
        finally:
            if gc_was_enabled:
                gc.enable()
        stuck = [r for r in range(G) if not finished[r]]
        if stuck:
            raise ProtocolStuck(self._stuck_message(stuck))
        return EngineArrays(
            np.frombuffer(self._T, dtype=np.float64).reshape(N + 1, G),
            np.frombuffer(self._E, dtype=np.float64).reshape(N, G),
            np.frombuffer(self._xs, dtype=np.float64),
            np.frombuffer(self._xe, dtype=np.float64),
            self.network.link_bytes, self.network.link_busy_s)
