"""The ring (pass-KV) strategy: queries stay, K/V shards travel round the ring (DESIGN.md §3.2).

The program, per rank r of G:

**Forward**, steps s = 0 … G−1: rank r holds the K/V shard of rank ``(r − s) mod G``; at the start of
step s < G−1 it posts one batched send of that shard to r+1 and receive of the next from r−1
(message payload ``kv``); it computes its queries against the held shard — one kernel call on the
trimmed block (:func:`ringsim.blocks.block_plan`: a zigzag step runs N × N/2 or N/2 × N, a
striped step after its owner (N−1) × (N−1) causal, an empty block no call) — and merges the call's
output and log-sum-exp into its fp32 accumulators (a memory op).

**Backward**, steps s = 0 … G−1 then a return step G: K/V travel as in forward while the
accumulated dK/dV of the shard held at step s−1 travel one step behind them (payload ``dkv``, fp32
whatever the input dtype): step 0 sends K/V, steps 1 … G−2 K/V + dK/dV (one message, two buffers),
step G−1 dK/dV only; each step computes the block's gradients and accumulates dQ locally and the
shard's dK/dV into the travelling accumulator; at step G (no compute) each shard's complete dK/dV
returns to its owner (r+1 for the shard r holds). This is exactly what the torch runtime runs
(:mod:`ringsim.runtime.executor`), so a simulated and a measured run send the same bytes at every
(phase, step).

Memory ops: the forward merge after every call and the backward's accumulations, with the bytes
the *implementation* moves (:class:`_Traffic`): ``ringsim`` (this runtime) or ``ring-flash-attn``
(which also posts the backward's dK/dV at the end of a step and waits for it in the next).
"""
from __future__ import annotations

import numpy as np

from ..program import KernelOp, MemoryOp, Messages, Program, Stage
from ..schedules import Plan
from ..workload import GRAD_BYTES_PER_VALUE, Workload
from .base import Strategy

__all__ = ["Ring", "build_ring", "ring_stages", "IMPLEMENTATIONS", "SLICE_OVERHEAD"]

LAYOUTS = ("contiguous", "striped", "zigzag")
IMPLEMENTATIONS = ("ringsim", "ring-flash-attn")

#: Per implementation, the time a call on a row slice of the rank's queries (zigzag and stripe steps
#: after the rank's own shard) and the write-back of its merge into that slice take beyond what the
#: kernel profile prices for the call's shape and the merge's bytes at HBM bandwidth, as a fraction
#: of the call's kernel time (:attr:`ringsim.program.KernelOp.slice_overhead`).
#:
#: ``ring-flash-attn``: **fitted to the development set**, and only to its H800 half — the four
#: zigzag/ring and stripe/ring speedups of 8×H800 fwd and fwd+bwd (gpu-attention-kernels.md §4),
#: least squares over 0 … 0.3 in steps of 0.005 (``python benchmarks/bench_devset.py --fit``);
#: the 8×A100 half is held out and checks it. Its cause is not measured: FA2's uneven-length
#: kernel variant (stripe's 8191-row calls), the slice views and the copy-back are candidates, and
#: each alone prices below it. On a GPU, ``python benchmarks/gpu_kernel_timings.py --slice-steps``
#: measures it directly; a measured figure should replace this one.
#: ``ringsim``: this runtime's calls on a slice run as calls of that shape (no overhead modelled).
SLICE_OVERHEAD = {"ringsim": 0.0, "ring-flash-attn": 0.075}


