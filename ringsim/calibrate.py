"""Calibration: fit the simulator's cost model to measured timelines.

``calibrate(timelines)`` reads measured runs (ringsim Chrome traces written by ``ringsim run``, or
Kineto traces imported by :mod:`ringsim.kineto`) and fits three things; ``load_calibration`` turns
the resulting JSON into a :class:`CalibratedCost` that the engine uses instead of the roofline.

**(a) Compute time per block kind and phase.** A measured block's time runs from its step start
(the rank's first post of the step, i.e. the earliest of its compute/send/recv rows, but not before
the rank's previous block ended) to the end of
its compute plus the merge that follows it — exactly the interval the simulator's protocol calls
"compute" (it starts compute at step start; posting the transfers and merging the partial result
are part of the rank's busy time). Work is measured as ``pairs`` scaled to the reference workload:
``work = pairs × flops_per_pair / flops_per_pair_ref`` (flops per pair = 2·B·H·(d_qk + d_v)), so a
fit transfers to other head counts, head sizes and batches, and — since it is per pair — to other
sequence lengths, world sizes and schedules. Four candidate models per (kind, phase):

- ``rows``: ``t = a·√work + b·work`` (a, b ≥ 0): a per-row cost (loads, softmax statistics, the
  merge; √work ∝ the block's rows for a given kind) plus a per-pair cost;
- ``roofline``: ``t = overhead_s + work × seconds_per_pair``, fitted on the per-size medians by
  least squares on relative error with both coefficients constrained ≥ 0 (a 2-variable NNLS:
  when the unconstrained optimum has a negative intercept the line goes through the origin);
- ``table``: piecewise-linear interpolation over the per-size medians, proportional scaling
  (t ∝ work) outside the measured range;
- ``power``: ``t = c × work^alpha`` through the per-size medians in log-log.

Each is scored by leave-one-size-out MAPE (every distinct work size is predicted from the others);
the lowest wins (ties, as with exactly two sizes, go to rows, then power, table, roofline:
``MODELS``) and all scores are recorded. Kinds without data fall back to the phase's pooled
fit (``"*"``); a phase without data falls back to forward × 2.5 (the roofline constant).

**(b) Latency and bandwidth per link class.** Each transfer's duration is taken from the later of
the two posts (the send on the sender, the receive on the receiver) to the later completion — the
interval the simulator's rendezvous protocol models. Per distinct message size the median duration
is taken (robust to the odd slow message), then ``t = latency_s + bytes / bandwidth_Bps`` is fitted
with the same non-negative relative least squares. The link class of a trace comes from its
metadata: ``link_class`` if given, ``"loopback"`` for CPU/gloo runs, else ``"link"``.

**(c) Residual effects.** *Core sharing*: on a CPU host, when ``world_size × threads_per_rank``
exceeds the cores, ranks time-share them. The base compute model is fitted on the runs that are
not oversubscribed; the oversubscribed runs then give ``factor = load^gamma`` with
``load = world_size × threads_per_rank / cpu_cores`` (gamma is the median of
log(measured/predicted)/log(load)), applied when the prediction is for such a host — unless
the load level has runs of its own (``contention.by_load``, used up to ``SHARE_MAX_WORLD_SIZE``
ranks). Then a prediction runs the ring as *processor sharing* (:func:`share_cores`): every
runnable thing — a rank inside a block, a transfer in flight (a loopback transfer is memory copies
made by the same cores) — gets an equal share of the cores; a rank that runs out of work hands its
core to the others, which is what makes a balanced schedule gain little on an oversubscribed host.
The calibration inverts that model on the measured runs: each block and each transfer becomes
*core-seconds* (:func:`core_time_s`, :func:`transfer_core_time_s`: its time with the time-sharing
taken out, from how many blocks and transfers were running at each instant). A core-second is a
core-second, so the runs with a core per rank join the kind fits (they add block sizes the level's
runs lack); the fits follow the per-size *mean* (time-sharing ranks finish when the total work is
done), and each (phase, kind) fit is then scaled so that over the level's own block sizes it
matches the level's runs on average (``level_scale``: the level sets the level, the pooled sizes
the shape). A transfer's core-seconds are fitted as latency + bytes / bandwidth (``transfer``), and
the mean off-core time before a block that the ring's transfers do not explain
(:func:`block_gaps_s`: a descheduled rank, the ranks' staggered start) is added as time that uses
no core. The links the engine sends over are fitted on the runs that are not oversubscribed too,
and the oversubscribed runs give them their own ``load^gamma`` slowdown, applied when the ring size is known
(:meth:`CalibratedCost.for_world_size`, which ``ringsim validate`` uses). *Transfer
overlap*: the slope of the compute residual against the fraction of the block overlapped by the
rank's own transfers is measured and recorded (not applied: the engine fixes compute time before
it knows the overlap).

*Block-to-block dispersion*: on the runs with a core per rank, the quantiles of measured / fitted
block time per phase (``dispersion``). A makespan is a maximum over ranks, so the median over
iterations of measured makespans lies above the makespan of median blocks whenever the ranks are
balanced; :meth:`CalibratedCost.with_dispersion` draws every block's factor from these quantiles
(seeded), and ``ringsim validate`` predicts the median makespan over such draws.

Every component records its fit error (MAPE), and the JSON names the traces and their hardware.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace

import numpy as np
import pandas as pd

from .costs import BLOCK_KINDS, BWD_FLOPS_FACTOR, BlockBatch, CostModel, classify_blocks
from .timeline import Timeline, read_timeline
from .topology import Topology
from .units import InputError, jsonable, read_json, write_atomic

__all__ = ["calibrate", "load_calibration", "CalibratedCost", "load_measured", "block_samples", "core_time_s",
           "share_cores",
           "transfer_samples", "assign_iterations", "fit_line_nonneg", "fit_roofline", "fit_power", "TableModel",
           "trace_link_class", "trace_load", "workload_from_meta", "write_calibration", "FORMAT"]

FORMAT = "ringsim-calibration/1"
SHARE_MAX_WORLD_SIZE = 64  # the processor-sharing ring model is O(G³); larger rings use load^gamma


# ---- loading measured traces ------------------------------------------------------------------------
def load_measured(paths: list[str], kineto_config: dict | None = None) -> list[tuple[str, Timeline]]:
    """Load traces: each ringsim trace is one run; consecutive Kineto files (one per rank) form one
    run, a new run starting when a rank repeats. Returns ``[(label, timeline)]``."""
    from .kineto import import_kineto, is_kineto_trace

    out: list[tuple[str, Timeline]] = []
    group: list[str] = []
    ranks: set[int] = set()

    def flush():
        if group:
            out.append((" + ".join(group), import_kineto(list(group), kineto_config)))
            group.clear()
            ranks.clear()

    for p in paths:
        p = os.fspath(p)
        if not os.path.exists(p):
            raise InputError(f"trace file {p} does not exist; check the path")
        data = None
        if p.endswith(".json"):
            try:
                with open(p) as f:
                    data = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InputError(f"{p} is not a trace ({type(e).__name__}); give ringsim Chrome-trace JSON "
                                 "or PyTorch-profiler traces") from None
        if data is not None and is_kineto_trace(data):
            r = int(data["distributedInfo"].get("rank", -1))
            if r in ranks:
                flush()
            group.append(p)
            ranks.add(r)
            continue
        flush()
        if data is not None:
            tl = Timeline.from_chrome_trace(data, origin=p)
        else:
            tl = read_timeline(p)
        out.append((p, tl))
    flush()
    return out


def workload_from_meta(meta: dict):
    """The measured run's Workload from its metadata (None when the dims are missing)."""
    from .workload import ModelSpec, Workload

    w = meta.get("workload") or {}
    if not all(k in w for k in ("heads", "head_dim")):
        return None
    heads = int(w["heads"])
    model = ModelSpec("measured", int(w.get("layers", 1) or 1), heads, int(w.get("kv_heads", heads) or heads),
                      int(w["head_dim"]), v_head_dim=w.get("v_head_dim"))
    return Workload(model, int(meta.get("seq_len") or w.get("seq_len") or 1), int(w.get("batch", 1) or 1),
                    str(w.get("dtype", "bf16")))


