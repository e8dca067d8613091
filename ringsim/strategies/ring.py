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

__all__ = ["Ring", "build_ring", "ring_stages"]

LAYOUTS = ("contiguous", "striped", "zigzag")


def _merge_bytes(workload: Workload, q_rows: np.ndarray, heads: int | None = None) -> np.ndarray:
    m, B = workload.model, workload.batch
    return q_rows.astype(np.float64) * (B * (heads or m.heads) * (3 * m.v_dim + 3) * 4)


def _accumulate_bytes(workload: Workload, q_rows: np.ndarray, k_rows: np.ndarray, heads: int | None = None,
                      kv_values: int | None = None) -> np.ndarray:
    m, B = workload.model, workload.batch
    dq = q_rows.astype(np.float64) * (B * (heads or m.heads) * m.head_dim * GRAD_BYTES_PER_VALUE * 3)
    per_kv = (workload.shard_values(1) if kv_values is None else B * kv_values) * GRAD_BYTES_PER_VALUE * 3
    return np.where(q_rows > 0, dq + k_rows.astype(np.float64) * per_kv, 0.0)


def ring_stages(ph: str, plan: Plan, workload: Workload, first_step: int = 0, members: np.ndarray | None = None,
                heads: int | None = None, kv_values: int | None = None) -> list[Stage]:
    """The ring's stages of one phase (``fwd``, or ``bwd`` with its dK/dV return) for ``plan``'s
    R ring ranks, numbered from ``first_step``.

    ``members[g]`` (default: rank g alone) are the ranks that play ring rank g, each on its own
    share of the heads: ``heads`` query heads per call (default all) and ``kv_values`` K/V values
    per token (default the model's) — a USP ring over Ulysses groups, where member u of group g
    passes its K/V to member u of group g+1."""
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
    sid = np.ascontiguousarray(ids.T)[:, g_of]  # [step, rank]
    steps = np.arange(R, dtype=np.int64)[:, None]
    owner = members[(g_of[None, :] - steps) % R, u_of[None, :]]  # whose K/V rank x holds at step s
    q_rows = shapes.q_rows[sid]
    k_rows = shapes.k_rows[sid]
    values = workload.shard_values(n) if kv_values is None else workload.batch * n * kv_values
    kv_bytes = float(values * workload.bytes_per_value)
    dkv_bytes = float(values * GRAD_BYTES_PER_VALUE)
    hop_src = np.arange(G, dtype=np.int64)[None, :]
    hop_dst = members[(g_of + 1) % R, u_of][None, :]
    share = heads if heads is not None and heads != workload.model.heads else None

    def ops(sl: slice):
        k = KernelOp(ph, shapes, sid[sl], owner[sl], heads=share)
        if ph == "fwd":
            return (k, MemoryOp("merge", _merge_bytes(workload, q_rows[sl], heads), 6))
        return (k, MemoryOp("accumulate", _accumulate_bytes(workload, q_rows[sl], k_rows[sl], heads, kv_values), 3))

    f = first_step
    if ph == "fwd":
        if R == 1:
            return [Stage("fwd", f, 1, ops(slice(0, 1)), (), "ring fwd")]
        kv = Messages(hop_src, hop_dst, np.array([[kv_bytes]]), (("kv",),))
        return [Stage("fwd", f, R - 1, ops(slice(0, R - 1)), (kv,), "ring fwd"),
                Stage("fwd", f + R - 1, 1, ops(slice(R - 1, R)), (), "ring fwd, last step")]
    if R == 1:
        return [Stage("bwd", f, 1, ops(slice(0, 1)), (), "ring bwd")]
    s = np.arange(R)
    nbytes = np.where(s < R - 1, kv_bytes, 0.0) + np.where(s >= 1, dkv_bytes, 0.0)
    payloads = tuple(("kv",) * (i < R - 1) + ("dkv",) * (i >= 1) for i in range(R))
    both = Messages(hop_src, hop_dst, nbytes[:, None], payloads)
    back = Messages(hop_src, hop_dst, np.array([[dkv_bytes]]), (("dkv",),))
    return [Stage("bwd", f, R, ops(slice(0, R)), (both,), "ring bwd"),
            Stage("bwd", f + R, 1, (), (back,), "ring bwd: dK/dV return")]


def build_ring(plan: Plan, workload: Workload, phase: str = "fwd") -> Program:
    """The ring program for ``plan`` (layout, G, T, mask) and ``workload``; ``phase`` is ``fwd`` or
    ``fwd+bwd``. See the module docstring for what it contains."""
    if phase not in ("fwd", "fwd+bwd"):
        from ..units import InputError

        raise InputError(f"unknown phase {phase!r}; use fwd or fwd+bwd")
    stages = ring_stages("fwd", plan, workload)
    if phase == "fwd+bwd":
        stages += ring_stages("bwd", plan, workload)
    meta = {"layout": plan.schedule, "mask": str(plan.mask), "seq_len": plan.seq_len, "phase": phase,
            "tokens_per_rank": plan.tokens_per_rank, "heads": workload.model.heads}
    return Program(plan.world_size, stages, strategy=plan.schedule, meta=meta, plan=plan)


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
