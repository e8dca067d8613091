"""Token partitions (schedules), masks and exact work accounting — the plan (DESIGN.md §3.1).

Vocabulary:

- A **rank** owns a set of query tokens and, initially, the key/value **shard** of the same tokens.
- At ring **step** ``s`` (0 ≤ s < G) rank ``r`` holds the shard owned by rank ``(r − s) mod G``.
- ``pairs(r, s)`` is the number of (query, key) token pairs the mask allows between rank r's
  queries and the shard it holds at step s. Summed over all ranks and steps it is T² (full) or
  T(T+1)/2 (causal).

Each rank's tokens are a few **segments**: arithmetic progressions ``start + stride·i`` (i < count)
laid out one after another in the rank's local order. Contiguous has one segment of stride 1,
zigzag two (chunks r and 2G−1−r), striped one of stride G. Counting allowed pairs between two
progressions of the same stride reduces to counting lattice points in a band of a rectangle, which
has a closed form — so no T×T mask is ever built, and T can be millions.

Masks, by the allowed distance d = q − k between query position q and key position k:
``full`` (any d), ``causal`` (d ≥ 0), ``sliding:W`` (0 ≤ d < W: the query and the W−1 keys before it).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .units import InputError

__all__ = ["Mask", "Segment", "Plan", "SCHEDULES", "parse_mask", "make_plan"]

SCHEDULES = ("contiguous", "striped", "zigzag")


@dataclass(frozen=True)
class Mask:
    """An attention mask as a band of allowed distances d = q − k (``lo ≤ d ≤ hi``)."""

    kind: str  # full | causal | sliding
    window: int = 0

    def bounds(self, seq_len: int) -> tuple[int, int]:
        if self.kind == "full":
            return -seq_len, seq_len
        if self.kind == "causal":
            return 0, seq_len
        return 0, self.window - 1

    def __str__(self) -> str:
        return f"sliding:{self.window}" if self.kind == "sliding" else self.kind


def parse_mask(text: str | Mask) -> Mask:
    if isinstance(text, Mask):
        return text
    t = str(text).strip().lower()
    if t in ("full", "causal"):
        return Mask(t)
    if t.startswith("sliding:") or t.startswith("sliding="):
        from .units import parse_seq_len

        w = parse_seq_len(t.split(":", 1)[-1].split("=", 1)[-1], "sliding window")
        return Mask("sliding", w)
    raise InputError(f"unknown mask {text!r}; use full, causal or sliding:W (e.g. sliding:4096)")


@dataclass(frozen=True)
class Segment:
    """Tokens ``start + stride·i`` for i < ``count``, at local positions ``offset … offset+count−1``."""

    start: int
    stride: int
    count: int
    offset: int


def _n_le(n, m, d):
    """#{(i, j): 0 ≤ i < n, 0 ≤ j < m, i − j ≤ d}, elementwise over int64 arrays.

    For each i the allowed j are [max(0, i−d), m): clamp(m + d − i, 0, m) of them. Summing
    clamp(x, 0, m) for x from c−n+1 to c (c = m + d) gives P(c) − P(c−n) with
    P(X) = Σ_{x=1..X} clamp(x, 0, m).
    """
    c = m + d

    def prefix(x):
        x = np.maximum(x, 0)
        small = np.minimum(x, m)
        return small * (small + 1) // 2 + np.maximum(x - m, 0) * m

    return prefix(c) - prefix(c - n)


def _band_index_bounds(delta, stride, lo, hi):
    """For progressions q = a + s·i, k = b + s·j with delta = a − b, the allowed band lo ≤ q − k ≤ hi
    in index space is L ≤ i − j ≤ H with L = ceil((lo − delta)/s), H = floor((hi − delta)/s)."""
    L = -((delta - lo) // stride)  # ceil((lo - delta) / s)
    H = (hi - delta) // stride
    return L, H


class Plan:
    """The partition of T tokens over G ranks and everything one ring of it does.

    The program builders (:mod:`ringsim.strategies`) take the partition, the step → shard map and
    the exact work from here, so a prediction and a measurement are comparable step by step.

    A plan is made for a named layout (``contiguous``, ``striped``, ``zigzag``) or, with
    :meth:`from_tokens`, for any layout given as every rank's token positions. Work is counted in
    closed form when every rank's tokens are the same number of segments of the same sizes and
    local offsets, all of one stride (every named layout is); any other layout is counted exactly
    block by block (``O(G·T·log)``, refused past :data:`MAX_BLOCKWISE_COMPARISONS`). No layout is
    ever counted approximately.
    """

    def __init__(self, schedule: str, world_size: int, seq_len: int, mask: Mask | str = "causal",
                 tokens: list | None = None):
        schedule = str(schedule).strip().lower()
        if world_size <= 0:
            raise InputError(f"world size must be positive, got {world_size}")
        from .limits import MAX_SEQ_LEN, RANKS

        RANKS.check(int(world_size), f"world size {world_size}", "use a smaller --world-size")
        if not 0 < int(seq_len) <= MAX_SEQ_LEN:
            raise InputError(f"sequence length must be in [1, {MAX_SEQ_LEN:,}], got {seq_len}; give a shorter one")
        self.world_size = G = int(world_size)
        self.seq_len = T = int(seq_len)
        if T <= 0:
            raise InputError(f"sequence length must be positive, got {T}")
        self.mask = parse_mask(mask)
        self.schedule = schedule
        self._custom: list[np.ndarray] | None = None
        if tokens is not None:
            self._custom = _check_tokens(tokens, G, T, schedule)
            self.tokens_per_rank = T // G
            return
        if schedule not in SCHEDULES:
            raise InputError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
        unit = 2 * G if schedule == "zigzag" else G
        if T % unit:
            lower, upper = (T // unit) * unit, (T // unit + 1) * unit
            near = f"{lower} or {upper}" if lower > 0 else f"{upper}"
            why = f"2×world size = {unit}" if schedule == "zigzag" else f"world size {G}"
            raise InputError(
                f"sequence length {T} is not divisible by {why} for {schedule}; nearest valid lengths: {near}"
            )
        self.tokens_per_rank = T // G

    @classmethod
    def from_tokens(cls, world_size: int, seq_len: int, tokens: list, mask: Mask | str = "causal",
                    name: str = "custom") -> "Plan":
        """A plan for any layout: ``tokens[r]`` = the global positions rank r owns (every position
        once, the same number per rank; kept in increasing order, the local order of every layout)."""
        return cls(name, world_size, seq_len, mask, tokens=tokens)

    # ---- partition -------------------------------------------------------------------------
    def segments(self, rank: int) -> list[Segment]:
        G, T, r = self.world_size, self.seq_len, rank
        if self._custom is not None:
            return _segments_of(self._custom[r])
        if self.schedule == "contiguous":
            c = T // G
            return [Segment(r * c, 1, c, 0)]
        if self.schedule == "striped":
            return [Segment(r, G, T // G, 0)]
        c = T // (2 * G)
        return [Segment(r * c, 1, c, 0), Segment((2 * G - 1 - r) * c, 1, c, c)]

    def tokens(self, rank: int) -> np.ndarray:
        """Global positions of rank's tokens, in the rank's local order."""
        if self._custom is not None:
            return self._custom[rank]
        return np.concatenate([s.start + s.stride * np.arange(s.count, dtype=np.int64)
                               for s in self.segments(rank)])

    @cached_property
    def permutation(self) -> np.ndarray:
        """``perm[p]`` = global token at position p of the sharded layout (rank 0's tokens, then 1's…)."""
        return np.concatenate([self.tokens(r) for r in range(self.world_size)])

    def shard(self, x: np.ndarray, axis: int = 0) -> list[np.ndarray]:
        """Split a sequence-major array into the G ranks' local arrays (local order)."""
        return [np.take(x, self.tokens(r), axis=axis) for r in range(self.world_size)]

    def unshard(self, parts, axis: int = 0) -> np.ndarray:
        """Inverse of :meth:`shard`: put the ranks' local arrays back in global order."""
        cat = np.concatenate(list(parts), axis=axis)
        inv = np.empty_like(self.permutation)
        inv[self.permutation] = np.arange(self.seq_len)
        return np.take(cat, inv, axis=axis)

    def shard_owner(self, rank: int, step: int) -> int:
        return (rank - step) % self.world_size

    # ---- exact work --------------------------------------------------------------------------
    @cached_property
    def closed_form(self) -> bool:
        """Whether the closed-form counting applies: every rank's tokens are the same number of
        segments with the same counts and local offsets, and all segments share one stride (a
        single-token segment fits any stride). Every named layout qualifies."""
        segs = [self.segments(r) for r in range(self.world_size)]
        shape = [(x.count, x.offset) for x in segs[0]]
        strides = {x.stride for row in segs for x in row if x.count > 1}
        return len(strides) <= 1 and all([(x.count, x.offset) for x in row] == shape for row in segs)

    def _check_blockwise(self) -> None:
        """Refuse a layout outside the closed form whose block-by-block count would be too long."""
        G, n = self.world_size, self.tokens_per_rank
        work = G * G * n
        if work > MAX_BLOCKWISE_COMPARISONS:
            raise InputError(
                f"layout {self.schedule!r} is not {G} ranks of equal segments of one stride, so its work is "
                f"counted block by block: {G}×{G} blocks of {n} tokens is {work:.3g} token lookups, above the "
                f"limit of {MAX_BLOCKWISE_COMPARISONS:.0e}; use fewer ranks or a shorter sequence, or a layout "
                "whose ranks own equal progressions")

    @cached_property
    def _blocks(self) -> list[list]:
        """``BlockPlan`` of every (rank, step), computed block by block (layouts outside the closed form)."""
        from .blocks import block_plan

        self._check_blockwise()
        lo, hi = self.mask.bounds(self.seq_len)
        G = self.world_size
        return [[block_plan(self.tokens(r), self.tokens(self.shard_owner(r, s)), lo, hi) for s in range(G)]
                for r in range(G)]

    def _segment_arrays(self):
        """Per rank, per segment: start, stride, count, offset as (G, S) int64 arrays."""
        segs = [self.segments(r) for r in range(self.world_size)]
        get = lambda a: np.array([[getattr(s, a) for s in row] for row in segs], dtype=np.int64)
        return get("start"), get("stride"), get("count"), get("offset")

    @cached_property
    def _geometry(self):
        """Distinct block geometries of the ring.

        Every rank's segments have the same counts and local offsets, so the block rank r works on
        at step s is fixed by its band bounds (L, H) per (query segment, key segment) pair, clipped
        to the block. Clipped, most blocks share bounds (all allowed, none allowed, a few diagonal
        shapes), so counting runs once per distinct geometry, not once per (rank, step).
        Returns ``(bounds (U, S, S, 2), inverse (G, G) → geometry index)``.
        """
        G = self.world_size
        lo, hi = self.mask.bounds(self.seq_len)
        start, stride, count, _ = self._segment_arrays()
        st = int(stride[0, 0])
        cnt = count[0]
        S = start.shape[1]
        owner = (np.arange(G)[:, None] - np.arange(G)[None, :]) % G
        code = np.zeros((G, G), dtype=np.int64)
        per_pair = []
        for a in range(S):
            for b in range(S):
                L, H = _band_index_bounds(start[:, a][:, None] - start[owner, b], st, lo, hi)
                L = np.clip(L, -(cnt[b] - 1), cnt[a])
                H = np.clip(H, -cnt[b], cnt[a] - 1)
                empty = L > H
                L = np.where(empty, cnt[a], L)
                H = np.where(empty, -cnt[b], H)
                span = int(cnt[a] + cnt[b] + 2)
                vals, ids = np.unique((L + cnt[b]) * span + (H + cnt[b]), return_inverse=True)
                per_pair.append((vals, span, int(cnt[b])))
                code = code * len(vals) + ids.reshape(G, G)
        uniq_code, inverse = np.unique(code.reshape(-1), return_inverse=True)
        U = len(uniq_code)
        bounds = np.zeros((U, S, S, 2), dtype=np.int64)
        rest = uniq_code.copy()
        for k in range(S * S - 1, -1, -1):  # undo the mixed-radix code, last pair first
            vals, span, mb = per_pair[k]
            idx = rest % len(vals)
            rest //= len(vals)
            v = vals[idx]
            a, b = divmod(k, S)
            bounds[:, a, b, 0] = v // span - mb
            bounds[:, a, b, 1] = v % span - mb
        return bounds, inverse.reshape(G, G)

    @cached_property
    def pairs(self) -> np.ndarray:
        """``pairs[r, s]``: allowed (query, key) pairs of rank r at step s (int64, exact)."""
        if not self.closed_form:
            return np.array([[b.pairs for b in row] for row in self._blocks], dtype=np.int64)
        bounds, inverse = self._geometry
        cnt = self._segment_arrays()[2][0]
        n = cnt[None, :, None]
        m = cnt[None, None, :]
        L, H = bounds[..., 0], bounds[..., 1]
        per_block = np.where(L <= H, _n_le(n, m, H) - _n_le(n, m, L - 1), 0)
        return per_block.sum(axis=(1, 2))[inverse].astype(np.int64)

    def tiles(self, tile_q: int, tile_k: int) -> np.ndarray:
        """``tiles[r, s]``: (tile_q × tile_k) tiles of rank r's local (queries × held keys) block
        that hold at least one allowed pair — what a fused kernel that skips only empty tiles runs.

        Tiles are aligned to the local layout (a zigzag rank's two chunks one after the other).
        For each tile row and each (query segment, key segment) the non-empty key columns form one
        interval (the band is convex in index space); a row's tiles are the union of those intervals.

        The per-row work runs once per distinct block geometry (see ``_geometry``).
        """
        if tile_q <= 0 or tile_k <= 0:
            raise InputError(f"tile shape must be positive, got {tile_q}x{tile_k}")
        if not self.closed_form:
            return self._tiles_blockwise(tile_q, tile_k)
        n_loc = self.tokens_per_rank
        _, _, count, offset = self._segment_arrays()
        cnt, off = count[0], offset[0]  # identical for every rank
        S = count.shape[1]
        uniq, inverse = self._geometry
        n_rows = -(-n_loc // tile_q)
        row0 = np.arange(n_rows, dtype=np.int64) * tile_q
        row1 = np.minimum(row0 + tile_q, n_loc) - 1  # inclusive
        lows, highs = [], []
        for a in range(S):
            # local rows of each tile row inside query segment a → segment indices [i0, i1]
            i0 = np.maximum(row0, off[a]) - off[a]
            i1 = np.minimum(row1, off[a] + cnt[a] - 1) - off[a]
            rows_ok = i0 <= i1
            for b in range(S):
                L, H = uniq[:, a, b, 0][:, None], uniq[:, a, b, 1][:, None]  # (U, 1)
                j_lo = np.maximum(i0[None, :] - H, 0)
                j_hi = np.minimum(i1[None, :] - L, cnt[b] - 1)
                ok = rows_ok[None, :] & (j_lo <= j_hi) & (L <= H)
                lows.append(np.where(ok, (off[b] + j_lo) // tile_k, 0))
                highs.append(np.where(ok, (off[b] + j_hi) // tile_k, -1))  # empty interval: hi < lo
        lo_arr = np.stack(lows, axis=-1)  # (U, rows, S*S)
        hi_arr = np.stack(highs, axis=-1)
        order = np.argsort(lo_arr, axis=-1, kind="stable")
        lo_arr = np.take_along_axis(lo_arr, order, axis=-1)
        hi_arr = np.take_along_axis(hi_arr, order, axis=-1)
        covered = np.zeros(lo_arr.shape[:-1], dtype=np.int64)
        reach = np.full(lo_arr.shape[:-1], -1, dtype=np.int64)  # last column already counted
        for k in range(lo_arr.shape[-1]):
            l, h = lo_arr[..., k], hi_arr[..., k]
            valid = h >= l
            covered += np.where(valid, np.maximum(h - np.maximum(l, reach + 1) + 1, 0), 0)
            reach = np.where(valid, np.maximum(reach, h), reach)
        per_geometry = covered.sum(axis=-1)
        return per_geometry[inverse].astype(np.int64)

    def _tiles_blockwise(self, tile_q: int, tile_k: int) -> np.ndarray:
        from .blocks import BlockPlan, call_tiles

        G, n = self.world_size, self.tokens_per_rank
        out = np.zeros((G, G), dtype=np.int64)
        for r in range(G):
            for s in range(G):
                b = self._blocks[r][s]
                if b.kind == "empty":
                    continue
                # tiles of the whole local block (aligned to its origin): the trimmed call's
                # intervals, shifted to the block's rows and columns
                lo = np.zeros(n, dtype=np.int64)
                hi = np.zeros(n, dtype=np.int64)
                rows = np.arange(b.r0, b.r1)
                if b.kind == "masked":
                    lo[rows], hi[rows] = b.lo + b.c0, b.hi + b.c0
                elif b.kind == "full":
                    lo[rows], hi[rows] = b.c0, b.c1
                else:  # causal
                    lo[rows], hi[rows] = b.c0, b.c0 + np.arange(1, b.r1 - b.r0 + 1)
                out[r, s] = call_tiles("masked", n, n, BlockPlan("masked", 0, n, 0, n, b.pairs, lo, hi), tile_q, tile_k)
        return out

    @cached_property
    def call_shapes(self):
        """The kernel call of every block: ``(shapes, ids)`` with ``shapes`` a
        :class:`~ringsim.blocks.CallShapes` table of the distinct calls and ``ids[r, s]`` the entry of
        rank r's call at step s (the trimmed block, see :func:`ringsim.blocks.block_plan`).

        In closed form a block's local mask is fixed by its geometry (see ``_geometry``), so
        :func:`~ringsim.blocks.block_plan` runs once per distinct geometry, on one block that has
        it; its exact pairs are checked against the closed form's."""
        from .blocks import CallShapes, block_plan

        G = self.world_size
        if not self.closed_form:
            blocks = [b for row in self._blocks for b in row]
            return CallShapes(blocks), np.arange(G * G, dtype=np.int64).reshape(G, G)
        _, inverse = self._geometry
        lo, hi = self.mask.bounds(self.seq_len)
        U = int(inverse.max()) + 1
        first = np.full(U, -1, dtype=np.int64)
        flat = inverse.reshape(-1)
        order = np.arange(flat.size)[::-1]
        first[flat[order]] = order  # the first (rank, step) of each geometry
        blocks = []
        pairs = self.pairs
        for u in range(U):
            r, s = divmod(int(first[u]), G)
            b = block_plan(self.tokens(r), self.tokens(self.shard_owner(r, s)), lo, hi)
            if b.pairs != int(pairs[r, s]):  # one source of truth: the two counts must agree
                raise AssertionError(f"block pairs {b.pairs} != plan pairs {pairs[r, s]} (rank {r}, step {s})")
            blocks.append(b)
        return CallShapes(blocks), inverse.astype(np.int64)

    # ---- summaries -----------------------------------------------------------------------------
    def total_pairs(self) -> int:
        return int(self.pairs.sum())

    def work_per_rank(self) -> np.ndarray:
        return self.pairs.sum(axis=1)

    def imbalance(self) -> float:
        """max / mean of per-rank work (1.0 is perfect balance)."""
        w = self.work_per_rank().astype(np.float64)
        mean = w.mean()
        return float(w.max() / mean) if mean > 0 else 1.0

    def describe(self) -> dict:
        return {"schedule": self.schedule, "world_size": self.world_size, "seq_len": self.seq_len,
                "mask": str(self.mask), "tokens_per_rank": self.tokens_per_rank}


MAX_BLOCKWISE_COMPARISONS = 5e7  # G² blocks × tokens per rank, for layouts outside the closed form


def _segments_of(tokens: np.ndarray) -> list[Segment]:
    """Split increasing positions into maximal arithmetic progressions (greedy, left to right)."""
    segs: list[Segment] = []
    n = len(tokens)
    i = 0
    while i < n:
        if i + 1 == n:
            segs.append(Segment(int(tokens[i]), 1, 1, i))
            break
        stride = int(tokens[i + 1] - tokens[i])
        j = i + 1
        while j + 1 < n and tokens[j + 1] - tokens[j] == stride:
            j += 1
        segs.append(Segment(int(tokens[i]), stride, j - i + 1, i))
        i = j + 1
    return segs


def _check_tokens(tokens, G: int, T: int, name: str) -> list[np.ndarray]:
    """Every position 0..T−1 owned once, G ranks of T/G tokens each; each rank's kept increasing."""
    if len(tokens) != G:
        raise InputError(f"layout {name!r} gives tokens for {len(tokens)} ranks, not {G}")
    out = [np.sort(np.asarray(t, dtype=np.int64).reshape(-1)) for t in tokens]
    if T % G or any(len(t) != T // G for t in out):
        raise InputError(f"layout {name!r}: every rank must own T/G tokens (ring shards are equal-sized); "
                         f"got {[len(t) for t in out][:8]} for T = {T}, G = {G}")
    seen = np.concatenate(out)
    if seen.min() < 0 or seen.max() >= T or not np.all(np.bincount(seen, minlength=T) == 1):
        raise InputError(f"layout {name!r} must own every position 0..{T - 1} exactly once")
    return out


def make_plan(schedule: str, world_size: int, seq_len: int, mask: str | Mask = "causal") -> Plan:
    return Plan(schedule, world_size, seq_len, mask)