def trace_link_class(meta: dict) -> str:
    if meta.get("link_class"):
        return str(meta["link_class"])
    if str(meta.get("backend", "")).lower() == "gloo" or str(meta.get("device", "")).lower() == "cpu":
        return "loopback"
    return "link"


def trace_load(meta: dict) -> float:
    """Rank threads per core on a CPU host (world_size × threads_per_rank / cpu_cores); 1 otherwise."""
    try:
        if str(meta.get("device", "")).lower() != "cpu" or not meta.get("cpu_cores"):
            return 1.0
        return float(meta["world_size"]) * float(meta.get("threads_per_rank", 1) or 1) / float(meta["cpu_cores"])
    except (TypeError, ValueError, KeyError):
        return 1.0


def assign_iterations(df: pd.DataFrame) -> pd.Series:
    """Iteration index of every row: the k-th occurrence (in time) of a (rank, phase, kind, step)
    belongs to timed iteration k. Works for one or several iterations and for imported traces."""
    order = df.sort_values("start_s", kind="stable")
    it = order.groupby([order["rank"], order["phase"].astype(str), order["kind"].astype(str), order["step"]],
                       sort=False).cumcount()
    return it.reindex(df.index)


def _plan_for(meta: dict, G: int):
    from .schedules import Plan

    if not meta.get("schedule") or not meta.get("seq_len"):
        return None
    try:
        return Plan(str(meta["schedule"]), G, int(meta["seq_len"]), meta.get("mask", "causal"))
    except InputError:
        return None


def block_samples(tl: Timeline) -> pd.DataFrame:
    """One row per measured block: rank, phase, step, iter, pairs, kind, start_s (step start),
    end_s (end of compute + merge), time_s, compute_start_s, overlap (fraction of the block
    overlapped by the rank's own transfers)."""
    df = tl.df.copy()
    if not len(df):
        return pd.DataFrame()
    df["iter"] = assign_iterations(df)
    df["kind"] = df["kind"].astype(str)
    df["phase"] = df["phase"].astype(str)
    comp = df[df["kind"] == "compute"]
    if not len(comp):
        return pd.DataFrame()
    G = int(tl.meta.get("world_size") or df["rank"].max() + 1)
    plan = _plan_for(tl.meta, G)
    kinds = classify_blocks(plan) if plan is not None else None
    key = ["rank", "phase", "step", "iter"]
    ring = df[df["kind"].isin(["compute", "send", "recv"])].groupby(key)["start_s"].min()
    ends = df[df["kind"].isin(["compute", "merge"])].groupby(key)["end_s"].max()
    xfer = df[df["kind"].isin(["send", "recv"])]
    xfer_by_rank = {int(r): (d["start_s"].to_numpy(), d["end_s"].to_numpy()) for r, d in xfer.groupby("rank")}
    rows = []
    for r in comp.itertuples(index=False):
        k = (r.rank, r.phase, r.step, r.iter)
        start = float(ring.get(k, r.start_s))
        end = float(ends.get(k, r.end_s))
        if kinds is not None and 0 <= r.step < G:
            kind = str(kinds[r.rank, r.step])
        elif r.pairs <= 0:
            kind = "empty"
        else:
            kind = "partial"
        tx = xfer_by_rank.get(int(r.rank))
        ov = 0.0
        if tx is not None and end > start:
            a = np.clip(tx[0], start, end)
            b = np.clip(tx[1], start, end)
            ov = float(_union_length(a, b) / (end - start))
        rows.append({"rank": int(r.rank), "phase": r.phase, "step": int(r.step), "iter": int(r.iter),
                     "pairs": float(r.pairs), "kind": kind, "start_s": start, "end_s": end,
                     "time_s": end - start, "compute_start_s": float(r.start_s), "overlap": ov})
    out = pd.DataFrame(rows)
    # a step's posts may come before the previous block ended (e.g. a gradient sent one step behind):
    # a block never starts before the rank's previous block ended
    out = out.sort_values(["rank", "compute_start_s"], kind="stable")
    prev_end = out.groupby("rank")["end_s"].shift(1)
    out["start_s"] = np.where(prev_end.notna(), np.maximum(out["start_s"], prev_end.fillna(-np.inf)), out["start_s"])
    out["time_s"] = out["end_s"] - out["start_s"]
    return out.sort_index().reset_index(drop=True)


def _union_length(a: np.ndarray, b: np.ndarray) -> float:
    keep = b > a
    a, b = a[keep], b[keep]
    if not len(a):
        return 0.0
    o = np.argsort(a)
    a, b = a[o], b[o]
    total, cur_a, cur_b = 0.0, a[0], b[0]
    for x, y in zip(a[1:], b[1:]):
        if x > cur_b:
            total += cur_b - cur_a
            cur_a, cur_b = x, y
        else:
            cur_b = max(cur_b, y)
    return float(total + cur_b - cur_a)


def transfer_samples(tl: Timeline) -> pd.DataFrame:
    """One row per transfer r → peer: bytes and duration from the later post (send on r, receive
    on the peer) to the later completion. Sends without a matching receive keep their own interval."""
    df = tl.df.copy()
    if not len(df):
        return pd.DataFrame(columns=["rank", "peer", "phase", "step", "iter", "bytes", "start_s", "end_s", "time_s"])
    df["iter"] = assign_iterations(df)
    df["phase"] = df["phase"].astype(str)
    df["kind"] = df["kind"].astype(str)
    sends = df[df["kind"] == "send"]
    recvs = df[df["kind"] == "recv"].set_index(["rank", "peer", "phase", "step", "iter"])
    rows = []
    for s in sends.itertuples(index=False):
        k = (s.peer, s.rank, s.phase, s.step, s.iter)
        start, end = s.start_s, s.end_s
        if k in recvs.index:
            rv = recvs.loc[k]
            if isinstance(rv, pd.DataFrame):
                rv = rv.iloc[0]
            start, end = max(start, rv["start_s"]), max(end, rv["end_s"])
        if s.bytes > 0 and end > start:
            rows.append({"rank": int(s.rank), "peer": int(s.peer), "phase": s.phase, "step": int(s.step),
                         "iter": int(s.iter), "bytes": float(s.bytes), "start_s": float(start),
                         "end_s": float(end), "time_s": float(end - start)})
    return pd.DataFrame(rows, columns=["rank", "peer", "phase", "step", "iter", "bytes", "start_s", "end_s",
                                       "time_s"])


