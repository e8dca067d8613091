"""All-gather K/V context parallelism (Llama 3's training CP; TransformerEngine's ``all_gather``).

Every rank owns the zigzag tokens of the ring (chunks r and 2G−1−r of 2G equal chunks, so the
causal work is balanced); instead of passing K/V round a ring while computing, the ranks first
*all-gather* the K/V of every token, then each computes its two query chunks against the gathered
K/V. Communication is not overlapped with the attention: it is exposed, and cheap only when the
K/V are small (grouped-query attention: Llama 3 70B moves 4 KiB per token per layer in bf16,
against 16 KiB of queries).

The program, per rank r of G (n = T/G tokens per rank, m = n/2 per chunk):

**Forward.**

1. All-gather of the K/V shards (payload ``kv_all``, part p = owner p's shard, ``shard_bytes(n)``
   per part), as the messages the collective's algorithm sends:

   - ``ring`` (default): G−1 steps; at step s rank r sends the part of owner (r − s) mod G to r+1
     (its own at step 0, then the one it received) — NCCL's ring all-gather;
   - ``tree`` (``allgather:tree``, G a power of two): recursive doubling, log₂G steps; at step k
     rank r exchanges with r XOR 2ᵏ every part it holds (2ᵏ parts each way).

2. One compute step: a ``gather`` memory op lays the parts out in token order (read and write of
   the whole K/V), then one kernel call per query chunk against every key up to the chunk's end:
   chunk r (local rows [0, m)) against keys [0, (r+1)·m), chunk 2G−1−r (rows [m, 2m)) against
   keys [0, (2G−r)·m) — bottom-right causal calls (a full mask: every key).

**Backward.** The K/V are gathered again (as TransformerEngine does: the forward keeps only its
own shard, so the activation memory per layer stays that of the rank's tokens); one compute step
runs both chunks' backward calls, each followed by an ``accumulate`` (dQ rows, dK/dV columns into
a token-order fp32 buffer), and a ``scatter`` of that buffer into per-owner parts; then a
reduce-scatter returns every part's dK/dV sum to its owner (payload ``dkv_all``, fp32):

- ``ring``: G−1 steps; at step s rank r adds the part it received at step s−1 to its own
  contribution (a ``reduce`` memory op) and sends the sum of owner (r − s − 1) mod G to r+1 at
  the op's end (the message's send is posted at the compute's end); a last step adds the part of
  owner r received at step G−2: the complete gradient of r's K/V;
- ``tree``: recursive halving, log₂G steps; at step k (d = G/2ᵏ⁺¹) rank r keeps the half of its
  range of owners that holds r and sends the other half (d parts) to r XOR d, after reducing what
  it received at step k−1.

**Memory** (:meth:`AllGather.memory`): besides the rank's own K/V for every layer, one layer holds
its queries and output, the K/V of every token twice (the gathered parts and their token-order
copy; a kernel that reads the parts in place would save one), and in the backward dQ and the
whole sequence's dK/dV twice in fp32 (token order and parts) — the price of the exposed gather.
"""
from __future__ import annotations

import numpy as np

from ..blocks import BlockPlan, CallShapes
from ..program import KernelOp, MemoryOp, Messages, Program, Stage
from ..schedules import Plan, parse_mask
from ..units import InputError
from ..workload import GRAD_BYTES_PER_VALUE, Workload
from .base import NotApplicable, Strategy
from .ring import _accumulate_bytes

__all__ = ["AllGather", "build_allgather", "ALGORITHMS"]

ALGORITHMS = ("ring", "tree")