class _Traffic:
    """Bytes the memory-bound ops of one implementation move, per call of ``rows`` query rows (and
    ``cols`` key rows), for a workload. ``units`` are bytes per element of the rows' output (rows × H ×
    d_v) or per element of the shard's K/V values; per-(row, head) LSE traffic is added where it exists.

    ``ringsim`` (this project's torch runtime, :mod:`ringsim.runtime.kernels`): the forward merge is
    ``out.mul_(wa); out.add_(out_b * wb)`` in fp32 — 28 bytes per output element — plus the LSE
    log-add-exp (~40 bytes per row and head); the backward adds the block's fp32 dQ rows and dK/dV
    columns into accumulators (12 bytes per element each), zeroes the own-contribution buffer
    and folds it into the travelling dK/dV after the wait (8 + 12 bytes per shard element).

    ``ring-flash-attn`` (zhuzilin/ring-flash-attention, as gpu-attention-kernels.md §3 describes it):
    the forward merge casts the block output to fp32 (2 + 4 bytes), then ``out -= sigmoid(blse − lse)
    · (out − bout)`` unfused (12 + 8 + 12 bytes) — ~1 GB for an 8K × 32 × 128 output, as the
    reference says — and ``lse -= logsigmoid(lse − blse)`` (~52 bytes per row and head); the first
    step only casts. A merge on a slice of the rows (zigzag and stripe steps after the rank's own
    shard) copies the slice back (8 bytes per element, 8 per row and head). The backward runs, per
    FA2 call, the dot(dO, O) pre-kernel (2 × dtype bytes per element + 4 per row and head), the dQ
    convert kernel (4 + dtype), and with GQA expands dK/dV to every query head and sums them back
    (H/H_kv × dtype read + dtype write per shard element, K and V); it accumulates dQ and dK/dV in
    fp32 (4 + dtype read, 4 write per element; the first step casts)."""

    def __init__(self, implementation: str, workload: Workload, heads: int | None = None,
                 kv_values: int | None = None):
        if implementation not in IMPLEMENTATIONS:
            from ..units import InputError

            raise InputError(f"unknown implementation {implementation!r}; use one of {', '.join(IMPLEMENTATIONS)}")
        self.impl = implementation
        m, B = workload.model, workload.batch
        self.bpv = workload.bytes_per_value
        H = heads or m.heads                             # the call's query heads (a share of them in USP)
        self.out_elems = B * H * m.v_dim                 # per query row
        self.rh = B * H                                  # rows × heads per query row
        self.q_elems = B * H * m.head_dim                # dQ elements per query row
        # K and V values per key row (all kv heads, or the share a USP member holds)
        self.kv_elems = workload.shard_values(1) if kv_values is None else B * kv_values
        self.group = m.heads / m.kv_heads

    def merge(self, rows: np.ndarray, q_start: np.ndarray, first: np.ndarray):
        """(bytes, launches) of the forward merge after each call."""
        rows = rows.astype(np.float64)
        live = rows > 0
        if self.impl == "ringsim":
            b = rows * (28 * self.out_elems + 40 * self.rh)
            return np.where(live, b, 0.0), np.where(live, 8, 0)
        cast = rows * ((self.bpv + 4) * self.out_elems + 8 * self.rh)
        full = rows * ((self.bpv + 4 + 32) * self.out_elems + 52 * self.rh)
        sliced = np.where(q_start > 0, rows * (8 * self.out_elems + 8 * self.rh), 0.0)
        b = np.where(first, cast, full + sliced)
        launches = np.where(first, 2, 7 + 2 * (q_start > 0))
        return np.where(live, b, 0.0), np.where(live, launches, 0)

    def accumulate(self, rows: np.ndarray, cols: np.ndarray, first: np.ndarray, n: int):
        """(bytes, launches) of the backward's memory work around each call."""
        rows, cols = rows.astype(np.float64), cols.astype(np.float64)
        live = rows > 0
        if self.impl == "ringsim":
            b = rows * 12 * self.q_elems + cols * 12 * self.kv_elems + n * (8 + 12) * self.kv_elems
            return np.where(live, b, n * (8 + 12) * self.kv_elems), np.where(live, 5, 2)
        bpv = self.bpv
        pre = rows * (2 * bpv * self.out_elems + 4 * self.rh)
        convert = rows * (4 + bpv) * self.q_elems
        gqa = cols * (self.group * bpv + bpv) * self.kv_elems if self.group > 1 else 0.0 * cols
        acc_first = rows * (bpv + 4) * self.q_elems + cols * (bpv + 4) * self.kv_elems
        acc = rows * (4 + bpv + 4) * self.q_elems + cols * (4 + bpv + 4) * self.kv_elems
        b = pre + convert + gqa + np.where(first, acc_first, acc)
        return np.where(live, b, 0.0), np.where(live, 5 + (self.group > 1) * 2, 0)


def _merge_bytes(workload: Workload, q_rows: np.ndarray, heads: int | None = None) -> np.ndarray:
    """Bytes of this runtime's (``ringsim``) forward merge of calls of ``q_rows`` query rows on
    ``heads`` query heads (default all) — the other strategies' merges, priced as the ring's."""
    b, _ = _Traffic("ringsim", workload, heads).merge(np.asarray(q_rows), np.zeros(np.shape(q_rows)),
                                                       np.zeros(np.shape(q_rows), dtype=bool))
    return b