# ---- core sharing (processor sharing on an oversubscribed CPU host) ----------------------------------
def _sharing_integral(s: np.ndarray, e: np.ndarray, slots: float):
    """For the runnable intervals ``[s, e)`` of one run, a function mapping intervals to their
    core-seconds ``∫ min(1, slots / n(t)) dt``, ``n(t)`` = how many of the intervals hold t."""
    edges = np.unique(np.concatenate([s, e]))
    delta = np.zeros(len(edges))
    np.add.at(delta, np.searchsorted(edges, s), 1.0)
    np.add.at(delta, np.searchsorted(edges, e), -1.0)
    n = np.cumsum(delta)[:-1]
    seg = np.diff(edges) * np.minimum(1.0, slots / np.maximum(n, 1.0))
    cum = np.concatenate([[0.0], np.cumsum(seg)])

    def core(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.interp(b, edges, cum) - np.interp(a, edges, cum)
    return core


def core_time_s(blocks: pd.DataFrame, slots: float, transfers: pd.DataFrame | None = None) -> np.ndarray:
    """Core-seconds of every measured block of one run: ``∫ min(1, slots / n(t)) dt`` over the
    block's interval, ``n(t)`` = the number of ranks inside a block (step start → end of compute +
    merge) at time t — plus, when ``transfers`` (:func:`transfer_samples`) are given, the transfers
    in flight, which on a CPU host are copies made by the same cores — and ``slots`` = cores /
    threads per rank. When more things run than there are cores, each gets a ``slots / n`` share
    of a core (egalitarian time-sharing), so this is the time the block would take on a core of its
    own; with ``n ≤ slots`` it is the block time itself."""
    if not len(blocks):
        return np.zeros(0)
    core = _sharing_integral(*_runnable(blocks, transfers), slots)
    return core(blocks["start_s"].to_numpy(float), blocks["end_s"].to_numpy(float))


def transfer_core_time_s(transfers: pd.DataFrame, blocks: pd.DataFrame, slots: float) -> np.ndarray:
    """Core-seconds of every measured transfer of one run, as :func:`core_time_s` counts them
    (blocks and transfers in flight share the cores equally)."""
    if not len(transfers):
        return np.zeros(0)
    core = _sharing_integral(*_runnable(blocks, transfers), slots)
    return core(transfers["start_s"].to_numpy(float), transfers["end_s"].to_numpy(float))


def _runnable(blocks: pd.DataFrame, transfers: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """Start and end times of everything that shares the cores: the blocks, and the transfers."""
    frames = [blocks] if transfers is None or not len(transfers) else [blocks, transfers]
    return (np.concatenate([f["start_s"].to_numpy(float) for f in frames]),
            np.concatenate([f["end_s"].to_numpy(float) for f in frames]))


def block_gaps_s(blocks: pd.DataFrame, transfers: pd.DataFrame | None = None) -> np.ndarray:
    """Per block, the time its rank spent outside blocks just before it: from the rank's previous
    block end (for its first block of an iteration: from the iteration's earliest block start) to
    this block's start — waits on a peer and being off the core, the time-sharing costs a
    processor-sharing ring does not see. With ``transfers`` (:func:`transfer_samples`), only what
    the step's transfers do not explain: the gap counts from the later of the previous block's end
    and the completion of the transfers this rank took part in at the previous step (the wait on
    them is the ring's, which :func:`share_cores` models)."""
    b = blocks
    gap = np.zeros(len(b))
    if not len(b):
        return gap
    done: dict = {}
    if transfers is not None and len(transfers):
        for r, p, ph, s, it, e in zip(transfers["rank"], transfers["peer"], transfers["phase"], transfers["step"],
                                      transfers["iter"], transfers["end_s"]):
            for who in (int(r), int(p)):
                k = (who, str(ph), int(s), int(it))
                done[k] = max(done.get(k, -np.inf), float(e))
    it0 = b.groupby("iter")["start_s"].transform("min").to_numpy()
    order = np.lexsort((b["start_s"].to_numpy(), b["rank"].to_numpy(), b["iter"].to_numpy()))
    st, en = b["start_s"].to_numpy(), b["end_s"].to_numpy()
    rk, it = b["rank"].to_numpy(), b["iter"].to_numpy()
    ph, sp = b["phase"].to_numpy(), b["step"].to_numpy()
    prev = None
    for i in order:
        if prev is not None and rk[prev] == rk[i] and it[prev] == it[i]:
            ref = en[prev]
            if ph[prev] == ph[i]:
                ref = max(ref, done.get((int(rk[i]), str(ph[i]), int(sp[prev]), int(it[i])), -np.inf))
            gap[i] = max(st[i] - ref, 0.0)
        else:
            gap[i] = max(st[i] - it0[i], 0.0)
        prev = i
    return gap


def _fluid_ring(W: np.ndarray, D: np.ndarray, X: np.ndarray, slots: float):
    """The processor-sharing ring of :func:`share_cores` on ``[rank, block]`` arrays (every phase's
    G blocks side by side): returns the blocks' start and end times and the transfers' (rank →
    rank + 1, posted at that block's step) start and end times, NaN where there is none."""
    G, nb = W.shape
    start = np.full((G, nb), np.nan)
    end = np.full((G, nb), np.nan)
    nxt = np.zeros(G, dtype=int)
    rem = np.zeros(G)
    wake = np.full(G, np.inf)  # sleeping (off-core) until
    active = np.zeros(G, dtype=bool)
    busy = np.zeros(G, dtype=bool)  # inside a block (sleeping or active)
    xrem = X.copy()
    xstate = np.zeros((G, nb), dtype=np.int8)  # 0 not posted by both, 1 in flight, 2 done
    xstart = np.full((G, nb), np.nan)
    xend = np.full((G, nb), np.nan)
    t = 0.0
    tol = 1e-12 * max(float(W.max()) if W.size else 0.0, float(D.max()) if D.size else 0.0,
                      float(X.max()) if X.size else 0.0, 1e-30)

    def try_start(r):
        k = nxt[r]
        if k >= nb or busy[r]:
            return False
        if k % G and (xstate[(r - 1) % G, k - 1] != 2 or xstate[r, k - 1] != 2):
            return False
        start[r, k] = t
        rem[r] = W[r, k]
        busy[r] = True
        if D[r, k] > 0:
            wake[r] = t + D[r, k]
        else:
            active[r] = True
        for a in ((r - 1) % G, r):  # the transfers of this step this rank takes part in
            if xstate[a, k] == 0 and k % G < G - 1 and not np.isnan(start[(a + 1) % G, k]) \
                    and not np.isnan(start[a, k]):
                xstate[a, k] = 1 if xrem[a, k] > tol else 2
                xstart[a, k] = t
                if xstate[a, k] == 2:
                    xend[a, k] = t
        return True

    def start_all():
        changed = True
        while changed:
            changed = False
            for r in range(G):
                changed |= try_start(r)

    start_all()
    while busy.any() or (xstate == 1).any():
        idx = np.flatnonzero(active)
        xi = np.flatnonzero(xstate.ravel() == 1)
        n = len(idx) + len(xi)
        rate = min(1.0, slots / n) if n else 0.0
        rems = np.concatenate([rem[idx], xrem.ravel()[xi]])
        t_done = t + float(rems.min()) / rate if n else np.inf
        t_wake = float(wake.min())
        t_next = min(t_done, t_wake)
        if n:
            j = int(np.argmin(rems))
            rem[idx] -= (t_next - t) * rate
            xflat = xrem.ravel()
            xflat[xi] -= (t_next - t) * rate
            if t_next == t_done:
                if j < len(idx):
                    rem[idx[j]] = 0.0
                else:
                    xflat[xi[j - len(idx)]] = 0.0
        t = t_next
        for r in np.flatnonzero(wake <= t + tol):
            wake[r] = np.inf
            active[r] = True
        fin = xi[xrem.ravel()[xi] <= tol]
        xstate.ravel()[fin] = 2
        xend.ravel()[fin] = t
        for r in idx[rem[idx] <= tol]:
            end[r, nxt[r]] = t
            active[r] = False
            busy[r] = False
            nxt[r] += 1
        start_all()
    return start, end, xstart, xend


def share_cores(work: list[np.ndarray], slots: float, delay: list[np.ndarray] | None = None,
                xfer: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Block durations ``[rank, step]`` per phase when G single-thread ranks time-share ``slots``
    cores (the inverse of :func:`core_time_s`).

    ``work``: per phase (forward, then backward if any) the core-seconds of every block. A fluid
    model of the ring: every rank runs its blocks in order (forward steps, then backward steps).
    At step s < G − 1 of a phase rank r and r + 1 both post the transfer r → r + 1 (a rendezvous:
    it starts when both have started their step s); block s + 1 of rank r starts once its block s
    is done and both transfers it takes part in at step s (from r − 1, to r + 1) are done. Every
    runnable thing — a block past its off-core delay, a transfer in flight — shares the cores
    equally, each progressing at ``min(1, slots / n)`` core-seconds per second.

    ``delay`` (optional, per phase, seconds): off-core time at the start of each block (waiting to
    be scheduled) — part of the block's duration, but it uses no core. ``xfer`` (optional, per
    phase, ``[rank, step]`` core-seconds of the transfer rank → rank + 1 posted at that step; 0 or
    absent: it completes as soon as both ends have posted): on a CPU host a loopback transfer is
    memory copies made by the host's cores, so it competes with the blocks for them.

    A block's duration runs from its start (its delay included) to its end; the wait for the
    step's transfers before it is the engine's to model (its own transfers on the links)."""
    P = len(work)
    W = np.concatenate([np.asarray(w, float) for w in work], axis=1)  # [G, P*G]
    G = W.shape[0]
    D = np.zeros_like(W) if delay is None else np.concatenate([np.asarray(d, float) for d in delay], axis=1)
    X = np.zeros_like(W) if xfer is None else np.concatenate([np.asarray(x, float) for x in xfer], axis=1)
    start, end, _, _ = _fluid_ring(W, D, X, slots)
    if np.isnan(end).any():  # cannot happen for a ring; keep the engine safe anyway
        return [np.asarray(w, float) * max(1.0, G / slots) for w in work]
    dur = end - start
    return [dur[:, p * G:(p + 1) * G] for p in range(P)]


# ---- fitting -------------------------------------------------------------------------------------
def fit_line_nonneg(x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """``t ≈ a + b·x`` with a, b ≥ 0, minimising the squared *relative* error Σ((a + b·x − t)/t)².

    The 2-variable NNLS by its KKT cases: the unconstrained optimum if both are ≥ 0, else the best
    of the line through the origin (a = 0) and the constant (b = 0). One distinct x: through the
    origin (an intercept cannot be told from a slope with one size)."""
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    ok = t > 0
    x, t = x[ok], t[ok]
    if not len(t):
        return 0.0, 0.0
    w = 1.0 / t
    A = np.stack([w, x * w], axis=1)
    y = np.ones_like(t)

    def err(a, b):
        return float(np.sum((a * w + b * x * w - 1.0) ** 2))

    cands = []
    if len(np.unique(x)) >= 2:
        sol, *_ = np.linalg.lstsq(A, y, rcond=None)
        if sol[0] >= 0 and sol[1] >= 0:
            cands.append((float(sol[0]), float(sol[1])))
    sxx = float(np.sum((x * w) ** 2))
    if sxx > 0:
        cands.append((0.0, float(np.sum(x * w) / sxx)))
    if not cands or len(np.unique(x)) >= 2:
        cands.append((float(np.sum(w) / np.sum(w * w)), 0.0))
    return min(cands, key=lambda ab: err(*ab))


def _medians(x: np.ndarray, t: np.ndarray, q: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    xs = np.unique(x)
    return xs, np.array([np.quantile(t[x == v], q) for v in xs])


def fit_roofline(x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Robust ``(overhead_s, seconds_per_unit)``: the non-negative line through per-size medians."""
    xs, ts = _medians(np.asarray(x, float), np.asarray(t, float))
    return fit_line_nonneg(xs, ts)


class TableModel:
    """Piecewise-linear table over the per-size medians; proportional (t ∝ x) outside its range."""

    def __init__(self, xs, ts):
        o = np.argsort(xs)
        self.xs = np.asarray(xs, float)[o]
        self.ts = np.asarray(ts, float)[o]

    @classmethod
    def fit(cls, x, t) -> "TableModel":
        return cls(*_medians(np.asarray(x, float), np.asarray(t, float)))

    def __call__(self, x):
        x = np.asarray(x, dtype=np.float64)
        xs, ts = self.xs, self.ts
        if len(xs) == 1:
            return ts[0] * x / xs[0] if xs[0] > 0 else np.full_like(x, ts[0])
        y = np.interp(x, xs, ts)
        lo, hi = x < xs[0], x > xs[-1]
        y = np.where(lo, ts[0] * x / xs[0] if xs[0] > 0 else ts[0], y)
        y = np.where(hi, ts[-1] * x / xs[-1], y)
        return y


def _mape(pred, t) -> float:
    pred, t = np.asarray(pred, float), np.asarray(t, float)
    ok = t > 0
    return float(np.mean(np.abs(pred[ok] - t[ok]) / t[ok])) if ok.any() else float("nan")


def fit_power(x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """``t ≈ c · x^alpha`` through the per-size medians (least squares in log-log); one size:
    alpha = 1 (proportional). alpha is kept in [0.3, 1.5] (a kernel neither flat nor worse than
    x^1.5 in its work)."""
    xs, ts = _medians(np.asarray(x, float), np.asarray(t, float))
    ok = (xs > 0) & (ts > 0)
    xs, ts = xs[ok], ts[ok]
    if not len(xs):
        return 0.0, 1.0
    lx, lt = np.log(xs), np.log(ts)
    alpha = 1.0
    if len(xs) >= 2:
        alpha = float(np.clip(np.polyfit(lx, lt, 1)[0], 0.3, 1.5))
    c = float(np.exp(np.mean(lt - alpha * lx)))
    return c, alpha


def fit_rows(x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """``t ≈ a·√x + b·x`` with a, b ≥ 0 through the per-size medians (relative least squares):
    a per-row cost (√work ∝ the block's query rows for a given kind: loads, softmax statistics, the
    merge) plus a per-pair cost. Solved as the non-negative line ``t/√x = a + b·√x``, whose relative
    error is that of t; one size: proportional (a = 0)."""
    xs, ts = _medians(np.asarray(x, float), np.asarray(t, float))
    ok = xs > 0
    xs, ts = xs[ok], ts[ok]
    if not len(xs):
        return 0.0, 0.0
    r = np.sqrt(xs)
    return fit_line_nonneg(r, ts / r)


MODELS = ("rows", "power", "table", "roofline")  # preference order when the held-out scores tie


def _compare_models(x: np.ndarray, t: np.ndarray) -> dict:
    """Fit the four candidates; leave-one-size-out MAPE for each; keep the lowest.

    With exactly two sizes the held-out scores coincide (each candidate predicts a size from the
    other one alone, proportionally), and the tie goes to the rows model (``MODELS`` order): a
    kernel whose per-pair cost falls with block size (fixed per-row costs amortised) is followed by
    ``a·√x + b·x`` between and just beyond two sizes, where the affine line (overhead + slope)
    bends the wrong way below the smaller size and the table is proportional outside its range
    (on this project's CPU traces it interpolated better than the power law: reports/README.md)."""
    xs = np.unique(x)
    a, b = fit_roofline(x, t)
    c, al = fit_power(x, t)
    ra, rb = fit_rows(x, t)
    table = TableModel.fit(x, t)
    out = {"n_samples": int(len(t)), "n_sizes": int(len(xs)),
           "roofline": {"overhead_s": a, "seconds_per_pair": b},
           "rows": {"seconds_per_sqrt_pair": ra, "seconds_per_pair": rb},
           "power": {"coefficient_s": c, "exponent": al},
           "table": {"pairs": table.xs.tolist(), "seconds": table.ts.tolist()}}
    if len(xs) >= 2:
        pr, pt, pp, pw = np.empty_like(t), np.empty_like(t), np.empty_like(t), np.empty_like(t)
        for v in xs:
            held = x == v
            aa, bb = fit_roofline(x[~held], t[~held])
            pr[held] = aa + bb * x[held]
            pt[held] = TableModel.fit(x[~held], t[~held])(x[held])
            cc, aal = fit_power(x[~held], t[~held])
            pp[held] = cc * x[held] ** aal
            wa, wb = fit_rows(x[~held], t[~held])
            pw[held] = wa * np.sqrt(x[held]) + wb * x[held]
        out["roofline"]["mape_loo"] = _mape(pr, t)
        out["table"]["mape_loo"] = _mape(pt, t)
        out["power"]["mape_loo"] = _mape(pp, t)
        out["rows"]["mape_loo"] = _mape(pw, t)
        out["validation"] = "leave-one-size-out"
        out["chosen"] = min(MODELS, key=lambda m: (round(out[m]["mape_loo"], 9), MODELS.index(m)))
    else:  # one size: nothing to hold out; in-sample error, and the roofline is kept
        out["roofline"]["mape_loo"] = _mape(a + b * x, t)
        for m, pred in (("table", table(x)), ("power", c * x ** al), ("rows", ra * np.sqrt(x) + rb * x)):
            out[m]["mape_loo"] = _mape(pred, t) + 1e-12
        out["validation"] = "in-sample (one size only)"
        out["chosen"] = "roofline"
    out["roofline"]["mape_fit"] = _mape(a + b * x, t)
    out["table"]["mape_fit"] = _mape(table(x), t)
    out["power"]["mape_fit"] = _mape(c * x ** al, t)
    out["rows"]["mape_fit"] = _mape(ra * np.sqrt(x) + rb * x, t)
    out["mape"] = out[out["chosen"]]["mape_loo"]
    return out


def _predict(entry: dict, x: np.ndarray) -> np.ndarray:
    return _predict_shape(entry, x) * float(entry.get("level_scale", 1.0))


def _predict_shape(entry: dict, x: np.ndarray) -> np.ndarray:
    if entry["chosen"] == "table":
        return TableModel(entry["table"]["pairs"], entry["table"]["seconds"])(x)
    if entry["chosen"] == "rows":
        w = entry["rows"]
        x = np.asarray(x, float)
        return w["seconds_per_sqrt_pair"] * np.sqrt(np.maximum(x, 0.0)) + w["seconds_per_pair"] * x
    if entry["chosen"] == "power":
        p = entry["power"]
        return p["coefficient_s"] * np.asarray(x, float) ** p["exponent"]
    r = entry["roofline"]
    return r["overhead_s"] + r["seconds_per_pair"] * np.asarray(x, float)


def _hardware(meta: dict) -> dict:
    keys = ("device", "host", "cpu_model", "cpu_cores", "threads_per_rank", "gpu_model", "backend",
            "torch_version", "oversubscription")
    return {k: meta.get(k) for k in keys if meta.get(k) is not None}


def calibrate(runs: list[tuple[str, Timeline]]) -> dict:
    """Fit the calibration document (see the module docstring) from ``[(label, timeline)]``."""
    if not runs:
        raise InputError("no traces given; pass one or more measured traces")
    ref = None
    blocks, transfers, traces = [], [], []
    for label, tl in runs:
        meta = tl.meta  # simulated timelines are accepted too (tests, what-ifs); "source" is recorded
        G = int(meta.get("world_size") or (tl.df["rank"].max() + 1 if len(tl.df) else 0))
        wl = workload_from_meta(meta)
        fpp = float(wl.flops_per_pair()) if wl is not None else 1.0
        if ref is None:
            ref = {"flops_per_pair": fpp, "workload": meta.get("workload", {}), "dims_known": wl is not None}
        b = block_samples(tl)
        if not len(b) or not (b["pairs"] > 0).any():
            raise InputError(f"{label}: no compute rows with pairs > 0; calibration needs a measured ring "
                             "trace with compute intervals and their pairs (for Kineto traces give --run-config "
                             "schedule=... seq_len=... heads=... head_dim=...)")
        b["work"] = b["pairs"] * (fpp / ref["flops_per_pair"])
        b["load"] = trace_load(meta)
        slots = _slots(meta)
        tr = transfer_samples(tl)
        shared = b["load"].iloc[0] > 1.0 + 1e-9
        b["core_time_s"] = core_time_s(b, slots, tr) if shared else b["time_s"]
        b["gap_s"] = block_gaps_s(b, tr) if shared else 0.0
        tr["core_time_s"] = transfer_core_time_s(tr, b, slots) if shared else tr["time_s"]
        b["trace"] = label
        blocks.append(b)
        tr["link_class"] = trace_link_class(meta)
        tr["trace"] = label
        transfers.append(tr)
        traces.append({"path": label, "schedule": meta.get("schedule"), "world_size": G,
                       "seq_len": meta.get("seq_len"), "mask": meta.get("mask"), "phase": meta.get("phase"),
                       "source": meta.get("source", "measured"), "load": trace_load(meta),
                       "link_class": trace_link_class(meta), "hardware": _hardware(meta),
                       "iterations": int(b["iter"].max() + 1)})
    B = pd.concat(blocks, ignore_index=True)
    T = pd.concat(transfers, ignore_index=True)
    doc = {"format": FORMAT, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "block_time": "step start (first post) to end of compute + merge",
           "reference_workload": ref, "traces": traces, "hardware": traces[0]["hardware"]}

    # (a) compute: base fit on runs that are not oversubscribed (all runs if none is)
    base_mask = B["load"] <= 1.0 + 1e-9
    if not base_mask.any():
        base_mask = pd.Series(True, index=B.index)
    base = B[base_mask & (B["pairs"] > 0)]
    compute = _fit_compute(B[base_mask])
    if "fwd" not in compute and "bwd" not in compute:
        raise InputError("no compute rows with pairs > 0 in the given traces; nothing to calibrate")
    doc["compute"] = compute
    doc["compute_mape"] = _mape(_predict_blocks(compute, base), base["time_s"].to_numpy())
    doc["dispersion"] = {"model": "measured / fitted block time, quantiles 0, 5, …, 100 % per phase (ranks "
                                  "with a core of their own)", **_dispersion(base, compute, "time_s")}

    # (c1) core sharing: oversubscribed runs against the base model
    over = B[(B["load"] > 1.0 + 1e-9) & (B["pairs"] > 0)]
    cont = {"model": "factor = load^gamma, load = world_size × threads_per_rank / cpu_cores (CPU hosts only)",
            "applied": False, "gamma": 0.0}
    if len(over) and (~(B["load"] > 1.0 + 1e-9)).any():
        pred = _predict_blocks(compute, over)
        ratio = over["time_s"].to_numpy() / pred
        L = over["load"].to_numpy()
        ok = (ratio > 0) & np.isfinite(ratio)
        gamma = float(np.median(np.log(ratio[ok]) / np.log(L[ok]))) if ok.any() else 0.0
        gamma = max(gamma, 0.0)
        cont.update({"applied": gamma > 0, "gamma": gamma, "n_samples": int(len(over)),
                     "ratio_by_load": {f"{l:g}": float(np.median(ratio[L == l])) for l in np.unique(L)},
                     "mape_without": _mape(pred, over["time_s"]), "mape": _mape(pred * L ** gamma, over["time_s"]),
                     "cpu_cores": doc["hardware"].get("cpu_cores"),
                     "threads_per_rank": doc["hardware"].get("threads_per_rank", 1)})
    # per load level with data, its own fit in core-seconds (core_time_s: the measured block time
    # with the time-sharing taken out), turned back into block times by the processor-sharing ring
    # (share_cores) at prediction. A core-second is a core-second: the runs with a core per rank
    # measure the same quantity, so they join the fit (the level's runs alone often have other
    # block sizes). The fit follows the *mean* per size: ranks that time-share the cores finish
    # when the total work is done, so what a block costs on average is what counts.
    by_load = {}
    for L in sorted(set(B["load"]) - set(B[base_mask]["load"])):
        D = B[B["load"] == L]
        pool = pd.concat([B[base_mask].assign(core_time_s=B.loc[base_mask, "time_s"]), D], ignore_index=True)
        fit = _fit_compute(pool.assign(time_s=_group_mean(pool, "core_time_s", ["phase", "kind", "work"])))
        if fit:
            _scale_to_level(fit, D)
            fit["statistic"] = "mean core-seconds per (phase, kind, size); runs with a core per rank pooled in"
            # off-core time before a block that the ring's transfers do not explain (mean: the tail
            # of the scheduler is what costs)
            first = (D["step"] == 0) & (D["phase"] == "fwd")
            fit["gap_s"] = {"first": float(D.loc[first, "gap_s"].mean()) if first.any() else 0.0}
            for ph in ("fwd", "bwd"):
                m = ~first & (D["phase"] == ph)
                fit["gap_s"][ph] = float(D.loc[m, "gap_s"].mean()) if m.any() else 0.0
            # the CPU work of a loopback transfer (its copies), in core-seconds as core_time_s counts
            X = T[T["trace"].isin(set(D["trace"]))] if len(T) else T
            if len(X):
                xb, xc = X["bytes"].to_numpy(float), X["core_time_s"].to_numpy(float)
                xs = np.unique(xb)
                ts = np.array([xc[xb == v].mean() for v in xs])
                lat, inv_bw = fit_line_nonneg(xs, ts)
                fit["transfer"] = {"model": "core-seconds of a transfer = latency_s + bytes / bandwidth_Bps, "
                                            "fitted on the mean per message size",
                                   "latency_s": lat, "bandwidth_Bps": 1.0 / inv_bw if inv_bw > 0 else float("inf"),
                                   "message_bytes": xs.tolist(), "mean_core_s": ts.tolist(), "n_samples": int(len(X)),
                                   "mape": _mape(lat + xb * inv_bw, xc)}
            by_load[f"{L:g}"] = fit
    if by_load:
        cont["by_load"] = by_load
        cont["sharing"] = {"model": "processor sharing: blocks and loopback transfers in flight share slots = "
                                    "cpu_cores / threads_per_rank cores equally; by_load fits are core-seconds",
                           "slots": float(doc["hardware"].get("cpu_cores") or 1)
                           / float(doc["hardware"].get("threads_per_rank") or 1),
                           "max_world_size": SHARE_MAX_WORLD_SIZE}
        cont["model"] += ("; load levels with runs of their own (by_load) are fitted in core-seconds and "
                          "simulated by processor sharing (share_cores)")
    doc["contention"] = cont

    # (c2) compute slowed by the rank's own transfers in flight: measured, recorded, not applied
    res = base["time_s"].to_numpy() / _predict_blocks(compute, base) - 1.0
    ov = base["overlap"].to_numpy()
    slope = 0.0
    if len(ov) > 2 and np.ptp(ov) > 0.05:
        slope = float(np.polyfit(ov, res, 1)[0])
    doc["transfer_overlap"] = {"model": "relative compute slowdown per unit of block time overlapped by transfers",
                               "slope": slope, "applied": False, "n_samples": int(len(ov)),
                               "overlap_range": [float(ov.min()), float(ov.max())] if len(ov) else None}

    # (b) links: fitted on the runs that are not oversubscribed; a slower transfer on a shared host
    # is recorded as a per-load factor (applied when the ring size is known, see CalibratedCost)
    links = {}
    T_base = T[T["trace"].map(lambda lab: _load_of(traces, lab) <= 1.0 + 1e-9)] if len(T) else T
    if not len(T_base):
        T_base = T
    for cls, D in T_base.groupby("link_class") if len(T_base) else []:
        x, t = D["bytes"].to_numpy(), D["time_s"].to_numpy()
        xs, ts = _medians(x, t, 0.5)
        lat, inv_bw = fit_line_nonneg(xs, ts)
        bw = 1.0 / inv_bw if inv_bw > 0 else float("inf")
        entry = {"latency_s": lat, "bandwidth_Bps": bw, "n_samples": int(len(D)),
                 "message_bytes": xs.tolist(), "median_s": ts.tolist(), "statistic": "median per message size",
                 "mape": _mape(lat + x * inv_bw, t), "mape_of_medians": _mape(lat + xs * inv_bw, ts)}
        O = T[(T["link_class"] == cls) & T["trace"].map(lambda lab: _load_of(traces, lab) > 1.0 + 1e-9)]
        if len(O) and len(O) != len(D):
            loads = O["trace"].map(lambda lab: _load_of(traces, lab)).to_numpy()
            ratio = O["time_s"].to_numpy() / (lat + O["bytes"].to_numpy() * inv_bw)
            ok = (ratio > 0) & np.isfinite(ratio) & (loads > 1)
            g = max(float(np.median(np.log(ratio[ok]) / np.log(loads[ok]))), 0.0) if ok.any() else 0.0
            entry["contention"] = {"gamma": g, "ratio_by_load": {f"{l:g}": float(np.median(ratio[loads == l]))
                                                                 for l in np.unique(loads)},
                                   "mape": _mape((lat + O["bytes"].to_numpy() * inv_bw) * loads ** g, O["time_s"])}
        links[cls] = entry
    doc["links"] = links
    doc["trace_link_class"] = traces[0]["link_class"]
    return doc


DISPERSION_Q = np.linspace(0.0, 1.0, 21)


def _dispersion(D: pd.DataFrame, compute: dict, col: str) -> dict:
    """Per phase, the quantiles (0, 5, …, 100 %) of measured / fitted block time: how much one
    block varies around its kind's fit from block to block (rank to rank, iteration to iteration).
    Used to predict the *median over iterations* of a makespan that is a maximum over ranks
    (:meth:`CalibratedCost.with_dispersion`). Fitted on the runs with a core per rank and applied
    to them only: on an oversubscribed host the processor-sharing ring carries the variability as
    the measured off-core gaps."""
    out = {}
    for phase in ("fwd", "bwd"):
        P = D[(D["phase"] == phase) & (D["pairs"] > 0)]
        if not len(P) or phase not in compute:
            continue
        ratio = P[col].to_numpy() / _predict_blocks(compute, P)
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        if len(ratio) >= 10:
            out[phase] = np.quantile(ratio, DISPERSION_Q).tolist()
    return out


def _fit_compute(B: pd.DataFrame) -> dict:
    """phase → kind → model comparison (plus the pooled ``"*"`` and the ``"empty"`` constant)."""
    compute: dict = {}
    full = B[B["pairs"] > 0]
    for phase in ("fwd", "bwd"):
        P = full[full["phase"] == phase]
        if not len(P):
            continue
        compute[phase] = {"*": _compare_models(P["work"].to_numpy(), P["time_s"].to_numpy())}
        for kind in BLOCK_KINDS:
            K = P[P["kind"] == kind]
            if len(K):
                compute[phase][kind] = _compare_models(K["work"].to_numpy(), K["time_s"].to_numpy())
                _borrow_overhead(compute[phase][kind], compute[phase]["*"], K)
    E = B[B["pairs"] <= 0]
    for phase in ("fwd", "bwd"):
        K = E[E["phase"] == phase]
        if len(K) and phase in compute:
            med = float(K["time_s"].median())
            compute[phase]["empty"] = {"chosen": "constant", "seconds": med, "n_samples": int(len(K)),
                                       "mape": _mape(np.full(len(K), med), K["time_s"].to_numpy())}
    return compute


def _borrow_overhead(entry: dict, pooled: dict, K: pd.DataFrame) -> None:
    """A kind measured at one size cannot separate overhead from per-pair cost; when the phase's
    pooled fit (several sizes across kinds) has an overhead, take it (capped at 90 % of the kind's
    median time) and fit the slope through the kind's median — better than a line through the
    origin when the kernel has a large fixed cost."""
    if entry["n_sizes"] != 1 or pooled["n_sizes"] < 2 or pooled["roofline"]["overhead_s"] <= 0:
        return
    x = float(entry["table"]["pairs"][0])
    t = float(entry["table"]["seconds"][0])
    a = min(pooled["roofline"]["overhead_s"], 0.9 * t)
    b = (t - a) / x if x > 0 else 0.0
    xs, ts = K["work"].to_numpy(), K["time_s"].to_numpy()
    entry["roofline"].update({"overhead_s": a, "seconds_per_pair": b, "overhead_from": "pooled fit of the phase",
                              "mape_fit": _mape(a + b * xs, ts), "mape_loo": _mape(a + b * xs, ts)})
    entry["chosen"] = "roofline"
    entry["mape"] = entry["roofline"]["mape_loo"]


def _scale_to_level(fit: dict, D: pd.DataFrame) -> None:
    """Scale each (phase, kind) fit so that, over the level's own block sizes, it matches the
    level's mean core-seconds on average (geometric mean of the per-size ratios)."""
    P = D[D["pairs"] > 0]
    for phase, table in fit.items():
        for kind, entry in table.items():
            if kind == "empty" or not isinstance(entry, dict) or "chosen" not in entry:
                continue
            K = P[(P["phase"] == phase) & ((P["kind"] == kind) if kind != "*" else True)]
            if not len(K):
                continue
            m = K.groupby("work")["core_time_s"].mean()
            ratio = m.to_numpy() / _predict_shape(entry, m.index.to_numpy(float))
            ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
            if len(ratio):
                entry["level_scale"] = float(np.exp(np.mean(np.log(ratio))))


def _group_mean(D: pd.DataFrame, col: str, by: list[str]) -> pd.Series:
    """Every sample replaced by the mean of its group: the fits take per-size medians, so fed
    these they follow the per-size means."""
    return D.groupby(by)[col].transform("mean")


def _slots(meta: dict) -> float:
    """Single-thread rank slots of a CPU host: cores / threads per rank (≥ 1)."""
    try:
        return max(float(meta.get("cpu_cores") or 1) / float(meta.get("threads_per_rank") or 1), 1.0)
    except (TypeError, ValueError):
        return 1.0


def _load_of(traces: list[dict], label: str) -> float:
    return next((t["load"] for t in traces if t["path"] == label), 1.0)


def _predict_blocks(compute: dict, D: pd.DataFrame) -> np.ndarray:
    out = np.zeros(len(D))
    for i, (phase, kind, x) in enumerate(zip(D["phase"], D["kind"], D["work"])):
        out[i] = _entry_predict(compute, phase, kind, np.array([x]))[0]
    return out


def _entry_predict(compute: dict, phase: str, kind: str, x: np.ndarray) -> np.ndarray:
    scale = 1.0
    if phase not in compute:  # no data for this phase: the roofline's bwd/fwd constant
        other = "fwd" if phase == "bwd" else "bwd"
        scale = BWD_FLOPS_FACTOR if phase == "bwd" else 1.0 / BWD_FLOPS_FACTOR
        phase = other
    table = compute[phase]
    if kind == "empty":
        e = table.get("empty")
        return np.full(len(x), e["seconds"] * scale if e else 0.0)
    entry = table.get(kind) or table["*"]
    return _predict(entry, x) * scale


# ---- the cost model -----------------------------------------------------------------------------
class CalibratedCost(CostModel):
    """Compute times from a calibration file (see the module docstring), vectorised over a ring.

    ``compute_s``: per block, the fitted model of its (kind, phase) at ``work = pairs ×
    flops_per_pair / flops_per_pair_ref`` (per-pair cost scaled by B·H·(d_qk + d_v) relative to the
    fitted workload); when the calibration came from a CPU host and the ring would oversubscribe
    it, the fit measured at that load level (``contention.by_load``) if there is one, else the base
    fit × ``load^gamma``; ÷ the rank's speed factor (what-if stragglers). Empty blocks cost
    the measured per-step overhead of an empty step (0 if never measured).

    ``apply_to_topology``: links whose ``link_class`` has a fit get ``bandwidth_Bps`` = the fitted
    bandwidth and ``latency_s`` = the fitted per-hop latency divided by the number of links a ring
    hop crosses (so a hop's route latency is the fitted one). If the topology has none of the
    fitted classes, the fit of the traces' own class is applied to *all* links — a calibration
    from one machine then describes every link of the target, which is what validating a run on
    that machine needs.
    """

    name = "calibrated"

    def __init__(self, doc: dict, path: str | None = None, world_size: int | None = None,
                 run_phase: str | None = None, sample_seed: int | None = None):
        self.sample_seed = sample_seed  # when set: every block × a factor drawn from the dispersion
        self.doc = doc
        self.path = path
        self.world_size = world_size  # ring size, when known: enables the transfer core-sharing factor
        self.run_phase = run_phase  # "fwd" or "fwd+bwd" when known: which blocks share the cores
        self.compute = doc["compute"]
        self.ref_fpp = float(doc["reference_workload"]["flops_per_pair"])
        self.dims_known = bool(doc["reference_workload"].get("dims_known", True))
        self.links = doc.get("links", {})
        self.contention = doc.get("contention", {})

    def for_world_size(self, world_size: int, run_phase: str | None = None) -> "CalibratedCost":
        """The same model told the ring size, so transfers on a shared CPU host get their fitted
        core-sharing slowdown too (``apply_to_topology`` cannot see the ring size), and optionally
        the simulated phase (``"fwd+bwd"``: the forward blocks share the cores with the backward
        blocks of ranks that finished their forward ring early)."""
        return CalibratedCost(self.doc, self.path, world_size, run_phase, self.sample_seed)

    def with_dispersion(self, seed: int) -> "CalibratedCost":
        """The same model drawing every block's time from its fitted value × a factor sampled
        (seeded, per phase) from the measured block-to-block dispersion. One draw is one plausible
        iteration; the median makespan over draws predicts the median over measured iterations,
        which is a maximum over ranks and so lies above the makespan of median blocks."""
        return CalibratedCost(self.doc, self.path, self.world_size, self.run_phase, seed)

    def has_dispersion(self) -> bool:
        return any(p in (self.doc.get("dispersion") or {}) for p in ("fwd", "bwd"))

    def _draw(self, phase: str, shape) -> np.ndarray:
        q = (self.doc.get("dispersion") or {}).get(phase)
        if self.sample_seed is None or not q:
            return np.ones(shape)
        rng = np.random.default_rng([int(self.sample_seed), 0 if phase == "fwd" else 1])
        return np.interp(rng.random(shape), DISPERSION_Q, np.asarray(q, float))

    def _load(self, world_size: int) -> float:
        c = self.contention
        if not c.get("cpu_cores"):
            return 1.0
        return max(world_size * float(c.get("threads_per_rank") or 1) / float(c["cpu_cores"]), 1.0)

    def load_factor(self, world_size: int) -> float:
        c = self.contention
        if not c.get("applied"):
            return 1.0
        return float(self._load(world_size) ** c["gamma"])

    def compute_s(self, batch: BlockBatch) -> np.ndarray:
        fpp = float(batch.workload.flops_per_pair()) if self.dims_known else self.ref_fpp
        work = batch.pairs.astype(np.float64) * (fpp / self.ref_fpp)
        out = np.zeros(work.shape)
        kinds = np.asarray(batch.kinds)
        G = batch.plan.world_size
        level = (self.contention.get("by_load") or {}).get(f"{self._load(G):g}") if self._load(G) > 1 else None
        sharing = self.contention.get("sharing")
        if self._load(G) > 1 and sharing and G <= int(sharing.get("max_world_size", SHARE_MAX_WORLD_SIZE)):
            return self._shared(batch, level or self._nearest_level(self._load(G)), float(sharing["slots"]))
        for kind in np.unique(kinds):
            m = kinds == kind
            k = str(kind)
            if level is not None and batch.phase in level and (k in level[batch.phase] or k != "empty"):
                out[m] = _entry_predict(level, batch.phase, k, work[m])  # measured at this load
            else:
                out[m] = _entry_predict(self.compute, batch.phase, k, work[m]) * self.load_factor(G)
        if level is None:  # a core per rank (an oversubscribed ring's variability is in its gaps)
            out = out * self._draw(batch.phase, out.shape)
        return out / batch.speed_factors()

    def _nearest_level(self, load: float) -> dict:
        """For a load level without runs of its own, the measured level nearest to it (in log load):
        its fits are core-seconds, which do not depend on the load (the pooled runs with a core
        per rank show it), and it brings the transfer and off-core gap fits."""
        levels = self.contention.get("by_load") or {}
        if not levels:
            return self.compute
        return levels[min(levels, key=lambda k: (abs(math.log(float(k) / load)), float(k)))]

    def _core_s(self, batch: BlockBatch, fits: dict) -> np.ndarray:
        fpp = float(batch.workload.flops_per_pair()) if self.dims_known else self.ref_fpp
        work = batch.pairs.astype(np.float64) * (fpp / self.ref_fpp)
        out = np.zeros(work.shape)
        kinds = np.asarray(batch.kinds)
        for kind in np.unique(kinds):
            m = kinds == kind
            out[m] = _entry_predict(fits, batch.phase, str(kind), work[m])
        return out / batch.speed_factors()

    def _shared(self, batch: BlockBatch, fits: dict, slots: float) -> np.ndarray:
        """Block times of a ring that oversubscribes the host: core-seconds per block from ``fits``,
        then :func:`share_cores` over the forward ring (and the backward ring after it when the
        simulated phase is fwd+bwd, or when this batch is the backward one), with the ring's
        transfers as core-seconds too (``fits["transfer"]``, the engine's protocol: one KV shard
        forward, KV + dK/dV backward, at steps < G − 1)."""
        phases = ["fwd"]
        if batch.phase == "bwd" or self.run_phase == "fwd+bwd":
            phases.append("bwd")
        work = [self._core_s(batch if p == batch.phase else BlockBatch.build(batch.plan, batch.workload,
                                                                             batch.topology, p), fits)
                for p in phases]
        gaps = fits.get("gap_s") or {}
        delay = []
        for p, w in zip(phases, work):
            d = np.full(w.shape, float(gaps.get(p, 0.0)))
            if p == "fwd":
                d[:, 0] = float(gaps.get("first", 0.0))
            delay.append(d)
        xfer = None
        tf = fits.get("transfer")
        if tf:
            G = batch.plan.world_size
            shard = float(batch.workload.shard_bytes(batch.plan.tokens_per_rank))
            inv_bw = 1.0 / float(tf["bandwidth_Bps"]) if math.isfinite(float(tf["bandwidth_Bps"])) else 0.0
            xfer = []
            for p in phases:  # the engine's protocol: KV forward; KV + dK/dV backward (steps < G − 1)
                nbytes = shard * (2.0 if p == "bwd" else 1.0)
                x = np.zeros((G, G))
                x[:, :G - 1] = float(tf["latency_s"]) + nbytes * inv_bw
                xfer.append(x)
        return share_cores(work, slots, delay, xfer)[phases.index(batch.phase)]

    def apply_to_topology(self, topology: Topology) -> Topology:
        if not self.links:
            return topology
        classes = {l.link_class for l in topology.links}
        fitted = {c: f for c, f in self.links.items() if c in classes}
        fallback = None
        if not fitted:
            own = self.doc.get("trace_link_class")
            fallback = self.links.get(own) or next(iter(self.links.values()))
        hops = topology.ring_hops(topology.num_gpus) if topology.num_gpus > 1 else []

        def per_hop_links(cls):
            counts = [sum(1 for i in h["route"] if cls is None or topology.links[i].link_class == cls) for h in hops]
            counts = [c for c in counts if c > 0]
            return max(1, int(np.median(counts))) if counts else 1

        new = []
        for l in topology.links:
            f = fitted.get(l.link_class) if fitted else fallback
            if f is None:
                new.append(l)
                continue
            n = per_hop_links(l.link_class if fitted else None)
            bw = float(f["bandwidth_Bps"]) if math.isfinite(float(f["bandwidth_Bps"])) else 1e30
            slow = 1.0
            if self.world_size and f.get("contention") and self.contention.get("cpu_cores"):
                slow = self._load(self.world_size) ** f["contention"]["gamma"]
            new.append(replace(l, bandwidth_Bps=bw / slow, latency_s=f["latency_s"] * slow / n))
        return topology.with_links(new, "[calibrated]")

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "traces": [t["path"] for t in self.doc.get("traces", [])],
                "compute_mape": self.doc.get("compute_mape"),
                "contention_gamma": self.contention.get("gamma") if self.contention.get("applied") else None}


def load_calibration(path: str | os.PathLike) -> CalibratedCost:
    path = os.fspath(path)
    doc = read_json(path, "calibration file", f"create it with `ringsim calibrate TRACE... -o {path}`")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "compute" not in doc:
        raise InputError(f"{path} is not a ringsim calibration (format {FORMAT!r}); create one with `ringsim calibrate`")
    return CalibratedCost(doc, path)


def write_calibration(doc: dict, path: str) -> None:
    write_atomic(path, json.dumps(jsonable(doc), indent=2) + "\n")


