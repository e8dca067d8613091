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
from ..workload import Workload
from .base import Strategy

__all__ = ["Ring", "build_ring", "IMPLEMENTATIONS"]

LAYOUTS = ("contiguous", "striped", "zigzag")
IMPLEMENTATIONS = ("ringsim", "ring-flash-attn")


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

    def __init__(self, implementation: str, workload: Workload):
        if implementation not in IMPLEMENTATIONS:
            from ..units import InputError

            raise InputError(f"unknown implementation {implementation!r}; use one of {', '.join(IMPLEMENTATIONS)}")
        self.impl = implementation
        m, B = workload.model, workload.batch
        self.bpv = workload.bytes_per_value
        self.out_elems = B * m.heads * m.v_dim          # per query row
        self.rh = B * m.heads                            # rows × heads per query row
        self.q_elems = B * m.heads * m.head_dim          # dQ elements per query row
        self.kv_elems = workload.shard_values(1)         # K and V values per key row (all kv heads)
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


def build_ring(plan: Plan, workload: Workload, phase: str = "fwd", implementation: str = "ringsim") -> Program:
    """The ring program for ``plan`` (layout, G, T, mask) and ``workload``; ``phase`` is ``fwd`` or
    ``fwd+bwd``; ``implementation`` (``ringsim`` or ``ring-flash-attn``) fixes the memory work
    between kernels (:class:`_Traffic`) and, for ring-flash-attn, its backward protocol: dK/dV
    (fp32) posted at the end of each step and waited in the next, the last waited at an extra step
    G. See the module docstring for what the program contains."""
    traffic = _Traffic(implementation, workload)
    G = plan.world_size
    n = plan.tokens_per_rank
    shapes, ids = plan.call_shapes
    sid = np.ascontiguousarray(ids.T)  # [step, rank]
    ranks = np.arange(G, dtype=np.int64)
    owner = (ranks[None, :] - ranks[:, None]) % G  # [step, rank]: (r − s) mod G
    q_rows = shapes.q_rows[sid]
    k_rows = shapes.k_rows[sid]
    q_start = shapes.q_start[sid]
    live = shapes.kind[sid] != 0
    first = np.cumsum(live, axis=0) == 1  # a rank's first call (the merge only initialises)
    m_bytes, m_launch = traffic.merge(q_rows, q_start, first & live)
    a_bytes, a_launch = traffic.accumulate(q_rows, k_rows, first & live, n)
    kv_bytes = float(workload.shard_bytes(n))
    dkv_bytes = float(workload.grad_shard_bytes(n))
    hop_src, hop_dst = ranks[None, :], ((ranks + 1) % G)[None, :]

    def ops(ph: str, sl: slice):
        k = KernelOp(ph, shapes, sid[sl], owner[sl])
        if ph == "fwd":
            return (k, MemoryOp("merge", m_bytes[sl], m_launch[sl]))
        return (k, MemoryOp("accumulate", a_bytes[sl], a_launch[sl]))

    stages = []
    if G > 1:
        kv = Messages(hop_src, hop_dst, np.array([[kv_bytes]]), (("kv",),))
        stages.append(Stage("fwd", 0, G - 1, ops("fwd", slice(0, G - 1)), (kv,), "ring fwd"))
    stages.append(Stage("fwd", G - 1, 1, ops("fwd", slice(G - 1, G)), (), "ring fwd, last step"))
    if phase == "fwd+bwd":
        if G == 1:
            stages.append(Stage("bwd", 0, 1, ops("bwd", slice(0, 1)), (), "ring bwd"))
        elif implementation == "ring-flash-attn":
            kv = Messages(hop_src, hop_dst, np.array([[kv_bytes]]), (("kv",),))
            dkv = Messages(hop_src, hop_dst, np.array([[dkv_bytes]]), (("dkv",),), "end", "end", 1)
            stages.append(Stage("bwd", 0, G - 1, ops("bwd", slice(0, G - 1)), (kv, dkv), "ring bwd"))
            stages.append(Stage("bwd", G - 1, 1, ops("bwd", slice(G - 1, G)), (dkv,), "ring bwd, last step"))
            stages.append(Stage("bwd", G, 1, (), (), "ring bwd: the last dK/dV arrives"))
        else:
            steps = np.arange(G)
            nbytes = np.where(steps < G - 1, kv_bytes, 0.0) + np.where(steps >= 1, dkv_bytes, 0.0)
            payloads = tuple(("kv",) * (s < G - 1) + ("dkv",) * (s >= 1) for s in range(G))
            both = Messages(hop_src, hop_dst, nbytes[:, None], payloads)
            stages.append(Stage("bwd", 0, G, ops("bwd", slice(0, G)), (both,), "ring bwd"))
            back = Messages(hop_src, hop_dst, np.array([[dkv_bytes]]), (("dkv",),))
            stages.append(Stage("bwd", G, 1, (), (back,), "ring bwd: dK/dV return"))
    elif phase != "fwd":
        from ..units import InputError

        raise InputError(f"unknown phase {phase!r}; use fwd or fwd+bwd")
    meta = {"layout": plan.schedule, "mask": str(plan.mask), "seq_len": plan.seq_len, "phase": phase,
            "tokens_per_rank": n, "heads": workload.model.heads, "implementation": implementation}
    return Program(G, stages, strategy=plan.schedule, meta=meta, plan=plan)


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
