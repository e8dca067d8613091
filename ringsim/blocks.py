"""Blocks and the kernel calls that compute them (numpy only: shared by the plan, the program and
the torch runtime).

A ring step gives rank r a *block*: its queries against the key/value shard it holds. The block's
mask comes from global token positions: query q may see key k iff ``lo ≤ q − k ≤ hi``
(:meth:`ringsim.schedules.Mask.bounds`). :func:`block_plan` reduces that mask to what one kernel
call computes: the rows and columns that hold any allowed pair (a trimmed sub-block) and whether
the sub-block is ``full`` (every pair allowed), ``causal`` (a lower triangle including the diagonal,
aligned to the bottom-right corner: of ``q_rows ≤ k_rows``, row i sees the first
``k_rows − q_rows + i + 1`` columns — what FlashAttention ≥ 2.1 computes for a causal call, and the
plain triangle when the call is square), ``masked`` (anything else: an explicit boolean mask) or
``empty`` (no allowed pair: no call). A bottom-right causal call is what a rank makes when it runs
a chunk of queries against every key up to the chunk's end (all-gather context parallelism).

Trimming is what makes zigzag and striped cheap without special cases: a zigzag off-diagonal block
is half full and half empty, so only the full half runs (N × N/2 or N/2 × N, as
ring-flash-attention runs it); a striped block whose shard comes from a later rank is a lower
triangle shifted by one row and column, which trimming turns into an exact (N−1) × (N−1) causal call.

:class:`CallShapes` is a table of distinct calls (a ring of G ranks meets only a handful of
distinct block geometries), indexed by the program's kernel ops.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BlockPlan", "block_plan", "CallShapes", "KIND_CODES", "KIND_NAMES", "causal_tiles", "call_tiles"]

KIND_NAMES = ("empty", "full", "causal", "masked")
KIND_CODES = {name: i for i, name in enumerate(KIND_NAMES)}


@dataclass(frozen=True)
class BlockPlan:
    """What a kernel runs for one (queries × held keys) block.

    Rows ``[r0, r1)`` and columns ``[c0, c1)`` (local indices) bound every allowed pair;
    ``kind`` is ``full``, ``causal``, ``masked`` or ``empty``; ``pairs`` the exact count of allowed
    pairs. For ``masked`` calls ``lo``/``hi`` hold each trimmed row's allowed columns ``[lo, hi)``
    (relative to ``c0``), from which :attr:`mask` (bool, rows × cols) is made on demand — a dense
    mask of a 128K-token block would be 16 GB, the intervals are a few hundred KB.
    """

    kind: str
    r0: int = 0
    r1: int = 0
    c0: int = 0
    c1: int = 0
    pairs: int = 0
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    @property
    def rows(self) -> slice:
        return slice(self.r0, self.r1)

    @property
    def cols(self) -> slice:
        return slice(self.c0, self.c1)

    @property
    def mask(self) -> np.ndarray | None:
        if self.kind != "masked":
            return None
        cols = np.arange(self.c1 - self.c0)
        return (cols[None, :] >= self.lo[:, None]) & (cols[None, :] < self.hi[:, None])


def _row_intervals(q_pos: np.ndarray, k_pos: np.ndarray, lo: int, hi: int):
    """For increasing key positions, the allowed keys of each query form one index interval [a, b)."""
    a = np.searchsorted(k_pos, q_pos - hi, side="left")
    b = np.searchsorted(k_pos, q_pos - lo, side="right")
    return a, np.maximum(b, a)


def block_plan(q_pos, k_pos, lo: int, hi: int, doc_bounds=None) -> BlockPlan:
    """Classify the block of queries at global positions ``q_pos`` against keys at ``k_pos``
    under the band ``lo ≤ q − k ≤ hi``. Key positions must be increasing (every layout's local
    order is); query positions may be in any order.

    ``doc_bounds`` (packed documents): ``(start, end)`` arrays aligned with ``q_pos`` — the
    positions ``[start, end)`` of each query's document (``end <= start`` for a padding token,
    which sees nothing). A query then sees only keys of its own document, which keeps its allowed
    keys one interval (keys increase, a document is a range of positions)."""
    q_pos = np.asarray(q_pos, dtype=np.int64)
    k_pos = np.asarray(k_pos, dtype=np.int64)
    if len(k_pos) > 1 and np.any(np.diff(k_pos) <= 0):
        raise ValueError("block_plan needs strictly increasing key positions")
    if doc_bounds is None:
        a, b = _row_intervals(q_pos, k_pos, lo, hi)
    else:
        first = np.maximum(q_pos - hi, doc_bounds[0])
        last = np.minimum(q_pos - lo, doc_bounds[1] - 1)
        a = np.searchsorted(k_pos, first, side="left")
        b = np.maximum(np.searchsorted(k_pos, last, side="right"), a)
    count = b - a
    pairs = int(count.sum())
    if pairs == 0:
        return BlockPlan("empty")
    live = np.nonzero(count > 0)[0]
    r0, r1 = int(live[0]), int(live[-1]) + 1
    c0, c1 = int(a[live].min()), int(b[live].max())
    a_t, b_t = a[r0:r1], b[r0:r1]
    nr, nc = r1 - r0, c1 - c0
    if pairs == nr * nc:
        return BlockPlan("full", r0, r1, c0, c1, pairs)
    if nr <= nc and np.all(a_t == c0) and np.all(b_t == c0 + (nc - nr) + np.arange(1, nr + 1)):
        return BlockPlan("causal", r0, r1, c0, c1, pairs)
    return BlockPlan("masked", r0, r1, c0, c1, pairs, (a_t - c0).astype(np.int64), (b_t - c0).astype(np.int64))


def causal_tiles(n: np.ndarray, tile_q: int, tile_k: int, k_rows: np.ndarray | None = None) -> np.ndarray:
    """Tiles (tile_q × tile_k, aligned to the call's origin) of a causal call of n query rows and
    ``k_rows`` ≥ n key rows (default n: a square) that hold an allowed pair. The triangle is aligned
    bottom-right (``off = k_rows − n`` columns every row sees): tile row i covers rows
    [i·tq, min((i+1)·tq, n)) whose last row reaches column off + min((i+1)·tq, n) − 1, so it
    touches ⌈(off + min((i+1)·tq, n)) / tk⌉ column tiles. Vectorised over n."""
    n = np.asarray(n, dtype=np.int64)
    off = np.zeros(n.shape, dtype=np.int64) if k_rows is None else np.asarray(k_rows, dtype=np.int64) - n
    rows = -(-n // tile_q)
    R = int(rows.max(initial=0))
    if R == 0:
        return np.zeros(n.shape, dtype=np.int64)
    i = np.arange(R, dtype=np.int64).reshape((R,) + (1,) * n.ndim)
    reach = off[None] + np.minimum((i + 1) * tile_q, n[None])
    return np.where(i < rows[None], -(-reach // tile_k), 0).sum(axis=0).astype(np.int64)


def call_tiles(kind: str, q_rows: int, k_rows: int, block: "BlockPlan | None", tile_q: int, tile_k: int) -> int:
    """Non-empty tiles of one call, tiles aligned to the call's origin (its first row and column);
    a masked call's from its rows' allowed column intervals (a difference array per tile row)."""
    if kind == "empty" or q_rows == 0 or k_rows == 0:
        return 0
    if kind == "full":
        return int(-(-q_rows // tile_q) * -(-k_rows // tile_k))
    if kind == "causal":
        return int(causal_tiles(np.array([q_rows]), tile_q, tile_k, np.array([k_rows]))[0])
    lo, hi = np.asarray(block.lo), np.asarray(block.hi)
    live = hi > lo
    rows = np.arange(q_rows)[live] // tile_q
    first, last = lo[live] // tile_k, (hi[live] - 1) // tile_k
    n_rows, n_cols = -(-q_rows // tile_q), -(-k_rows // tile_k)
    diff = np.zeros((n_rows, n_cols + 1), dtype=np.int64)
    np.add.at(diff, (rows, first), 1)
    np.add.at(diff, (rows, last + 1), -1)
    return int((np.cumsum(diff, axis=1)[:, :n_cols] > 0).sum())


class CallShapes:
    """A table of distinct kernel calls: per entry u the call's first local query row and row
    count, first row and row count of the held K/V buffer, kind code (:data:`KIND_NAMES`) and
    exact pairs; :meth:`block` gives entry u's :class:`BlockPlan` (with its mask for ``masked``
    calls) — what the runtime runs.

    Built from a list of blocks (exact), or from arrays with a function that makes a block on
    demand (``from_arrays``: packed documents at scale, where every (rank, step) is its own entry
    and only the runtime's own blocks are ever made)."""

    def __init__(self, blocks: list | None = None):
        self._blocks = list(blocks) if blocks is not None else None
        self._block_fn = None
        self.exact = True
        if blocks is not None:
            b = blocks
            self.q_start = np.array([x.r0 for x in b], dtype=np.int64)
            self.q_rows = np.array([x.r1 - x.r0 for x in b], dtype=np.int64)
            self.k_start = np.array([x.c0 for x in b], dtype=np.int64)
            self.k_rows = np.array([x.c1 - x.c0 for x in b], dtype=np.int64)
            self.kind = np.array([KIND_CODES[x.kind] for x in b], dtype=np.int8)
            self.pairs = np.array([x.pairs for x in b], dtype=np.int64)

    @classmethod
    def from_arrays(cls, q_start, q_rows, k_start, k_rows, kind, pairs, block_fn, exact: bool = False) -> "CallShapes":
        """A table from arrays; ``block_fn(u)`` makes entry u's BlockPlan when asked. ``exact``:
        whether the arrays are the trimmed calls (else each entry is its whole block, untrimmed)."""
        t = cls(None)
        t.q_start, t.q_rows = np.asarray(q_start, np.int64), np.asarray(q_rows, np.int64)
        t.k_start, t.k_rows = np.asarray(k_start, np.int64), np.asarray(k_rows, np.int64)
        t.kind, t.pairs = np.asarray(kind, np.int8), np.asarray(pairs, np.int64)
        t._block_fn = block_fn
        t.exact = exact
        return t

    def __len__(self) -> int:
        return len(self.pairs)

    def block(self, u: int) -> BlockPlan:
        if self._blocks is not None:
            return self._blocks[u]
        return self._block_fn(int(u))

    @property
    def blocks(self) -> list:
        return self._blocks if self._blocks is not None else [self.block(u) for u in range(len(self))]

    def tiles(self, tile_q: int, tile_k: int) -> np.ndarray | None:
        """Non-empty tiles of each entry's call (see :func:`call_tiles`); None when the table is
        not exact (untrimmed blocks: the cost models then charge the exact pairs)."""
        if not self.exact:
            return None
        return np.array([call_tiles(x.kind, x.r1 - x.r0, x.c1 - x.c0, x, tile_q, tile_k) for x in self.blocks],
                        dtype=np.int64)
