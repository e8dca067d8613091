"""Core sharing: ranks that time-share an oversubscribed CPU host, as processor sharing.

On a CPU host where ``world_size × threads_per_rank`` exceeds the cores, the ranks time-share them.
The model is *processor sharing*: every runnable thing — a rank inside a block (its compute), a
message in flight (a loopback transfer is memory copies made by the same cores) — gets an equal
share of the ``slots = cores / threads_per_rank`` cores, each progressing at ``min(1, slots / n)``
core-seconds per second when n things run; a rank that runs out of work hands its core to the
others, which is what makes a balanced schedule gain little on an oversubscribed host.

The calibration inverts the model on measured runs (:func:`core_time_s`,
:func:`transfer_core_time_s`: a block's or a message's time with the time-sharing taken out, from
how many were running at each instant) and the calibrated cost model runs it forward
(:func:`share_cores`) over the *program* of the configuration it predicts — the same program the
engines run — so the replay's steps, messages and waits are the protocol's own.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..program import FlatProgram

__all__ = ["core_time_s", "transfer_core_time_s", "block_gaps_s", "share_cores", "fluid_program", "start_skew_s"]


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


def block_gaps_s(blocks: pd.DataFrame, transfers: pd.DataFrame | None = None,
                 first_rows: dict | None = None) -> np.ndarray:
    """Per block, the time its rank spent outside blocks just before it: from the rank's previous
    block end (for its first block of an iteration: from the rank's first row of the iteration,
    ``first_rows[(rank, iter)]`` — the start skew before it is the release's, see
    :func:`start_skew_s` — or without them from the iteration's earliest block start) to
    this block's start — waits on a peer and being off the core, the time-sharing costs a
    processor-sharing ring does not see. With ``transfers`` (:func:`transfer_samples`), only what
    the transfers do not explain: the gap counts from the latest of the previous block's end, the
    completion of the transfers this rank took part in at the previous block's step (the ring's
    K/V), and the last completion before this block starts of any transfer of the rank (the
    all-to-alls and all-gathers of steps without a kernel in between): the wait on them is the
    program's, which :func:`share_cores` models."""
    b = blocks
    gap = np.zeros(len(b))
    if not len(b):
        return gap
    ends: dict = {}  # (rank, iteration) → sorted completion times of the rank's transfers
    done: dict = {}  # (rank, phase, step, iteration) → the last completion of the rank's transfers there
    if transfers is not None and len(transfers):
        for col in ("rank", "peer"):
            for (r, it), d in transfers.groupby([col, "iter"]):
                ends.setdefault((int(r), int(it)), []).append(d["end_s"].to_numpy(float))
        ends = {k: np.sort(np.concatenate(v)) for k, v in ends.items()}
        for r, p, ph, sp_, it_, e in zip(transfers["rank"], transfers["peer"], transfers["phase"],
                                         transfers["step"], transfers["iter"], transfers["end_s"]):
            for who in (int(r), int(p)):
                k = (who, str(ph), int(sp_), int(it_))
                done[k] = max(done.get(k, -np.inf), float(e))
    it0 = b.groupby("iter")["start_s"].transform("min").to_numpy()
    order = np.lexsort((b["start_s"].to_numpy(), b["rank"].to_numpy(), b["iter"].to_numpy()))
    st, en = b["start_s"].to_numpy(), b["end_s"].to_numpy()
    rk, it = b["rank"].to_numpy(), b["iter"].to_numpy()
    ph, sp = b["phase"].to_numpy(), b["step"].to_numpy()

    def last_end_before(i) -> float:
        """The last completion of any of the rank's transfers before block i starts (the
        all-to-alls and all-gathers of steps without a kernel in between)."""
        e = ends.get((int(rk[i]), int(it[i])))
        j = np.searchsorted(e, st[i], side="right") if e is not None else 0
        return float(e[j - 1]) if j else -np.inf

    prev = None
    for i in order:
        key = (int(rk[i]), int(it[i]))
        if prev is not None and rk[prev] == rk[i] and it[prev] == it[i]:
            ref = en[prev]
            if ph[prev] == ph[i]:  # the transfers of the previous block's step (a ring's K/V)
                ref = max(ref, done.get((int(rk[i]), str(ph[i]), int(sp[prev]), int(it[i])), -np.inf))
            gap[i] = max(st[i] - max(ref, last_end_before(i)), 0.0)
        elif first_rows is not None and key in first_rows:
            gap[i] = max(st[i] - max(first_rows[key], last_end_before(i)), 0.0)
        else:
            gap[i] = max(st[i] - it0[i], 0.0)
        prev = i
    return gap