def _accumulate_bytes(workload: Workload, q_rows: np.ndarray, k_rows: np.ndarray, heads: int | None = None,
                      kv_values: int | None = None) -> np.ndarray:
    """Bytes of this runtime's backward accumulation around calls of ``q_rows`` × ``k_rows``: the
    block's fp32 dQ rows and dK/dV columns added into accumulators (12 bytes per element each)."""
    t = _Traffic("ringsim", workload, heads, kv_values)
    q, k = np.asarray(q_rows, dtype=np.float64), np.asarray(k_rows, dtype=np.float64)
    return np.where(q > 0, q * 12 * t.q_elems + k * 12 * t.kv_elems, 0.0)


def ring_stages(ph: str, plan: Plan, workload: Workload, first_step: int = 0, members: np.ndarray | None = None,
                heads: int | None = None, kv_values: int | None = None,
                implementation: str = "ringsim") -> list[Stage]:
    """The ring's stages of one phase (``fwd``, or ``bwd`` with its dK/dV return) for ``plan``'s
    R ring ranks, numbered from ``first_step``.

    ``members[g]`` (default: rank g alone) are the ranks that play ring rank g, each on its own
    share of the heads: ``heads`` query heads per call (default all) and ``kv_values`` K/V values
    per token (default the model's) — a USP ring over Ulysses groups, where member u of group g
    passes its K/V to member u of group g+1. ``implementation`` (``ringsim`` or ``ring-flash-attn``)
    fixes the memory work between kernels (:class:`_Traffic`) and, for ring-flash-attn, the
    backward's protocol: dK/dV (fp32) posted at the end of each step and waited in the next, the
    last waited at an extra step R."""
    traffic = _Traffic(implementation, workload, heads, kv_values)
    R = plan.world_size
    members = np.arange(R, dtype=np.int64)[:, None] if members is None else np.asarray(members, dtype=np.int64)
    U = members.shape[1]
    G = R * U
    n = plan.tokens_per_rank
    shapes, ids = plan.call_shapes
    g_of = np.empty(G, dtype=np.int64)
    u_of = np.empty(G, dtype=np.int64)
    g_of[members.reshape(-1)] = np.repeat(np.arange(R), U)
    u_of[members.reshape(-1)] = np.tile(np.arange(U), R)
    steps = np.arange(R, dtype=np.int64)[:, None]
    if U == 1 and np.array_equal(members[:, 0], np.arange(R)):  # the plain ring: rank g plays ring rank g
        sid = np.ascontiguousarray(ids.T)  # [step, rank]
        owner = np.subtract.outer(-steps[:, 0], -np.arange(R, dtype=np.int64))  # r − s
        owner[owner < 0] += R  # (r − s) mod R: whose K/V rank r holds at step s
    else:
        sid = np.ascontiguousarray(ids.T)[:, g_of]
        owner = members[(g_of[None, :] - steps) % R, u_of[None, :]]
    values = workload.shard_values(n) if kv_values is None else workload.batch * n * kv_values
    kv_bytes = float(values * workload.bytes_per_value)
    dkv_bytes = float(values * GRAD_BYTES_PER_VALUE)
    hop_src = np.arange(G, dtype=np.int64)[None, :]
    hop_dst = members[(g_of + 1) % R, u_of][None, :]
    share = heads if heads is not None and heads != workload.model.heads else None
    if implementation == "ringsim":  # the memory work depends on the call's shape only: a table per shape
        no_first = np.zeros(len(shapes.q_rows), dtype=bool)
        if ph == "fwd":
            tb, tl = traffic.merge(shapes.q_rows, shapes.q_start, no_first)
        else:
            tb, tl = traffic.accumulate(shapes.q_rows, shapes.k_rows, no_first, n)
        mem_bytes, mem_launch = tb[sid], np.asarray(tl)[sid]
    else:
        q_rows, k_rows, q_start = shapes.q_rows[sid], shapes.k_rows[sid], shapes.q_start[sid]
        live = shapes.kind[sid] != 0
        first = (np.cumsum(live, axis=0) == 1) & live  # a rank's first call (the merge only initialises)
        if ph == "fwd":
            mem_bytes, mem_launch = traffic.merge(q_rows, q_start, first)
        else:
            mem_bytes, mem_launch = traffic.accumulate(q_rows, k_rows, first, n)

    def ops(sl: slice):
        k = KernelOp(ph, shapes, sid[sl], owner[sl], heads=share, slice_overhead=SLICE_OVERHEAD[implementation])
        return (k, MemoryOp("merge" if ph == "fwd" else "accumulate", mem_bytes[sl], mem_launch[sl]))

    f = first_step
    if ph == "fwd":
        if R == 1:
            return [Stage("fwd", f, 1, ops(slice(0, 1)), (), "ring fwd")]
        kv = Messages(hop_src, hop_dst, np.array([[kv_bytes]]), (("kv",),))
        return [Stage("fwd", f, R - 1, ops(slice(0, R - 1)), (kv,), "ring fwd"),
                Stage("fwd", f + R - 1, 1, ops(slice(R - 1, R)), (), "ring fwd, last step")]
    if R == 1:
        return [Stage("bwd", f, 1, ops(slice(0, 1)), (), "ring bwd")]
    if implementation == "ring-flash-attn":
        kv = Messages(hop_src, hop_dst, np.array([[kv_bytes]]), (("kv",),))
        dkv = Messages(hop_src, hop_dst, np.array([[dkv_bytes]]), (("dkv",),), "end", "end", 1)
        return [Stage("bwd", f, R - 1, ops(slice(0, R - 1)), (kv, dkv), "ring bwd"),
                Stage("bwd", f + R - 1, 1, ops(slice(R - 1, R)), (dkv,), "ring bwd, last step"),
                Stage("bwd", f + R, 1, (), (), "ring bwd: the last dK/dV arrives")]
    s_ = np.arange(R)
    nbytes = np.where(s_ < R - 1, kv_bytes, 0.0) + np.where(s_ >= 1, dkv_bytes, 0.0)
    payloads = tuple(("kv",) * (i < R - 1) + ("dkv",) * (i >= 1) for i in range(R))
    both = Messages(hop_src, hop_dst, nbytes[:, None], payloads)
    back = Messages(hop_src, hop_dst, np.array([[dkv_bytes]]), (("dkv",),))
    return [Stage("bwd", f, R, ops(slice(0, R)), (both,), "ring bwd"),
            Stage("bwd", f + R, 1, (), (back,), "ring bwd: dK/dV return")]


