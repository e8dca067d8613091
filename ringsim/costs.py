"""Cost models: how long one block of attention takes on one rank (the pluggable compute model).

A **block** is the work rank r does at ring step s: its queries (``q_tokens``) against the K/V shard
it holds (``k_tokens``), of which ``pairs[r, s]`` (query, key) pairs are allowed by the mask. A cost
model maps a whole ring's blocks — arrays indexed ``[rank, step]`` — to seconds at once, so the
fast path stays vectorised.

Block kinds (what a calibrated model fits separately, since kernels differ by mask shape):
``empty`` (no allowed pair: nothing runs), ``full`` (every pair allowed), ``diagonal`` (the causal
triangle including the diagonal, n(n+1)/2), ``lower`` (strictly lower triangle, n(n−1)/2, striped's
blocks from later owners) and ``partial`` (anything else: sliding windows, uneven cuts).

The default :class:`RooflineCost` charges FLOPs / (peak × efficiency × speed factor), with a partly
masked tile charged as a full tile when the device sets a tile shape, plus a per-kernel overhead.
Backward costs ``bwd_flops_factor`` (2.5) × the forward FLOPs of the same pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .schedules import Plan
from .topology import Topology
from .workload import Workload

__all__ = ["BlockBatch", "CostModel", "RooflineCost", "classify_blocks", "BLOCK_KINDS", "BWD_FLOPS_FACTOR"]

BLOCK_KINDS = ("empty", "full", "diagonal", "lower", "partial")
BWD_FLOPS_FACTOR = 2.5


def classify_blocks(plan: Plan) -> np.ndarray:
    """Block kind per (rank, step) as an array of strings (see module docstring)."""
    pairs = plan.pairs
    n = plan.tokens_per_rank
    kinds = np.full(pairs.shape, "partial", dtype=object)
    kinds[pairs == n * n] = "full"
    kinds[pairs == n * (n + 1) // 2] = "diagonal"
    kinds[(pairs == n * (n - 1) // 2) & (n > 1)] = "lower"
    kinds[pairs == 0] = "empty"
    return kinds


@dataclass
class BlockBatch:
    """All blocks of one ring, indexed [rank, step]."""

    plan: Plan
    workload: Workload
    topology: Topology
    phase: str  # "fwd" or "bwd"
    pairs: np.ndarray
    tiles: np.ndarray | None
    kinds: np.ndarray

    @property
    def q_tokens(self) -> int:
        return self.plan.tokens_per_rank

    @property
    def k_tokens(self) -> int:
        return self.plan.tokens_per_rank

    def speed_factors(self) -> np.ndarray:
        """Per-rank speed multiplier (what-if stragglers), shape (G, 1)."""
        G = self.plan.world_size
        return np.array([self.topology.device_of(r).speed_factor for r in range(G)], dtype=np.float64)[:, None]

    @classmethod
    def build(cls, plan: Plan, workload: Workload, topology: Topology, phase: str) -> "BlockBatch":
        tile = topology.device.tile
        return cls(plan, workload, topology, phase, plan.pairs, plan.tiles(*tile) if tile else None,
                   classify_blocks(plan))


class CostModel:
    """Interface: ``compute_s(batch)`` → seconds per block, array shaped like ``batch.pairs``.

    ``apply_to_topology`` lets a model replace link figures (a calibration fits latency and
    bandwidth per link class); the default leaves the topology as it is.
    """

    name = "base"

    def compute_s(self, batch: BlockBatch) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def apply_to_topology(self, topology: Topology) -> Topology:
        return topology

    def describe(self) -> dict:
        return {"name": self.name}


class RooflineCost(CostModel):
    """FLOPs / (device peak × efficiency × speed factor) + per-kernel overhead; 0 for empty blocks."""

    name = "roofline"

    def __init__(self, bwd_flops_factor: float = BWD_FLOPS_FACTOR):
        self.bwd_flops_factor = bwd_flops_factor

    def flops(self, batch: BlockBatch) -> np.ndarray:
        fpp = batch.workload.flops_per_pair()
        tile = batch.topology.device.tile
        if batch.tiles is not None and tile:
            charged = batch.tiles.astype(np.float64) * (tile[0] * tile[1])
            # a tile never holds more pairs than the block: cap at q × k tokens
            charged = np.minimum(charged, float(batch.q_tokens) * batch.k_tokens)
        else:
            charged = batch.pairs.astype(np.float64)
        f = charged * fpp
        if batch.phase == "bwd":
            f = f * self.bwd_flops_factor
        return f

    def compute_s(self, batch: BlockBatch) -> np.ndarray:
        dev = batch.topology.device
        rate = dev.peak_flops * dev.efficiency * batch.speed_factors()
        t = self.flops(batch) / rate + dev.kernel_overhead_s
        return np.where(batch.pairs > 0, t, 0.0)

    def describe(self) -> dict:
        return {"name": self.name, "bwd_flops_factor": self.bwd_flops_factor}