def start_skew_s(tl) -> tuple[list[np.ndarray], dict]:
    """The ranks' start skew in a measured run: per timed iteration, each rank's first row (its
    first post, call or memory op) less the earliest rank's — ``[G]`` seconds, one array per
    iteration — and the first rows themselves, ``{(rank, iter): time}``. The ranks leave the
    iteration's barrier together (``rank_start_s`` in the trace's iterations); the skew is the
    iteration's prologue (allocations, a descheduled rank), before the program's first step, so a
    replay releases each rank's first step that much later (``release_s``)."""
    from .measured import assign_iterations

    df = tl.df
    if not len(df):
        return [], {}
    kinds = df["kind"].astype(str)
    rows = df[kinds.isin(["compute", "merge", "send", "recv"])]
    it = assign_iterations(df).loc[rows.index]
    G = int(tl.meta.get("world_size") or df["rank"].max() + 1)
    first = rows.groupby([rows["rank"], it])["start_s"].min()
    vectors = []
    for i, d in first.groupby(level=1):
        v = np.full(G, np.nan)
        v[d.index.get_level_values(0).to_numpy(int)] = d.to_numpy(float)
        if not np.isnan(v).any():
            vectors.append(v - v.min())
    return vectors, {(int(r), int(i)): float(t) for (r, i), t in first.items()}


