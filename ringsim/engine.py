"""The ring simulator: one attention layer's ring, as a simpy DES or as the exact fast path.

The protocol (DESIGN.md §3.2), for each rank r and ring step s of a phase:

1. At the start of step s (s < G−1) rank r posts, in one batched call, a send of the K/V shard it
   holds to r+1 and a receive from r−1.
2. The transfer r → r+1 of step s starts when both ends have posted (``rendezvous``) and runs over
   the links of its route as a flow of :class:`ringsim.network.FlowNetwork` (latency, then the
   bytes at a max-min fair share of every link it crosses).
3. Compute of step s starts at the step start and lasts ``cost_model.compute_s(...)[r, s]``.
4. Step s+1 starts when the compute of step s, the receive into r and the send out of r are done.

Knobs (:class:`Knobs`) switch off one mechanism each:

- ``overlap=False``: the transfers of step s are posted only after the compute of step s ends.
- ``rendezvous=False``: a transfer starts when the *sender* posts (an eager protocol: the data
  waits in the receiver's memory until it needs it).
- ``double_buffer=False``: the receive into r of step s cannot start before r's compute of step s
  has finished (its single buffer holds the shard being computed on).

Backward (``phase="fwd+bwd"``): when a rank finishes its forward ring it starts a backward ring of
G steps with the same rules; at steps s < G−1 the message is K/V plus the accumulated dK/dV
(2 × shard bytes); after the compute of its last step each rank sends the shard's final dK/dV
(1 × shard bytes) to r+1, which owns that shard. Backward compute comes from the cost model with
phase ``"bwd"``. Modelling choice: the accumulated dK/dV travels in the same message as the K/V,
posted at step start, like the forward K/V.

The engines: ``"des"`` (:class:`RingDES`, simpy, handles links shared by several hops) and
``"fast"`` (:func:`ringsim.fastpath.run_fast`, a vectorised recurrence exact when no two hops share
a directed link). ``"auto"`` picks the fast path whenever it is exact. Both fill the same
:class:`RingArrays`, turned into a :class:`~ringsim.timeline.Timeline` by one function, so their
rows are identical in columns and order.
"""
from __future__ import annotations

import gc
from array import array
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import simpy
from heapq import heappop, heappush

from .costs import BWD_FLOPS_FACTOR, BlockBatch, CostModel, RooflineCost
from .network import FlowNetwork, schedule_at
from .schedules import Plan
from .timeline import COLUMNS, Timeline
from .topology import Topology
from .units import InputError
from .workload import Workload

__all__ = ["Knobs", "SimResult", "simulate_ring", "ProtocolStuck", "RingDES", "RingProblem", "RingArrays",
           "LazyTimeline", "build_problem", "build_timeline", "PHASES", "ENGINES"]

PHASES = ("fwd", "fwd+bwd")
ENGINES = ("auto", "des", "fast")


@dataclass(frozen=True)
class Knobs:
    overlap: bool = True        # compute of step s overlaps the transfers of step s
    rendezvous: bool = True     # a transfer starts only when both ends have posted
    double_buffer: bool = True  # receive the next shard into a second buffer while computing


@dataclass
class SimResult:
    """What one simulated ring did. ``timeline`` is a :class:`LazyTimeline`: its rows are built on
    first use, so callers that need only ``layer_makespan_s`` never pay for millions of rows."""

    timeline: Timeline          # ONE attention layer's ring: rows kind compute/send/recv/wait
    engine: str                 # "des" or "fast"
    layer_makespan_s: float     # end of the last compute interval of the ring (fwd+bwd if both)
    link_bytes: dict[int, float]   # directed link id -> bytes carried
    link_busy_s: dict[int, float]  # directed link id -> time with at least one streaming flow


class ProtocolStuck(InputError):
    """The ring protocol could not finish: some rank waits forever (its message names them)."""


