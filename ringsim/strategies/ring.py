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

Memory ops (``ringsim`` implementation, the traffic of the runtime's fp32 bookkeeping): the forward
merge reads and writes the rank's running output and LSE and reads the call's (rows × H × (3·d_v +
3) × 4 bytes); the backward accumulation reads and writes dQ rows and the held shard's dK/dV rows.
"""
from __future__ import annotations

import numpy as np

from ..program import KernelOp, MemoryOp, Messages, Program, Stage
from ..schedules import Plan
from ..workload import GRAD_BYTES_PER_VALUE, Workload
from .base import Strategy

__all__ = ["Ring", "build_ring"]

LAYOUTS = ("contiguous", "striped", "zigzag")


def _merge_bytes(workload: Workload, q_rows: np.ndarray) -> np.ndarray:
    m, B = workload.model, workload.batch
    return q_rows.astype(np.float64) * (B * m.heads * (3 * m.v_dim + 3) * 4)


def _accumulate_bytes(workload: Workload, q_rows: np.ndarray, k_rows: np.ndarray) -> np.ndarray:
    m, B = workload.model, workload.batch
    dq = q_rows.astype(np.float64) * (B * m.heads * m.head_dim * GRAD_BYTES_PER_VALUE * 3)
    per_kv = workload.shard_values(1) * GRAD_BYTES_PER_VALUE * 3
    return np.where(q_rows > 0, dq + k_rows.astype(np.float64) * per_kv, 0.0)


def build_ring(plan: Plan, workload: Workload, phase: str = "fwd") -> Program:
    """The ring program for ``plan`` (layout, G, T, mask) and ``workload``; ``phase`` is ``fwd`` or
    ``fwd+bwd``. See the module docstring for what it contains."""
    G = plan.world_size
    n = plan.tokens_per_rank
    shapes, ids = plan.call_shapes
    sid = np.ascontiguousarray(ids.T)  # [step, rank]
    ranks = np.arange(G, dtype=np.int64)
    owner = (ranks[None, :] - ranks[:, None]) % G  # [step, rank]: (r − s) mod G
    q_rows = shapes.q_rows[sid]
    k_rows = shapes.k_rows[sid]
    merge = _merge_bytes(workload, q_rows)
    kv_bytes = float(workload.shard_bytes(n))
    dkv_bytes = float(workload.grad_shard_bytes(n))
    hop_src, hop_dst = ranks[None, :], ((ranks + 1) % G)[None, :]

    def ops(ph: str, sl: slice):
        k = KernelOp(ph, shapes, sid[sl], owner[sl])
        if ph == "fwd":
            return (k, MemoryOp("merge", merge[sl], 6))
        return (k, MemoryOp("accumulate", _accumulate_bytes(workload, q_rows[sl], k_rows[sl]), 3))

    stages = []
    if G > 1:
        kv = Messages(hop_src, hop_dst, np.array([[kv_bytes]]), (("kv",),))
        stages.append(Stage("fwd", 0, G - 1, ops("fwd", slice(0, G - 1)), (kv,), "ring fwd"))
    stages.append(Stage("fwd", G - 1, 1, ops("fwd", slice(G - 1, G)), (), "ring fwd, last step"))
    if phase == "fwd+bwd":
        if G == 1:
            stages.append(Stage("bwd", 0, 1, ops("bwd", slice(0, 1)), (), "ring bwd"))
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
            "tokens_per_rank": n, "heads": workload.model.heads}
    return Program(G, stages, strategy=plan.schedule, meta=meta, plan=plan)


class Ring(Strategy):
    """The ring strategy with a token layout (``contiguous``, ``striped``, ``zigzag``)."""

    def __init__(self, layout: str):
        self.layout = layout
        self.spec = layout

    def plan(self, workload: Workload, world_size: int, mask) -> Plan:
        return Plan(self.layout, world_size, workload.seq_len, mask)

    def build(self, workload: Workload, world_size: int, mask, phase: str) -> Program:
        return build_ring(self.plan(workload, world_size, mask), workload, phase)

    def memory(self, workload: Workload, world_size: int, mask, phase: str, double_buffer: bool = True) -> dict:
        from ..metrics import ring_memory_bytes

        return ring_memory_bytes(self.plan(workload, world_size, mask), workload, phase, double_buffer)