def build_ring(plan: Plan, workload: Workload, phase: str = "fwd", implementation: str = "ringsim") -> Program:
    """The ring program for ``plan`` (layout, G, T, mask) and ``workload``; ``phase`` is ``fwd`` or
    ``fwd+bwd``; ``implementation`` as in :func:`ring_stages`. See the module docstring for what the
    program contains."""
    if phase not in ("fwd", "fwd+bwd"):
        from ..units import InputError

        raise InputError(f"unknown phase {phase!r}; use fwd or fwd+bwd")
    stages = ring_stages("fwd", plan, workload, implementation=implementation)
    if phase == "fwd+bwd":
        stages += ring_stages("bwd", plan, workload, implementation=implementation)
    meta = {"layout": plan.schedule, "mask": str(plan.mask), "seq_len": plan.seq_len, "phase": phase,
            "tokens_per_rank": plan.tokens_per_rank, "heads": workload.model.heads, "implementation": implementation}
    return Program(plan.world_size, stages, strategy=plan.schedule, meta=meta, plan=plan)


class Ring(Strategy):
    """The ring strategy with a token layout (``contiguous``, ``striped``, ``zigzag``; with packed
    ``documents`` also ``zigzag-doc`` and ``balanced[:K]``, see :mod:`ringsim.documents`) and an
    implementation (``ringsim``: this project's runtime; ``ring-flash-attn``: simulated only)."""

    def __init__(self, layout: str, implementation: str = "ringsim", documents=None):
        self.layout = layout
        self.spec = layout
        self.implementation = implementation
        self.documents = None if documents is None else [int(x) for x in documents]

    def plan(self, workload: Workload, world_size: int, mask):
        if self.documents is not None:
            from ..documents import DocumentPlan

            if sum(self.documents) != workload.seq_len:
                from ..units import InputError

                raise InputError(f"the documents hold {sum(self.documents)} tokens but the sequence length is "
                                 f"{workload.seq_len}; give --seq-len {sum(self.documents)} or other documents")
            return DocumentPlan(self.layout, self.documents, world_size, mask)
        return Plan(self.layout, world_size, workload.seq_len, mask)

    def build(self, workload: Workload, world_size: int, mask, phase: str) -> Program:
        return build_ring(self.plan(workload, world_size, mask), workload, phase, self.implementation)

    def memory(self, workload: Workload, world_size: int, mask, phase: str, double_buffer: bool = True) -> dict:
        from ..metrics import ring_memory_bytes

        return ring_memory_bytes(self.plan(workload, world_size, mask), workload, phase, double_buffer)