# ---- the problem both engines solve ----------------------------------------------------------------
@dataclass
class RingProblem:
    """Everything an engine needs, precomputed: per-phase compute times, message sizes, hop routes."""

    world_size: int
    phases: tuple[str, ...]            # ("fwd",) or ("fwd", "bwd")
    compute_s: list[np.ndarray]        # per phase, [rank, step] seconds
    pairs: np.ndarray                  # [rank, step]
    flops: list[np.ndarray]            # per phase, [rank, step]
    shard_bytes: float
    hop_routes: list[tuple[int, ...]]  # hop r → r+1
    hop_latency_s: list[float]
    hop_bottleneck_Bps: list[float]
    topology: Topology

    def message_bytes(self, phase_index: int, step: int) -> float | None:
        """Bytes rank r sends to r+1 at this step (None: no transfer at this step)."""
        G = self.world_size
        if G == 1:
            return None
        if self.phases[phase_index] == "fwd":
            return self.shard_bytes if step < G - 1 else None
        return 2.0 * self.shard_bytes if step < G - 1 else self.shard_bytes

    def posts_after_compute(self, phase_index: int, step: int, knobs: Knobs) -> bool:
        """Whether the step's transfers are posted at compute end rather than at step start."""
        last_bwd = self.phases[phase_index] == "bwd" and step == self.world_size - 1
        return (not knobs.overlap) or last_bwd


@dataclass
class RingArrays:
    """What an engine computed, per phase, as [rank, step] arrays (seconds from the origin).

    ``step_start_s[p][r, s]`` for s ≤ G (column G is the end of the last step), compute end, and
    the start and end of the transfer rank r → r+1 of step s (NaN where there is none).
    """

    step_start_s: list[np.ndarray]
    compute_end_s: list[np.ndarray]
    xfer_start_s: list[np.ndarray]
    xfer_end_s: list[np.ndarray]
    link_bytes: dict[int, float] = field(default_factory=dict)
    link_busy_s: dict[int, float] = field(default_factory=dict)

    @classmethod
    def empty(cls, G: int, n_phases: int) -> "RingArrays":
        # stored step-major (the fast path fills one step, all ranks, at a time); exposed [rank, step]
        nan = lambda rows: [np.full((rows, G), np.nan).T for _ in range(n_phases)]
        return cls(nan(G + 1), nan(G), nan(G), nan(G))


def _check_compute(arr, G: int, name: str, phase: str) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape != (G, G):
        raise InputError(f"cost model {name} returned shape {arr.shape} for phase {phase}, expected ({G}, {G}); "
                         "fix the cost model's compute_s")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise InputError(f"cost model {name} returned negative or non-finite times for phase {phase}; "
                         "check the calibration or device figures")
    return np.broadcast_to(arr, (G, G)).copy()


def build_problem(plan: Plan, workload: Workload, topology: Topology, cost_model: CostModel,
                  phase: str) -> RingProblem:
    G = plan.world_size
    topology.check_world_size(G)
    if plan.seq_len != workload.seq_len:
        raise InputError(f"plan sequence length {plan.seq_len} differs from the workload's {workload.seq_len}; "
                         "build both from the same --seq-len")
    phases = ("fwd",) if phase == "fwd" else ("fwd", "bwd")
    compute, flops = [], []
    fpp = float(workload.flops_per_pair())
    bwd_factor = float(getattr(cost_model, "bwd_flops_factor", BWD_FLOPS_FACTOR))
    pairs = np.asarray(plan.pairs)
    for p in phases:
        batch = BlockBatch.build(plan, workload, topology, p)
        compute.append(_check_compute(cost_model.compute_s(batch), G, getattr(cost_model, "name", "?"), p))
        flops.append(pairs.astype(np.float64) * fpp * (bwd_factor if p == "bwd" else 1.0))
    routes = [tuple(topology.route(r, (r + 1) % G)) for r in range(G)]
    return RingProblem(
        world_size=G, phases=phases, compute_s=compute, pairs=pairs, flops=flops,
        shard_bytes=float(workload.shard_bytes(plan.tokens_per_rank)), hop_routes=routes,
        hop_latency_s=[topology.route_latency_s(rt) for rt in routes],
        hop_bottleneck_Bps=[topology.route_bottleneck_Bps(rt) for rt in routes],
        topology=topology,
    )