def _chunk_calls(plan: Plan) -> tuple[CallShapes, np.ndarray]:
    """The two calls of every rank: ``ids[c, r]`` indexes the table (c = 0: chunk r, 1: chunk
    2G−1−r). Keys are the gathered K/V in token order; a causal call is aligned bottom-right."""
    G, T = plan.world_size, plan.seq_len
    m = plan.tokens_per_rank // 2
    blocks: list[BlockPlan] = []
    ids = np.zeros((2, G), dtype=np.int64)
    index: dict[tuple, int] = {}
    for r in range(G):
        for c, chunk in enumerate((r, 2 * G - 1 - r)):
            if plan.mask.kind == "full":
                key = ("full", c, T)
                b = BlockPlan("full", c * m, (c + 1) * m, 0, T, m * T)
            else:
                K = (chunk + 1) * m
                key = ("causal", c, K)
                b = BlockPlan("causal", c * m, (c + 1) * m, 0, K, m * K - m * (m - 1) // 2)
            if key not in index:
                index[key] = len(blocks)
                blocks.append(b)
            ids[c, r] = index[key]
    return CallShapes(blocks), ids


def _gather_messages(G: int, part_bytes: float, algorithm: str) -> Messages:
    """The all-gather's messages, ``[step, message]`` (see the module docstring)."""
    ranks = np.arange(G, dtype=np.int64)
    if algorithm == "ring":
        steps = np.arange(G - 1, dtype=np.int64)[:, None]
        return Messages(ranks[None, :], ((ranks + 1) % G)[None, :], np.array([[part_bytes]]), (("kv_all",),),
                        part=(ranks[None, :] - steps) % G)
    L = G.bit_length() - 1
    k = np.arange(L, dtype=np.int64)[:, None]
    span = 1 << k                                        # parts each rank holds before step k
    return Messages(np.broadcast_to(ranks, (L, G)), ranks[None, :] ^ span, (span * part_bytes).astype(np.float64),
                    (("kv_all",),), part=(ranks[None, :] >> k) << k, parts=span)


def _reduce_scatter(G: int, grad_bytes: float, algorithm: str, first_step: int) -> list[Stage]:
    """The reduce-scatter's stages: each step reduces what arrived at the previous one, then sends."""
    ranks = np.arange(G, dtype=np.int64)
    if algorithm == "ring":
        S = G - 1
        s = np.arange(S, dtype=np.int64)[:, None]
        reduce_b = np.where(s >= 1, 3.0 * grad_bytes, 0.0) * np.ones((1, G))
        msgs = Messages(ranks[None, :], ((ranks + 1) % G)[None, :], np.array([[grad_bytes]]), (("dkv_all",),),
                        send_at="end", part=(ranks[None, :] - s - 1) % G)
        last = 3.0 * grad_bytes
    else:
        L = G.bit_length() - 1
        S = L
        k = np.arange(L, dtype=np.int64)[:, None]
        d = G >> (k + 1)                                  # parts sent at step k
        lo = (ranks[None, :] // (2 * d)) * (2 * d)
        upper = (ranks[None, :] & d) != 0                 # r keeps the upper half: sends the lower
        prev = np.concatenate([[[0]], d[:-1]])            # parts received at the step before
        reduce_b = 3.0 * grad_bytes * prev * np.ones((1, G))
        msgs = Messages(np.broadcast_to(ranks, (L, G)), ranks[None, :] ^ d, (d * grad_bytes).astype(np.float64),
                        (("dkv_all",),), send_at="end", part=np.where(upper, lo, lo + d), parts=d)
        last = 3.0 * grad_bytes * int(d[-1, 0])
    return [Stage("bwd", first_step, S, (MemoryOp("reduce", reduce_b),), (msgs,), f"reduce-scatter dK/dV ({algorithm})"),
            Stage("bwd", first_step + S, 1, (MemoryOp("reduce", np.full((1, G), last)),), (),
                  "reduce-scatter: last part")]


def build_allgather(plan: Plan, workload: Workload, phase: str = "fwd", algorithm: str = "ring") -> Program:
    """The all-gather program for a zigzag ``plan`` (see the module docstring)."""
    if phase not in ("fwd", "fwd+bwd"):
        raise InputError(f"unknown phase {phase!r}; use fwd or fwd+bwd")
    G, T = plan.world_size, plan.seq_len
    n = plan.tokens_per_rank
    shapes, ids = _chunk_calls(plan)
    kv_bytes = float(workload.shard_bytes(n))
    gather_b = np.full((1, G), 2.0 * workload.shard_bytes(T))
    q_rows = shapes.q_rows[ids]                           # [2, G]
    k_rows = shapes.k_rows[ids]
    m, B = workload.model, workload.batch
    out_b = (q_rows * (B * m.heads * (m.v_dim + 1) * 4)).astype(np.float64)   # write out and LSE
    n_gather = 0 if G == 1 else (G - 1 if algorithm == "ring" else G.bit_length() - 1)

    def phase_stages(ph: str, first: int) -> list[Stage]:
        out = []
        if G > 1:
            out.append(Stage(ph, first, n_gather, (), (_gather_messages(G, kv_bytes, algorithm),),
                             f"all-gather K/V ({algorithm})"))
        calls = []
        for c in range(2):
            calls.append(KernelOp(ph, shapes, ids[c][None, :], kv="kv_all"))
            if ph == "fwd":
                calls.append(MemoryOp("merge", out_b[c][None, :], 1))
            else:
                calls.append(MemoryOp("accumulate", _accumulate_bytes(workload, q_rows[c], k_rows[c])[None, :], 3))
        ops = (MemoryOp("gather", gather_b), *calls)
        if ph == "bwd":
            ops += (MemoryOp("scatter", np.full((1, G), 2.0 * workload.shard_values(T) * GRAD_BYTES_PER_VALUE)),)
        out.append(Stage(ph, first + (n_gather if G > 1 else 0), 1, ops, (), "attention on the gathered K/V"))
        return out

    stages = phase_stages("fwd", 0)
    if phase == "fwd+bwd":
        stages += phase_stages("bwd", 0)
        if G > 1:
            stages += _reduce_scatter(G, float(workload.grad_shard_bytes(n)), algorithm, n_gather + 1)
    spec = "allgather" if algorithm == "ring" else f"allgather:{algorithm}"
    meta = {"layout": "zigzag", "mask": str(plan.mask), "seq_len": T, "phase": phase, "tokens_per_rank": n,
            "heads": workload.model.heads, "collective": algorithm}
    return Program(G, stages, strategy=spec, meta=meta, plan=plan)


class AllGather(Strategy):
    """All-gather K/V, then local attention on the zigzag query chunks (``allgather``,
    ``allgather:tree``). See the module docstring for the program and its memory."""

    def __init__(self, algorithm: str = "ring"):
        if algorithm not in ALGORITHMS:
            raise InputError(f"unknown all-gather algorithm {algorithm!r}; use allgather:ring or allgather:tree")
        self.algorithm = algorithm
        self.spec = "allgather" if algorithm == "ring" else f"allgather:{algorithm}"

    def _check(self, world_size: int, mask) -> None:
        if parse_mask(mask).kind not in ("causal", "full"):
            raise NotApplicable(f"{self.spec}: mask {mask} is not modelled (each chunk's call would need an explicit "
                                "mask); use causal or full, or a ring layout")
        if self.algorithm == "tree" and world_size & (world_size - 1):
            raise NotApplicable(f"{self.spec}: recursive doubling needs a power-of-two world size, got {world_size}; "
                                "use allgather (ring)")

    def plan(self, workload: Workload, world_size: int, mask) -> Plan:
        self._check(world_size, mask)
        return Plan("zigzag", world_size, workload.seq_len, mask)

    def build(self, workload: Workload, world_size: int, mask, phase: str) -> Program:
        return build_allgather(self.plan(workload, world_size, mask), workload, phase, self.algorithm)

    def memory(self, workload: Workload, world_size: int, mask, phase: str, double_buffer: bool = True) -> dict:
        from ..memory import kv_memory

        self._check(world_size, mask)
        m, B, bpv = workload.model, workload.batch, workload.bytes_per_value
        n, T = workload.seq_len // world_size, workload.seq_len
        q = B * n * m.heads * m.head_dim * bpv
        o = B * n * m.heads * m.v_dim * bpv + B * n * m.heads * 4       # output and LSE
        full = workload.shard_bytes(T)
        work = q + o + 2 * full                                          # gathered parts + token-order copy
        if phase == "fwd+bwd":
            work += B * n * m.heads * m.head_dim * 4 + 2 * workload.grad_shard_bytes(T)
        kv = kv_memory(workload, world_size)["kv_shard_per_gpu_bytes"]
        return {"ring_working_set_bytes": int(work), "kv_shard_per_gpu_bytes": int(kv),
                "peak_memory_bytes": int(work + kv)}
