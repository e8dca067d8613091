"""The engines: run a program on a topology and return what every rank did (a Timeline).

Three independent implementations of the same program semantics (see :mod:`ringsim.program`):

- ``reference`` (:mod:`.reference`): plain simpy — a process per rank, an event per message, a
  fluid network recomputing every max-min rate at every change. Short and slow; it says what the
  others must compute.
- ``des`` (:mod:`.des`): the optimised discrete-event engine, any program, link contention.
- ``fast`` (:mod:`.fast`): a vectorised max-plus recurrence, exact when no two messages ever
  share a link at once (:func:`.fast.inexact_reason`).

``auto`` picks the fast path whenever it is exact, else the DES. The optimised DES equals the
reference to 1e-9 and the fast path equals the DES to 1e-9 where it is exact (tests, on
hypothesis-drawn programs).

Protocol knobs (:class:`Knobs`), each switching one mechanism off:

- ``overlap=False``: every message is posted at the compute's end instead of the step's start;
- ``rendezvous=False``: a message starts when its send is posted (an eager protocol: the data
  lands in a staging buffer) — unless its receive is posted late, below;
- ``double_buffer=False``: a receive is posted at the compute's end (the rank's only buffer holds
  the data being computed on), and a message waits for it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from ..costs import CostContext, CostModel, RooflineCost
from ..program import Program
from ..timeline import COLUMNS, Timeline
from ..topology import Topology
from ..units import InputError
from ..workload import Workload
from .des import EngineArrays, ProgramDES, ProtocolStuck, run_des
from .fast import hop_routes, inexact_reason, run_fast

__all__ = ["Knobs", "SimResult", "simulate_program", "simulate_ring", "apply_knobs", "build_timeline", "LazyTimeline",
           "EngineArrays", "ProtocolStuck", "ENGINES", "PHASES", "nccl_compute_slowdown"]

ENGINES = ("auto", "des", "fast", "reference")
PHASES = ("fwd", "fwd+bwd")


@dataclass(frozen=True)
class Knobs:
    overlap: bool = True        # compute of step s overlaps the messages of step s
    rendezvous: bool = True     # a message starts only when both ends have posted
    double_buffer: bool = True  # receive the next shard into a second buffer while computing


def apply_knobs(program: Program, knobs: Knobs) -> Program:
    """The program with the knobs' post times (see the module docstring); the same object when
    every knob is on."""
    if knobs.overlap and knobs.double_buffer:
        return program
    stages = []
    for st in program.stages:
        groups = tuple(replace(g, send_at="end" if not knobs.overlap else g.send_at,
                               recv_at="end" if not (knobs.overlap and knobs.double_buffer) else g.recv_at)
                       for g in st.messages)
        stages.append(replace(st, messages=groups))
    return replace(program, stages=stages, meta=dict(program.meta))


@dataclass
class SimResult:
    """What one simulated program did. ``timeline`` is a :class:`LazyTimeline`: its rows are built
    on first use, so callers that need only the makespan never pay for millions of rows."""

    timeline: Timeline
    engine: str                 # "des", "fast" or "reference"
    layer_makespan_s: float     # when the last rank finished its last step
    link_bytes: dict
    link_busy_s: dict
    program: Program
    arrays: EngineArrays
    compute_s: np.ndarray       # [N, G] compute seconds as run (with the NCCL slowdown, if any)
    priced_compute_s: np.ndarray | None = None  # [N, G] as the cost model priced them (None: the same)


def simulate_program(program: Program, workload: Workload, topology: Topology, cost_model: CostModel | None = None,
                     knobs: Knobs = Knobs(), engine: str = "auto", meta: dict | None = None,
                     release_s=None) -> SimResult:
    """Run ``program`` (one attention layer) on ``topology`` with compute times from ``cost_model``
    (default :class:`~ringsim.costs.RooflineCost`; the topology used is the model's
    ``apply_to_topology``). ``engine``: ``auto`` (fast when exact, else des), ``des``, ``fast``
    (refused where inexact) or ``reference``. ``release_s`` (``[G]``, optional): when each rank
    starts its first step (a measured run's ranks leave the iteration's barrier together but
    start their first step apart: the start skew validation replays); default all at 0."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; use {', '.join(ENGINES)}")
    cost_model = cost_model if cost_model is not None else RooflineCost()
    G = program.world_size
    topology.check_world_size(G)
    topo = cost_model.apply_to_topology(topology, program)
    prog = apply_knobs(program, knobs)
    flat = prog.flat
    compute = _check_compute(cost_model.step_seconds(CostContext(prog, workload, topo)), flat.N, G,
                             getattr(cost_model, "name", "?"))
    chosen = engine
    routes = None
    if engine in ("auto", "fast"):
        routes = hop_routes(flat, topo)
        why = inexact_reason(flat, topo, knobs, routes)
        if why is not None and engine == "fast":
            raise InputError(f"topology {topo.name}: the fast path is exact only when no two messages share a link "
                             f"at once, and here {why}; use --engine des")
        chosen = "fast" if why is None else "des"

    released = _released(prog, release_s)  # a first step of compute only, lasting each rank's release

    def run(c):
        p, f = (released, released.flat) if released is not None else (prog, flat)
        if released is not None:
            c = np.vstack([np.asarray(release_s, dtype=np.float64)[None, :], c])
        if chosen == "fast":
            a = run_fast(f, c, topo, knobs, routes)
        elif chosen == "des":
            a = run_des(f, c, topo, knobs)
        else:
            from .reference import run_reference

            a = run_reference(p, c, topo, knobs)
        if released is None:
            return a
        # the release step carries no message: message arrays are the program's as they are
        return EngineArrays(a.step_start_s[1:], a.compute_end_s[1:], a.msg_start_s, a.msg_end_s, a.link_bytes,
                            a.link_busy_s)

    arrays = run(compute)
    priced = compute
    extra_m = {}
    share = cost_model.transfer_sm_share(topo)
    if share and flat.M:
        # NCCL's send/recv kernels hold SMs while in flight: the compute beside them takes longer,
        # which can move the transfers in turn; one more pass with the slowed compute
        extra = nccl_compute_slowdown(flat, compute, arrays, topo, share,
                                      routes if routes is not None else hop_routes(flat, topo))
        if extra.any():
            compute = compute + extra
            arrays = run(compute)
        extra_m = {"nccl_sm_share": dict(share), "nccl_compute_slowdown_s": float(extra.sum(axis=0).max())}
    m = {"source": "simulated", "engine": chosen, "strategy": program.strategy,
         "schedule": program.meta.get("layout", program.strategy), "world_size": G,
         "seq_len": program.meta.get("seq_len", workload.seq_len), "mask": program.meta.get("mask"),
         "phase": program.meta.get("phase"), "workload": workload.describe(), "topology": topo.name,
         "cost_model": cost_model.describe(), "knobs": asdict(knobs), **extra_m, **(meta or {})}
    timeline = LazyTimeline(prog, workload, arrays, m)
    makespan = float(arrays.step_start_s[-1].max()) if G else 0.0
    return SimResult(timeline, chosen, makespan, dict(arrays.link_bytes), dict(arrays.link_busy_s), prog, arrays,
                     compute, priced)