class _RankEvent(simpy.Event):
    """The one event a blocked rank waits on (its gate, or its compute timeout), one per rank and
    reused: a rank waits on one thing at a time, and re-arms its event (sets its callbacks, which
    resume the rank) only from that callback, after the event was taken off the queue. It always
    succeeds with no value."""

    __slots__ = ("rank",)

    def __init__(self, env: simpy.Environment, rank: int):  # noqa: D107
        self.env = env
        self.callbacks = None
        self._ok, self._value = True, None
        self.rank = rank


def _dispatch(env: simpy.Environment) -> None:
    """Process ``env``'s events until none is left: :meth:`simpy.Environment.run` without a stop
    condition, as one loop (the ring's events always succeed and never stop the run, so neither
    check of ``step`` is needed per event; a failed event still raises)."""
    queue = env._queue
    while queue:
        env._now, _, _, event = heappop(queue)
        callbacks, event.callbacks = event.callbacks, None
        for callback in callbacks:
            callback(event)
        if not event._ok:
            raise event._value


# ---- the discrete-event engine ------------------------------------------------------------------------
class RingDES:
    """The ring protocol as a simpy discrete-event simulation: each rank a state machine driven by
    its events on simpy's event queue.

    Think of G people passing folders round a table: each reads the folder in hand (compute) while
    handing it to the right and taking the next one from the left (a transfer through the
    :class:`FlowNetwork`); they move on when they have read it, handed it over and received the next.

    Each hand-over (hop src → src+1 at one step of one phase) is a *channel*, numbered
    ``k = (phase_index·G + step)·G + src``, with a count of the conditions still missing before the
    transfer may start (the sender's post, the receiver's post under rendezvous, the receiver's free
    buffer without double buffering) and a done flag, in flat preallocated arrays (the work per
    event does not grow with the ring).

    Events: each rank blocks on one event at a time (see :meth:`_rank_machine`; it behaves as a
    simpy process per rank would, without a generator per rank). When nothing happens at its
    compute end (overlap and double buffering on, not the last backward step) a step costs the
    rank ONE event: its *gate*, which fires at max(compute end, send done, receive done); the
    transfer completions trigger it, at the compute end if they came first (or a plain compute
    timeout when both transfers were already done). Otherwise the rank waits for its compute timeout, does what the knobs ask at the
    compute end, and then waits for the gate of its two transfers. Transfers are flows of the
    :class:`FlowNetwork` reporting completion through a callback; a hop whose links no other hop
    crosses is a *private* flow (one event). Every time is the same floating-point expression as in
    the straightforward one-event-per-action model, so results are bit for bit the same.
    """

    def __init__(self, problem: RingProblem, knobs: Knobs = Knobs(), record: bool = False):
        self.problem = problem
        self.knobs = knobs
        self.env = simpy.Environment()
        self.network = FlowNetwork(self.env, problem.topology, record=record)
        G, P = problem.world_size, len(problem.phases)
        self._G = G
        n = P * G * G
        need = 1 + (1 if knobs.rendezvous else 0) + (0 if knobs.double_buffer else 1)
        self._need = bytearray([need]) * n       # conditions missing, per channel
        self._done = bytearray(n)                # 1 once the channel's transfer completed
        # times as raw doubles (array.array: cheap item stores, no float objects kept alive, which
        # keeps the working set small on large rings); numpy views of them at the end
        nan_row = array("d", [np.nan])
        self._xs = nan_row * n     # transfer start, per channel
        self._xe = nan_row * n     # transfer end, per channel
        # per phase, step-major [step·G + rank]: step starts (G + 1 steps), compute ends, compute
        # times (raw doubles too: 8 bytes per block instead of a float object and a list slot,
        # 24 MB less at 1024 ranks; an item read is a Python float, so simpy time stays a float)
        self._T = [array("d", bytes(8 * (G + 1) * G)) for _ in range(P)]
        self._E = [array("d", bytes(8 * G * G)) for _ in range(P)]
        self._comp = [array("d", np.ascontiguousarray(c.T).ravel().tobytes()) for c in problem.compute_s]
        self._gate: list[simpy.Event | None] = [None] * G  # the event a blocked rank waits on (one per rank)
        self._gate_step = [-1] * G   # (phase_index·G + step)·G of the step a rank is blocked in, else -1
        self._missing = [0] * G      # transfers a blocked rank still waits for (1 or 2)
        self._deadline = [0.0] * G   # the blocked rank's compute end, if it has not passed yet
        self._bytes = [[problem.message_bytes(pi, s) for s in range(G)] for pi in range(P)]
        self._has_xfer = [[b is not None for b in row] for row in self._bytes]
        self._late_post = [[problem.posts_after_compute(pi, s, knobs) for s in range(G)] for pi in range(P)]
        self._routes = [tuple(rt) for rt in problem.hop_routes]
        self._route_info = [self.network.route_info(rt) for rt in self._routes]
        # a hop is private when no other hop crosses any of its links: its flows never share a link
        # (a hop's transfers are sequential: the next is posted only after the previous completed)
        users: dict[int, int] = {}
        for rt in self._routes:
            for lid in set(rt):
                users[lid] = users.get(lid, 0) + 1
        self._private = [all(users[lid] == 1 for lid in rt) for rt in self._routes]
        # per hop src → src+1: the arguments of its flows (route, route info, private), and the
        # bound methods and flags the per-transfer path uses
        self._hop = list(zip(self._routes, self._route_info, self._private))
        self._start_flow = self.network.start_flow
        self._transfer_done = self._on_transfer_done
        self._rendezvous = knobs.rendezvous

    # ---- channels ---------------------------------------------------------------------------
    def _satisfy(self, k: int) -> None:
        """One more condition of channel ``k`` holds; the last one starts its transfer now."""
        need = self._need
        need[k] -= 1
        if need[k] == 0:
            G = self._G
            step_key = k // G
            self._start(k, step_key // G, step_key % G, k % G)

    def _start(self, k: int, phase_index: int, step: int, src: int) -> None:
        self._xs[k] = self.env._now
        route, info, private = self._hop[src]
        self._start_flow(route, self._bytes[phase_index][step], self._transfer_done, k, info, private)

    def _on_transfer_done(self, k: int, now: float) -> None:
        """Channel ``k``'s last byte arrived: wake its sender and its receiver if they wait for it
        (the last transfer a blocked rank waits for triggers its gate)."""
        self._xe[k] = now
        self._done[k] = 1
        G = self._G
        src = k % G
        base = k - src
        gate_step, missing = self._gate_step, self._missing
        for rank in (src, src + 1 if src + 1 < G else 0):
            if gate_step[rank] == base:
                missing[rank] -= 1
                if missing[rank] == 0:
                    gate_step[rank] = -1
                    ev = self._gate[rank]
                    end = self._deadline[rank]
                    if now >= end:  # what ev.succeed() does: due now, behind the events already due
                        env = self.env
                        heappush(env._queue, (now, 1, next(env._eid), ev))
                    else:  # transfers done before the compute: the gate fires at the compute end
                        schedule_at(self.env, ev, end)

    def post(self, rank: int, phase_index: int, step: int) -> None:
        """The batched post of rank's send to rank+1 and receive from rank−1 for this step.

        (Once per rank-step on the hot path: :meth:`_satisfy` and :meth:`_start` are written out
        here for the send and the receive rather than called.)"""
        G = self._G
        need = self._need
        k = (phase_index * G + step) * G + rank  # the send
        need[k] -= 1
        if need[k] == 0:
            self._xs[k] = self.env._now
            route, info, private = self._hop[rank]
            self._start_flow(route, self._bytes[phase_index][step], self._transfer_done, k, info, private)
        if self._rendezvous:  # the receive
            src = rank - 1 if rank else G - 1
            k += src - rank
            need[k] -= 1
            if need[k] == 0:
                self._xs[k] = self.env._now
                route, info, private = self._hop[src]
                self._start_flow(route, self._bytes[phase_index][step], self._transfer_done, k, info, private)

    def buffer_free(self, rank: int, phase_index: int, step: int) -> None:
        """Rank's compute of this step ended: its single receive buffer may be overwritten."""
        if not self.knobs.double_buffer:
            G = self._G
            self._satisfy((phase_index * G + step) * G + (rank - 1) % G)

    # ---- ranks ------------------------------------------------------------------------------
    def _rank_machine(self):
        """The ranks as callback-driven state machines (what a simpy process per rank would do,
        without a generator per rank: a rank blocks on exactly one event at a time, and that event's
        callback resumes it where it stopped).

        A rank's program, per phase and step s (``i = s·G + r`` indexes the step-major arrays):

        - *fast case* (a transfer at this step, posted at step start, double buffering): post the
          send/receive, note the compute end ``now + c``, and block until max(compute end, send
          done, receive done) — the gate (or a plain timeout of c when both transfers are done);
        - *otherwise*: post if due at step start, block for the compute timeout (if c > 0), then
          at the compute end free the buffer / post late as the knobs ask and block on the gate
          of the step's two transfers if either is still in flight.

        Resume points per rank (``where[r]``): 1 = the step's end was reached, 2 = the compute of
        the step ended (the second case). Every time is the same floating-point expression a
        process per rank computes (``now + c`` for a timeout of c), and every event is scheduled
        in the same order, so results are bit for bit those of the process-per-rank model.
        Returns ``(start, finished)``: ``start(r)`` runs rank r from time 0 until it first blocks.
        """
        env, prob = self.env, self.problem
        G, P = self._G, len(prob.phases)
        queue = env._queue
        eid = env._eid
        post, buffer_free = self.post, self.buffer_free
        single_buffer = not self.knobs.double_buffer
        done, gate, gate_step, missing, deadline = (self._done, self._gate, self._gate_step, self._missing,
                                                    self._deadline)
        comps, Ts, Es = self._comp, self._T, self._E
        has_xfers, late_posts = self._has_xfer, self._late_post
        # a plain step (transfer posted at step start, double buffering) needs no compute-end event
        plain = [[h and not l and not single_buffer for h, l in zip(has_xfers[pi], late_posts[pi])]
                 for pi in range(P)]
        where = [0] * G          # resume point: 0 start, 1 step end, 2 compute end
        at_phase = [0] * G
        at_step = [0] * G
        finished = bytearray(G)
        NORMAL_ = 1

        def run(ev):
            """Rank ``ev.rank`` resumes (its event fired) and runs until it blocks again.

            A rank blocks on its own event (``gate[r]``, reused: it is re-armed only after it has
            fired), either as the gate its transfers trigger, or queued as a timeout of ``delay``
            (``queue`` entry = what ``env.schedule(ev, NORMAL, delay)`` makes)."""
            r = ev.rank
            pi, s, resume_at = at_phase[r], at_step[r], where[r]
            left = r - 1 if r else G - 1
            comp, T, E = comps[pi], Ts[pi], Es[pi]
            has_xfer, late_post, plain_p = has_xfers[pi], late_posts[pi], plain[pi]
            while True:
                if resume_at == 1:  # the end of step s: on to the next
                    T[(s + 1) * G + r] = env._now
                    s += 1
                    if s == G:
                        pi += 1
                        if pi == P:
                            finished[r] = 1
                            return
                        s = 0
                        comp, T, E = comps[pi], Ts[pi], Es[pi]
                        has_xfer, late_post, plain_p = has_xfers[pi], late_posts[pi], plain[pi]
                        T[r] = env._now
                i = s * G + r
                if resume_at != 2:  # the start of step s
                    at_phase[r], at_step[r] = pi, s
                    if plain_p[s]:
                        now = env._now
                        post(r, pi, s)
                        c = comp[i]
                        E[i] = end = now + c  # the time a timeout of c set now would fire at
                        base = (pi * G + s) * G
                        n_missing = 2 - done[base + r] - done[base + left]
                        if n_missing:  # block on the gate
                            gate_step[r], missing[r], deadline[r] = base, n_missing, end
                            where[r] = 1
                            ev.callbacks = callbacks
                            return
                        if c > 0:  # block for the compute
                            where[r] = 1
                            ev.callbacks = callbacks
                            heappush(queue, (now + c, NORMAL_, next(eid), ev))
                            return
                        resume_at = 1
                        continue
                    if has_xfer[s] and not late_post[s]:
                        post(r, pi, s)
                    c = comp[i]
                    if c > 0:  # block for the compute
                        where[r] = 2
                        ev.callbacks = callbacks
                        heappush(queue, (env._now + c, NORMAL_, next(eid), ev))
                        return
                # the compute of step s has ended
                E[i] = env._now
                resume_at = 1
                if has_xfer[s]:
                    if single_buffer:
                        buffer_free(r, pi, s)
                    if late_post[s]:
                        post(r, pi, s)
                    base = (pi * G + s) * G
                    n_missing = 2 - done[base + r] - done[base + left]
                    if n_missing:  # wait for the send and the receive on the gate: one event for both
                        gate_step[r], missing[r], deadline[r] = base, n_missing, -math.inf
                        where[r] = 1
                        ev.callbacks = callbacks
                        return

        callbacks = [run]  # every rank event's callback list (dispatching reads it, never changes it)
        for r in range(G):
            gate[r] = _RankEvent(env, r)

        def start(r):
            Ts[0][r] = env._now
            run(gate[r])

        return start, finished

    def _stuck_message(self, stuck: list[int]) -> str:
        G = self._G
        parts = []
        for r in stuck[:8]:
            key = self._gate_step[r]
            pi, s = divmod(key // G, G)
            if not self._done[key + r]:
                what = f"its send to rank {(r + 1) % G}"
            else:
                what = f"its receive from rank {(r - 1) % G}"
            parts.append(f"rank {r} at {self.problem.phases[pi]} step {s} (waiting for {what})")
        more = f" and {len(stuck) - 8} more" if len(stuck) > 8 else ""
        return (f"ring protocol stuck at t={self.env.now:.9g} s: " + "; ".join(parts) + more
                + "; a partner never posted the matching send/receive")

    def run(self) -> RingArrays:
        G, P = self._G, len(self.problem.phases)
        start, finished = self._rank_machine()
        # The run allocates millions of short-lived objects (events, queue entries) and creates no
        # garbage cycles while it runs (each event's callbacks are dropped when it fires), so the
        # cyclic collector would only re-scan the long-lived state over and over, a cost that grows
        # with the ring; it is paused for the run and restored after.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for r in range(G):
                start(r)
            _dispatch(self.env)
        finally:
            if gc_was_enabled:
                gc.enable()
        stuck = [r for r in range(G) if not finished[r]]
        if stuck:
            raise ProtocolStuck(self._stuck_message(stuck))
        # channel arrays are [phase, step, src]; RingArrays wants [rank, step] per phase
        xs = np.frombuffer(self._xs, dtype=np.float64).reshape(P, G, G)
        xe = np.frombuffer(self._xe, dtype=np.float64).reshape(P, G, G)
        arrays = RingArrays(
            step_start_s=[np.frombuffer(self._T[pi], dtype=np.float64).reshape(G + 1, G).T for pi in range(P)],
            compute_end_s=[np.frombuffer(self._E[pi], dtype=np.float64).reshape(G, G).T for pi in range(P)],
            xfer_start_s=[xs[pi].T for pi in range(P)],
            xfer_end_s=[xe[pi].T for pi in range(P)],
            link_bytes=dict(sorted(self.network.link_bytes.items())),
            link_busy_s=dict(sorted(self.network.link_busy_s.items())),
        )
        self.arrays = arrays
        return arrays


# ---- timeline -------------------------------------------------------------------------------------------
_KINDS = ("compute", "send", "recv", "wait")


def build_timeline(problem: RingProblem, arrays: RingArrays, meta: dict) -> Timeline:
    """Rows ordered by (rank, phase, step, kind) with kind order compute, send, recv, wait.

    Built column-wise from arrays shaped [rank, phase, step, kind], then filtered: send/recv rows
    exist at steps with a transfer, wait rows where the rank idled after its compute.
    """
    G, P = problem.world_size, len(problem.phases)
    K = len(_KINDS)
    shape = (G, P, G, K)
    start = np.empty(shape)
    end = np.empty(shape)
    peer = np.empty(shape, dtype=np.int64)
    nbytes = np.zeros(shape)
    pairs = np.zeros(shape)
    flops = np.zeros(shape)
    valid = np.ones(shape, dtype=bool)
    ranks = np.arange(G)
    left = (ranks - 1) % G
    owner = (ranks[:, None] - np.arange(G)[None, :]) % G
    for pi in range(P):
        T = arrays.step_start_s[pi]
        E = arrays.compute_end_s[pi]
        XS, XE = arrays.xfer_start_s[pi], arrays.xfer_end_s[pi]
        start[:, pi, :, 0] = T[:, :G]
        end[:, pi, :, 0] = E
        peer[:, pi, :, 0] = owner
        pairs[:, pi, :, 0] = problem.pairs
        flops[:, pi, :, 0] = problem.flops[pi]
        start[:, pi, :, 1], end[:, pi, :, 1] = XS, XE
        peer[:, pi, :, 1] = ((ranks + 1) % G)[:, None]
        start[:, pi, :, 2], end[:, pi, :, 2] = XS[left], XE[left]
        peer[:, pi, :, 2] = left[:, None]
        msg = np.array([problem.message_bytes(pi, s) or 0.0 for s in range(G)])
        has = np.array([problem.message_bytes(pi, s) is not None for s in range(G)])
        nbytes[:, pi, :, 1] = msg[None, :]
        nbytes[:, pi, :, 2] = msg[None, :]
        valid[:, pi, :, 1] = has[None, :]
        valid[:, pi, :, 2] = has[None, :]
        start[:, pi, :, 3] = E
        end[:, pi, :, 3] = T[:, 1:]
        peer[:, pi, :, 3] = -1
        valid[:, pi, :, 3] = T[:, 1:] > E
    m = valid.reshape(-1)
    idx = np.flatnonzero(m)
    slot = idx >> 2  # K == 4: (rank, phase, step) slot and kind from the flat index
    kind_codes = (idx & 3).astype(np.int8)
    step_col = slot % G
    phase_codes = ((slot // G) % P).astype(np.int8)
    rank_col = slot // (P * G)
    phase_cat = pd.Categorical.from_codes(phase_codes, categories=list(problem.phases))
    kind_cat = pd.Categorical.from_codes(kind_codes, categories=list(_KINDS))
    df = pd.DataFrame({
        "rank": rank_col, "step": step_col, "phase": phase_cat, "kind": kind_cat,
        "start_s": start.reshape(-1)[idx], "end_s": end.reshape(-1)[idx], "peer": peer.reshape(-1)[idx],
        "bytes": nbytes.reshape(-1)[idx], "pairs": pairs.reshape(-1)[idx], "flops": flops.reshape(-1)[idx],
    }, columns=COLUMNS, copy=False)
    return Timeline(df, meta)


class LazyTimeline(Timeline):
    """A :class:`Timeline` whose rows are built on first use.

    A sweep over thousands of configurations needs only makespans; building millions of rows it
    never reads would dominate its run time. Anything that reads ``.df`` (every Timeline method
    does) builds the table once; pickling sends a plain Timeline.
    """

    def __init__(self, problem: RingProblem, arrays: RingArrays, meta: dict):  # noqa: D107 - no super(): lazy
        self._problem, self._arrays = problem, arrays
        self._df = None
        self.meta = dict(meta)

    @property
    def df(self) -> pd.DataFrame:
        if self._df is None:
            self._df = build_timeline(self._problem, self._arrays, self.meta).df
            self._problem = self._arrays = None
        return self._df

    @df.setter
    def df(self, value: pd.DataFrame) -> None:
        self._df = value

    def __len__(self) -> int:
        if self._df is None:  # rows without building them: compute + transfers×2 + waits
            a, p = self._arrays, self._problem
            G = p.world_size
            n = 0
            for pi in range(len(p.phases)):
                n += G * G + 2 * G * sum(p.message_bytes(pi, s) is not None for s in range(G))
                n += int(np.count_nonzero(a.step_start_s[pi][:, 1:] > a.compute_end_s[pi]))
            return n
        return len(self._df)

    def __reduce__(self):
        return (Timeline, (self.df, self.meta))


# ---- entry point ------------------------------------------------------------------------------------------
def _makespan(problem: RingProblem, arrays: RingArrays) -> float:
    return float(max(np.max(E) for E in arrays.compute_end_s)) if problem.world_size else 0.0


def simulate_ring(plan: Plan, workload: Workload, topology: Topology, cost_model: CostModel | None = None,
                  phase: str = "fwd", knobs: Knobs = Knobs(), engine: str = "auto") -> SimResult:
    """Simulate one attention layer's ring (see the module docstring for the protocol).

    engine ``"auto"`` picks the fast exact path when no two hops of the ring share a directed link
    (``topology.ring_shares_links(G)`` is False), else the simpy DES. ``cost_model`` defaults to
    :class:`RooflineCost`; the topology used is ``cost_model.apply_to_topology(topology)``.
    """
    if phase not in PHASES:
        raise InputError(f"unknown phase {phase!r}; use fwd or fwd+bwd")
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; use des, fast or auto")
    cost_model = cost_model if cost_model is not None else RooflineCost()
    topo = cost_model.apply_to_topology(topology)
    G = plan.world_size
    topo.check_world_size(G)
    shared = topo.ring_shares_links(G)
    if engine == "fast" and shared:
        raise InputError(f"topology {topo.name}: two hops of the {G}-rank ring share a directed link, and the "
                         "fast path is exact only without shared links; use --engine des")
    chosen = "des" if (engine == "des" or (engine == "auto" and shared)) else "fast"
    problem = build_problem(plan, workload, topo, cost_model, phase)
    if chosen == "fast":
        from .fastpath import run_fast

        arrays = run_fast(problem, knobs)
    else:
        arrays = RingDES(problem, knobs).run()
    meta = {
        "source": "simulated", "engine": chosen, "schedule": plan.schedule, "world_size": G,
        "seq_len": plan.seq_len, "mask": str(plan.mask), "phase": phase, "workload": workload.describe(),
        "topology": topo.name, "cost_model": cost_model.describe(), "knobs": asdict(knobs),
    }
    timeline = LazyTimeline(problem, arrays, meta)
    return SimResult(timeline=timeline, engine=chosen, layer_makespan_s=_makespan(problem, arrays),
                     link_bytes=dict(sorted(arrays.link_bytes.items())),
                     link_busy_s=dict(sorted(arrays.link_busy_s.items())))
