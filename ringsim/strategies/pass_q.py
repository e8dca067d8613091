"""Prefill with a cached prefix: pass-KV and pass-Q (Meta's context-parallel inference, Yang et al.
2024, "Context Parallelism for Scalable Million-Token Inference").

A prompt of T tokens whose first P (``--cached-tokens P``) already have K/V in a cache spread over
the G ranks: the N = T − P new tokens need their queries run against every key before them. Each
rank holds the cache of P/G tokens (contiguous: every new query sees every cached key, so the
cache's layout does not change the work) and N/G new tokens (zigzag over the new part, balancing
the causal work among new tokens); its K/V buffer is its cache then its new tokens. The plan is
that partition of all T tokens; the queries are each rank's new tokens. Forward only (prefill).

**pass-KV** (``pass-kv:P``): the ring, with K/V of cache *and* new tokens travelling — at step s
rank r holds the K/V of owner (r − s) mod G (``shard_bytes((P + N)/G)`` per message) and makes two
calls: its new queries against the owner's cache (full) and against the owner's new tokens (the
zigzag ring's block, shifted past the cache rows), each merged.

**pass-Q** (``pass-q:P``): queries travel instead (``H·d`` values per token, against the K/V's
``2·H_kv·d``), K/V stay: at step s rank r holds the new queries of owner (r − s) mod G (payload
``q``, steps 0 … G−2) and computes them against its own cache and new tokens, keeping one partial
output per owner. After the ring an all-to-all (one step, every peer at once) returns every
partial output and its LSE (``part_out``: out in the input dtype, LSE fp32) to the queries' owner,
and a last step merges the G partials (``merge_partials``). It wins when few new tokens meet a
long cache: a message carries N/G tokens' queries, not (P + N)/G tokens' K/V.

Masks: causal or full (a sliding window is refused). The runtime does not run these programs
(prefill is simulated only).

**Memory**: the K/V of the rank's T/G tokens for every layer; per layer the new queries and
output, and — pass-KV — the travelling K/V buffers of T/G tokens, or — pass-Q — the travelling
query buffers and the G partial outputs of N/G rows.
"""
from __future__ import annotations

import numpy as np

from ..blocks import BlockPlan, CallShapes
from ..program import KernelOp, MemoryOp, Messages, Program, Stage
from ..schedules import Plan, parse_mask
from ..units import InputError
from ..workload import Workload
from .base import NotApplicable, Strategy
from .ring import _merge_bytes

__all__ = ["PassKV", "PassQ", "build_prefill"]


def _layout(workload: Workload, G: int, P: int, mask, spec: str):
    """``(token plan, new-token zigzag plan, cache tokens per rank)``, or the reason it cannot be."""
    T = workload.seq_len
    N = T - P
    mk = parse_mask(mask)
    if mk.kind not in ("causal", "full"):
        raise NotApplicable(f"{spec}: mask {mk} is not modelled for prefill with a cache; use causal or full")
    if P < 0 or N <= 0:
        raise InputError(f"{spec}: --cached-tokens {P} must be at least 0 and less than the sequence length {T}")
    if P % G:
        raise InputError(f"{spec}: the {P} cached tokens do not split over {G} ranks; use a multiple of {G} "
                         f"(e.g. {P // G * G} or {(P // G + 1) * G})")
    if N % (2 * G):
        lo, hi = N // (2 * G) * 2 * G, (N // (2 * G) + 1) * 2 * G
        raise InputError(f"{spec}: the {N} new tokens (sequence length {T} − {P} cached) are not divisible by "
                         f"2×world size = {2 * G} for the zigzag layout; nearest valid sequence lengths: "
                         + (f"{P + lo} or {P + hi}" if lo > 0 else f"{P + hi}"))
    c, n = P // G, N // G
    new = Plan("zigzag", G, N, mk)
    tokens = [np.concatenate([np.arange(r * c, (r + 1) * c), P + new.tokens(r)]) for r in range(G)]
    return Plan.from_tokens(G, T, tokens, mk, name=spec), new, c, n


def _shifted(shapes: CallShapes, cols: int) -> CallShapes:
    """The calls with their key rows moved past ``cols`` cached rows of the buffer."""
    return CallShapes([BlockPlan(b.kind, b.r0, b.r1, b.c0 + cols, b.c1 + cols, b.pairs, b.mask) if b.kind != "empty"
                       else b for b in shapes.blocks])