def _released(program: Program, release_s):
    """``program`` with a first step whose only op is a rank's wait for its release (no messages),
    or None without ``release_s``."""
    if release_s is None:
        return None
    from ..program import MemoryOp, Stage

    G = program.world_size
    rel = np.asarray(release_s, dtype=np.float64)
    if rel.shape != (G,) or not np.isfinite(rel).all() or (rel < 0).any():
        raise InputError(f"release_s must be {G} non-negative times, got {rel.shape}")
    first = program.stages[0]
    stage = Stage(first.phase, first.first_step - 1, 1, (MemoryOp("release", np.zeros((1, G)), 0),), (), "release")
    return Program(G, [stage, *program.stages], program.strategy, dict(program.meta), program.plan,
                   program.head_groups)


def nccl_compute_slowdown(flat, compute_s: np.ndarray, arrays: EngineArrays, topology: Topology,
                          share: dict[str, float], routes: list) -> np.ndarray:
    """Extra compute seconds per (step, rank), ``[N, G]``, from the SMs NCCL's point-to-point
    kernels hold while the rank's transfers are in flight.

    The model: a rank's transfer occupies ``share[c]`` of its compute units from the moment the
    rank posts it (NCCL launches its kernel then, and it stays resident, spinning, until the data
    has moved) to the message's end, where ``c`` is the class of the route's slowest link; several
    transfers in flight at once hold the largest of their shares (they run in one kernel, on its
    channels). A compute interval of ``W`` seconds (as ``arrays`` ran it, from the step's start)
    that such transfers overlap for ``o`` seconds at share ``f`` runs at ``1 − f`` during them, so it
    lasts ``W + f·o``: the extra is ∫ f(t) dt over the interval. One pass: the slowed compute may
    shift the transfers a little, which the caller's re-run takes as given.

    How it is computed: a transfer a rank takes part in can overlap the rank's compute only at the
    steps from the one it posts at (the next one when its end is posted at the compute's end) to
    the one that waits for it, and it was posted by the time each of those computes starts — so
    inside a compute interval every such transfer runs from the interval's start to its own end.
    The union of the transfers at or above a share is then the interval's start to the latest of
    their ends, and ∫ f(t) dt is a layer cake over the distinct shares of those latest ends."""
    N, G = compute_s.shape
    extra = np.zeros((N, G))
    if not flat.M:
        return extra
    links = topology.links
    f_hop = np.array([0.0 if not rt else share.get(links[min(rt, key=lambda i: links[i].bandwidth_Bps)].link_class, 0.0)
                      for rt in routes], dtype=np.float64)
    levels = np.unique(f_hop[f_hop > 0])
    if not len(levels):
        return extra
    f_m = f_hop[flat.hop]
    live = (f_m > 0) & (flat.bytes > 0)
    if not live.any():
        return extra
    c0 = arrays.step_start_s[:N]
    c1 = c0 + compute_s
    lvl = np.searchsorted(levels, f_m[live])
    b = arrays.msg_end_s[live]
    last = flat.wait_step[live]
    latest = np.full((len(levels), N, G), -np.inf)  # per share level: the latest end at or above it
    # each end of a live message: its rank, and the steps whose compute it can overlap (from the
    # step it posts at, the next one when posted at the compute's end, to the one that waits for it)
    for rank_m, at_end in ((flat.src, flat.send_end), (flat.dst, flat.recv_end)):
        ranks = rank_m[live]
        first = flat.post_step[live] + at_end[live]
        for d in range(int((last - first).max()) + 1):
            k = first + d
            ok = k <= last
            if ok.all():
                np.maximum.at(latest, (lvl, k, ranks), b)
            elif ok.any():
                np.maximum.at(latest, (lvl[ok], k[ok], ranks[ok]), b[ok])
    # "at or above": the latest end over this level and every higher one
    latest = np.maximum.accumulate(latest[::-1], axis=0)[::-1]
    below = 0.0
    for i, lv in enumerate(levels):
        extra += (lv - below) * np.clip(np.minimum(latest[i], c1) - c0, 0.0, None)
        below = lv
    return np.where(compute_s > 0, extra, 0.0)


