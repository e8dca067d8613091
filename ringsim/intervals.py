"""Per-rank interval sets, vectorised over every rank at once.

Times of rank r are shifted by ``r × span`` (``span`` larger than any time), so the intervals of
all ranks lie on one sorted line and never mix: one sort and one running maximum merge them all.
"""
from __future__ import annotations

import numpy as np

__all__ = ["merged_per_rank", "coverage"]


def merged_per_rank(rank: np.ndarray, start: np.ndarray, end: np.ndarray, G: int, span: float):
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


def coverage(rank: np.ndarray, start: np.ndarray, end: np.ndarray, G: int, span: float):
    """``covered(r, a, b)``: for arrays of ranks and times, how long rank r's intervals (their
    union) cover [a, b] — the union's measure up to b less its measure up to a. Sums run per rank
    on the given times, so a rank's figures do not depend on the others'."""
    m_rank, m_start, m_end = merged_per_rank(rank, start, end, G, span)
    length = m_end - m_start
    before = np.zeros(len(length))
    bounds = np.searchsorted(m_rank, np.arange(G + 1))
    for r in range(G):  # each rank's running total on its own
        i, j = bounds[r], bounds[r + 1]
        if j > i:
            before[i + 1:j] = np.cumsum(length[i:j - 1])
    key = m_start + m_rank * span

    def upto(r, t):
        k = np.searchsorted(key, t + r * span, side="right") - 1
        kk = np.maximum(k, 0)
        mine = (k >= 0) & (m_rank[kk] == r)
        return np.where(mine, before[kk] + np.clip(t - m_start[kk], 0.0, length[kk]), 0.0)

    def covered(r, a, b):
        r = np.asarray(r)
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if not len(key):
            return np.zeros(np.broadcast(r, a, b).shape)
        return upto(r, b) - upto(r, a)

    return covered