def build_prefill(workload: Workload, G: int, mask, P: int, pass_q: bool, spec: str) -> Program:
    """The pass-KV or pass-Q program (see the module docstring)."""
    plan, new, c, n = _layout(workload, G, P, mask, spec)
    m, B, bpv = workload.model, workload.batch, workload.bytes_per_value
    shapes, ids = new.call_shapes
    shapes = _shifted(shapes, c)
    ranks = np.arange(G, dtype=np.int64)
    s = np.arange(G, dtype=np.int64)[:, None]
    holder = (ranks[None, :] - s) % G                  # whose K/V (pass-KV) or queries (pass-Q) rank r holds
    if pass_q:  # queries of owner o against this rank's keys: the ring's block of o at step (o − r) mod G
        sid = ids[holder, (holder - ranks[None, :]) % G]
    else:
        sid = np.ascontiguousarray(ids.T)
    cache = CallShapes([BlockPlan("full", 0, n, 0, c, n * c)] if c else [BlockPlan("empty")])
    zero = np.zeros((G, G), dtype=np.int64)
    merge = _merge_bytes(workload, np.full((G, G), n))
    kv_owner = zero - 1 if pass_q else holder

    def ops(a: int, b: int):
        return (KernelOp("fwd", cache, zero[a:b], kv_owner[a:b]), MemoryOp("merge", merge[a:b] * bool(c), 6),
                KernelOp("fwd", shapes, sid[a:b], kv_owner[a:b]), MemoryOp("merge", merge[a:b], 6))

    src, dst = ranks[None, :], ((ranks + 1) % G)[None, :]
    if pass_q:
        msg = Messages(src, dst, np.array([[float(B * n * m.heads * m.head_dim * bpv)]]), (("q",),))
    else:
        msg = Messages(src, dst, np.array([[float(workload.shard_bytes(c + n))]]), (("kv",),))
    stages = []
    if G > 1:
        stages.append(Stage("fwd", 0, G - 1, ops(0, G - 1), (msg,), "pass-Q ring" if pass_q else "pass-KV ring"))
    stages.append(Stage("fwd", G - 1, 1, ops(G - 1, G), (), "last ring step"))
    if pass_q and G > 1:
        part = float(B * n * m.heads * (m.v_dim * bpv + 4))
        j = np.arange(1, G, dtype=np.int64)
        a2a = Messages(np.repeat(ranks, G - 1)[None, :], ((ranks[:, None] + j[None, :]) % G).reshape(1, -1),
                       np.array([[part]]), (("part_out",),))
        stages.append(Stage("fwd", G, 1, (), (a2a,), "all-to-all: partial outputs home"))
        stages.append(Stage("fwd", G + 1, 1, (MemoryOp("merge_partials", np.full((1, G), 3.0 * (G - 1) * part)),), (),
                            "merge the partial outputs"))
    meta = {"layout": spec, "mask": str(plan.mask), "seq_len": plan.seq_len, "phase": "fwd",
            "tokens_per_rank": plan.tokens_per_rank, "heads": m.heads, "cached_tokens": P, "new_tokens": G * n}
    return Program(G, stages, strategy=spec, meta=meta, plan=plan)


class _Prefill(Strategy):
    pass_q = False
    name = ""

    def __init__(self, cached_tokens: int | None):
        if cached_tokens is None:
            raise InputError(f"{self.name} needs the cached prefix: write {self.name}:P or give --cached-tokens P")
        self.P = int(cached_tokens)
        self.spec = f"{self.name}:{self.P}"

    def plan(self, workload: Workload, world_size: int, mask) -> Plan:
        return _layout(workload, world_size, self.P, mask, self.spec)[0]

    def build(self, workload: Workload, world_size: int, mask, phase: str) -> Program:
        if phase != "fwd":
            raise NotApplicable(f"{self.spec}: prefill with a cached prefix is forward only; use --phase fwd")
        return build_prefill(workload, world_size, mask, self.P, self.pass_q, self.spec)

    def memory(self, workload: Workload, world_size: int, mask, phase: str, double_buffer: bool = True) -> dict:
        from ..memory import kv_memory

        _, _, c, n = _layout(workload, world_size, self.P, mask, self.spec)
        m, B, bpv = workload.model, workload.batch, workload.bytes_per_value
        bufs = 2 if double_buffer else 1
        q = B * n * m.heads * m.head_dim * bpv
        o = B * n * m.heads * (m.v_dim * bpv + 4) + B * n * m.heads * (m.v_dim + 1) * 4
        if self.pass_q:
            work = q * (1 + bufs) + o + world_size * B * n * m.heads * (m.v_dim * bpv + 4)
        else:
            work = q + o + workload.shard_bytes(c + n) * (1 + bufs)
        kv = kv_memory(workload, world_size)["kv_shard_per_gpu_bytes"]
        return {"ring_working_set_bytes": int(work), "kv_shard_per_gpu_bytes": int(kv),
                "peak_memory_bytes": int(work + kv)}


class PassKV(_Prefill):
    """Prefill with a cached prefix, K/V (cache and new tokens) travelling round the ring (``pass-kv:P``)."""

    name = "pass-kv"


class PassQ(_Prefill):
    """Prefill with a cached prefix, queries travelling round the ring and partial outputs returned
    by an all-to-all (``pass-q:P``)."""

    name = "pass-q"
    pass_q = True