def simulate_ring(plan, workload: Workload, topology: Topology, cost_model: CostModel | None = None,
                  phase: str = "fwd", knobs: Knobs = Knobs(), engine: str = "auto",
                  implementation: str = "ringsim") -> SimResult:
    """The ring program of ``plan`` (:func:`ringsim.strategies.build_ring`) through :func:`simulate_program`."""
    from ..strategies import build_ring

    if phase not in PHASES:
        raise InputError(f"unknown phase {phase!r}; use fwd or fwd+bwd")
    if getattr(plan, "real_seq_len", plan.seq_len) != workload.seq_len:
        raise InputError(f"plan sequence length {plan.seq_len} differs from the workload's {workload.seq_len}; "
                         "build both from the same --seq-len")
    return simulate_program(build_ring(plan, workload, phase, implementation), workload, topology, cost_model, knobs,
                            engine)


def _check_compute(arr, N: int, G: int, name: str) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape != (N, G):
        raise InputError(f"cost model {name} returned shape {arr.shape}, expected ({N}, {G}); fix its step_seconds")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise InputError(f"cost model {name} returned negative or non-finite times; "
                         "check the calibration or device figures")
    return arr


# ---- timeline -------------------------------------------------------------------------------------------
_KINDS = ("compute", "send", "recv", "wait")


