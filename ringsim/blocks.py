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

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BlockPlan", "block_plan", "CallShapes", "KIND_CODES", "KIND_NAMES", "causal_tiles", "call_tiles"]

KIND_NAMES = ("empty", "full", "causal", "masked")
KIND_CODES = {name: i for i, name in enumerate(KIND_NAMES)}


@dataclass(frozen=True)
class BlockPlan:
    """What a kernel runs for one (queries × held keys) block.

    Rows ``[r0, r1)`` and columns ``[c0, c1)`` (local indices) bound every allowed pair;
    ``kind`` is ``full``, ``causal``, ``masked`` or ``empty``; ``mask`` (bool, rows × cols of the
    trimmed block) only for ``masked``; ``pairs`` the exact count of allowed pairs.
    """

    kind: str
    r0: int = 0
    r1: int = 0
    c0: int = 0
    c1: int = 0
    pairs: int = 0
    mask: np.ndarray | None = None

    @property
    def rows(self) -> slice:
        return slice(self.r0, self.r1)

    @property
    def cols(self) -> slice:
        return slice(self.c0, self.c1)


def _row_intervals(q_pos: np.ndarray, k_pos: np.ndarray, lo: int, hi: int):
    """For increasing key positions, the allowed keys of each query form one index interval [a, b)."""
    a = np.searchsorted(k_pos, q_pos - hi, side="left")
    b = np.searchsorted(k_pos, q_pos - lo, side="right")
    return a, np.maximum(b, a)


def block_plan(q_pos, k_pos, lo: int, hi: int) -> BlockPlan:
    """Classify the block of queries at global positions ``q_pos`` against keys at ``k_pos``
    under the band ``lo ≤ q − k ≤ hi``. Key positions must be increasing (every layout's local
    order is); query positions may be in any order."""
    q_pos = np.asarray(q_pos, dtype=np.int64)
    k_pos = np.asarray(k_pos, dtype=np.int64)
    if len(k_pos) > 1 and np.any(np.diff(k_pos) <= 0):
        raise ValueError("block_plan needs strictly increasing key positions")
    a, b = _row_intervals(q_pos, k_pos, lo, hi)
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
    cols = np.arange(c0, c1)
    mask = (cols[None, :] >= a_t[:, None]) & (cols[None, :] < b_t[:, None])
    return BlockPlan("masked", r0, r1, c0, c1, pairs, mask)


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


def call_tiles(kind: str, q_rows: int, k_rows: int, mask: np.ndarray | None, tile_q: int, tile_k: int) -> int:
    """Non-empty tiles of one call, tiles aligned to the call's origin (its first row and column)."""
    if kind == "empty" or q_rows == 0 or k_rows == 0:
        return 0
    if kind == "full":
        return int(-(-q_rows // tile_q) * -(-k_rows // tile_k))
    if kind == "causal":
        return int(causal_tiles(np.array([q_rows]), tile_q, tile_k, np.array([k_rows]))[0])
    rows = -(-q_rows // tile_q)
    cols = -(-k_rows // tile_k)
    pad = np.zeros((rows * tile_q, cols * tile_k), dtype=bool)
    pad[:q_rows, :k_rows] = mask
    return int(pad.reshape(rows, tile_q, cols, tile_k).any(axis=(1, 3)).sum())


@dataclass
class CallShapes:
    """A table of distinct kernel calls: per entry u the call's first local query row and row
    count, first row and row count of the held K/V buffer, kind code (:data:`KIND_NAMES`), exact
    pairs, and (for ``masked`` calls) the explicit mask, made on demand from ``blocks[u]``."""

    blocks: list[BlockPlan]
    q_start: np.ndarray = field(init=False)
    q_rows: np.ndarray = field(init=False)
    k_start: np.ndarray = field(init=False)
    k_rows: np.ndarray = field(init=False)
    kind: np.ndarray = field(init=False)
    pairs: np.ndarray = field(init=False)

    def __post_init__(self):
        b = self.blocks
        self.q_start = np.array([x.r0 for x in b], dtype=np.int64)
        self.q_rows = np.array([x.r1 - x.r0 for x in b], dtype=np.int64)
        self.k_start = np.array([x.c0 for x in b], dtype=np.int64)
        self.k_rows = np.array([x.c1 - x.c0 for x in b], dtype=np.int64)
        self.kind = np.array([KIND_CODES[x.kind] for x in b], dtype=np.int8)
        self.pairs = np.array([x.pairs for x in b], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.blocks)

    def tiles(self, tile_q: int, tile_k: int) -> np.ndarray:
        """Non-empty tiles of each entry's call (see :func:`call_tiles`)."""
        return np.array([call_tiles(x.kind, x.r1 - x.r0, x.c1 - x.c0, x.mask, tile_q, tile_k) for x in self.blocks],
                        dtype=np.int64)