def fluid_program(flat: FlatProgram, W: np.ndarray, D: np.ndarray, X: np.ndarray, slots: float,
                  release: np.ndarray | None = None):
    """The processor-sharing replay of a program: returns the blocks' ``[step, rank]`` start and
    end times and the messages' start and end times.

    Rank r starts its first step at ``release[r]`` (default 0) and runs its steps in order; its
    step n starts once step n−1 is done: its block (``W[n, r]`` core-seconds after an off-core delay
    ``D[n, r]``) and every message it waits for at step n−1. A message starts when both its ends
    have started the step that posts it (a rendezvous at the step's start) and takes ``X[m]``
    core-seconds. Everything runnable shares the cores equally."""
    G, N, M = flat.world_size, flat.N, flat.M
    rel = np.zeros(G) if release is None else np.asarray(release, float)
    from ..engines.des import csr

    ids = np.arange(M, dtype=np.int64)
    w_ptr, w_ids = csr(np.concatenate([flat.wait_step * G + flat.src, flat.wait_step * G + flat.dst]),
                       np.concatenate([ids, ids]), N * G)
    p_ptr, p_ids = csr(np.concatenate([flat.post_step * G + flat.src, flat.post_step * G + flat.dst]),
                       np.concatenate([ids, ids]), N * G)
    start = np.full((N, G), np.nan)
    end = np.full((N, G), np.nan)
    nxt = np.zeros(G, dtype=int)
    rem = np.zeros(G)
    wake = np.full(G, np.inf)  # sleeping (off-core) until
    active = np.zeros(G, dtype=bool)
    busy = np.zeros(G, dtype=bool)  # inside a block (sleeping or active)
    xrem = np.asarray(X, float).copy()
    xstate = np.zeros(M, dtype=np.int8)  # 0 not posted by both, 1 in flight, 2 done
    xstart = np.full(M, np.nan)
    xend = np.full(M, np.nan)
    src, dst, post = flat.src, flat.dst, flat.post_step
    t = 0.0
    tol = 1e-12 * max(float(W.max()) if W.size else 0.0, float(D.max()) if D.size else 0.0,
                      float(xrem.max()) if xrem.size else 0.0, 1e-30)

    def try_start(r):
        k = nxt[r]
        if k >= N or busy[r] or (k == 0 and rel[r] > t + tol):
            return False
        if k:
            i = (k - 1) * G + r
            if (xstate[w_ids[w_ptr[i]:w_ptr[i + 1]]] != 2).any():
                return False
        start[k, r] = t
        rem[r] = W[k, r]
        busy[r] = True
        if D[k, r] > 0:
            wake[r] = t + D[k, r]
        else:
            active[r] = True
        i = k * G + r
        for m in p_ids[p_ptr[i]:p_ptr[i + 1]]:  # the messages of this step this rank takes part in
            n = post[m]
            if xstate[m] == 0 and not np.isnan(start[n, src[m]]) and not np.isnan(start[n, dst[m]]):
                xstate[m] = 1 if xrem[m] > tol else 2
                xstart[m] = t
                if xstate[m] == 2:
                    xend[m] = t
        return True

    def start_all():
        changed = True
        while changed:
            changed = False
            for r in range(G):
                changed |= try_start(r)

    start_all()
    while busy.any() or (xstate == 1).any() or ((nxt == 0) & (rel > t + tol)).any():
        idx = np.flatnonzero(active)
        xi = np.flatnonzero(xstate == 1)
        n = len(idx) + len(xi)
        rate = min(1.0, slots / n) if n else 0.0
        rems = np.concatenate([rem[idx], xrem[xi]])
        t_done = t + float(rems.min()) / rate if n else np.inf
        waiting = (nxt == 0) & (rel > t + tol)  # ranks not yet released
        t_wake = min(float(wake.min()), float(rel[waiting].min()) if waiting.any() else np.inf)
        t_next = min(t_done, t_wake)
        if n:
            j = int(np.argmin(rems))
            rem[idx] -= (t_next - t) * rate
            xrem[xi] -= (t_next - t) * rate
            if t_next == t_done:
                if j < len(idx):
                    rem[idx[j]] = 0.0
                else:
                    xrem[xi[j - len(idx)]] = 0.0
        t = t_next
        for r in np.flatnonzero(wake <= t + tol):
            wake[r] = np.inf
            active[r] = True
        fin = xi[xrem[xi] <= tol]
        xstate[fin] = 2
        xend[fin] = t
        for r in idx[rem[idx] <= tol]:
            end[nxt[r], r] = t
            active[r] = False
            busy[r] = False
            nxt[r] += 1
        start_all()
    return start, end, xstart, xend


def share_cores(flat: FlatProgram, work: np.ndarray, slots: float, delay: np.ndarray | None = None,
                xfer: np.ndarray | None = None, release: np.ndarray | None = None) -> np.ndarray:
    """Block durations ``[step, rank]`` when the program's single-thread ranks time-share ``slots``
    cores (the inverse of :func:`core_time_s`): :func:`fluid_program` with ``work`` core-seconds per
    block, optional off-core ``delay`` seconds at each block's start (part of its duration, using
    no core) and ``xfer`` core-seconds per message (0 or absent: a message completes as soon as
    both ends have posted). A block's duration runs from its start (its delay included) to its
    end; the wait for the step's messages is the engine's to model (its own transfers on links).
    ``release`` (``[G]``): when each rank starts its first step (give the engine the same)."""
    W = np.asarray(work, float)
    D = np.zeros_like(W) if delay is None else np.asarray(delay, float)
    X = np.zeros(flat.M) if xfer is None else np.asarray(xfer, float)
    start, end, _, _ = fluid_program(flat, W, D, X, slots, release)
    if np.isnan(end).any():  # cannot happen for a valid program; keep the engine safe anyway
        return W * max(1.0, flat.world_size / slots)
    return end - start