def build_timeline(program: Program, workload: Workload, arrays: EngineArrays, meta: dict) -> Timeline:
    """Rows ordered by (rank, phase, step, kind) with kind order compute, send, recv, wait:
    a compute row per (step, rank) of a step with compute ops (peer = the owner of the held K/V
    shard, or −1), a send and a recv row per message (from its start to its end, labelled with
    the step that posted it), a wait row where the rank idled between its compute end and the
    step's end."""
    flat = program.flat
    G, N, M = flat.world_size, flat.N, flat.M
    T, E = arrays.step_start_s, arrays.compute_end_s
    phase_idx = np.array(flat.phase_index(), dtype=np.int64)
    flops_pp = {p: workload.flops_per_pair(p) for p in ("fwd", "bwd")}
    fpp = np.array([flops_pp[p] for p in flat.step_phase], dtype=np.float64)
    # compute rows
    cn, cr = np.nonzero(np.broadcast_to(flat.has_compute[:, None], (N, G)))
    # wait rows: a gap above rounding (two engines may order the same sums differently by an ulp)
    wn, wr = np.nonzero(T[1:] - E > 1e-12 * np.abs(T[1:]))
    parts = [
        (cr, cn, np.zeros(len(cn), np.int8), np.zeros(len(cn), np.int64), T[cn, cr], E[cn, cr],
         flat.kv_owner[cn, cr], np.zeros(len(cn)), flat.pairs[cn, cr].astype(np.float64),
         flat.work_pairs[cn, cr] * fpp[cn]),
        (flat.src, flat.post_step, np.ones(M, np.int8), np.arange(M), arrays.msg_start_s, arrays.msg_end_s,
         flat.dst, flat.bytes, np.zeros(M), np.zeros(M)),
        (flat.dst, flat.post_step, np.full(M, 2, np.int8), np.arange(M), arrays.msg_start_s, arrays.msg_end_s,
         flat.src, flat.bytes, np.zeros(M), np.zeros(M)),
        (wr, wn, np.full(len(wn), 3, np.int8), np.zeros(len(wn), np.int64), E[wn, wr], T[wn + 1, wr],
         np.full(len(wn), -1, np.int64), np.zeros(len(wn)), np.zeros(len(wn)), np.zeros(len(wn))),
    ]
    col = lambda k: np.concatenate([p[k] for p in parts])
    rank, n, kind, sub = col(0), col(1), col(2), col(3)
    order = np.lexsort((sub, kind, n, rank))
    rank, n, kind = rank[order], n[order], kind[order]
    df = pd.DataFrame({
        "rank": rank, "step": flat.step_label[n],
        "phase": pd.Categorical.from_codes(phase_idx[n].astype(np.int8), categories=list(dict.fromkeys(flat.step_phase))),
        "kind": pd.Categorical.from_codes(kind, categories=list(_KINDS)),
        "start_s": col(4)[order], "end_s": col(5)[order], "peer": col(6)[order].astype(np.int64),
        "bytes": col(7)[order], "pairs": col(8)[order], "flops": col(9)[order],
    }, columns=COLUMNS, copy=False)
    return Timeline(df, meta)


class LazyTimeline(Timeline):
    """A :class:`Timeline` whose rows are built on first use.

    A sweep over thousands of configurations needs only makespans; building millions of rows it
    never reads would dominate its run time. Anything that reads ``.df`` (every Timeline method
    does) builds the table once; pickling sends a plain Timeline.
    """

    def __init__(self, program: Program, workload: Workload, arrays: EngineArrays, meta: dict):  # noqa: D107
        self._src = (program, workload, arrays)
        self._df = None
        self.meta = dict(meta)

    @property
    def df(self) -> pd.DataFrame:
        if self._df is None:
            self._df = build_timeline(*self._src, self.meta).df
            self._src = None
        return self._df

    @df.setter
    def df(self, value: pd.DataFrame) -> None:
        self._df = value

    def __len__(self) -> int:
        if self._df is None:  # rows without building them
            program, _, a = self._src
            f = program.flat
            return int(f.has_compute.sum()) * f.world_size + 2 * f.M + int(np.count_nonzero(a.step_start_s[1:] >
                                                                                          a.compute_end_s))
        return len(self._df)

    def __reduce__(self):
        return (Timeline, (self.df, self.meta))
