"""The roofline cost model: FLOPs at the device's achieved attention throughput.

A kernel call of ``pairs`` allowed (query, key) pairs costs ``pairs × flops_per_pair(phase) /
(peak_flops × efficiency)`` plus a per-kernel overhead; when the device sets a tile shape, a
partly masked tile is charged as a full tile (``tiles × tile_q × tile_k`` pairs, at most the
call's rows × columns). Backward FLOPs are :data:`ringsim.workload.BWD_FLOPS_FACTOR` × forward.
Memory ops between kernels (merges, accumulations) cost nothing here: the ideal roofline prices
attention FLOPs only (the GPU-faithful :class:`~ringsim.costs.kernels.ProfileCost` prices them).
"""
from __future__ import annotations

import numpy as np

from .base import CostModel

__all__ = ["RooflineCost"]


class RooflineCost(CostModel):
    """FLOPs / (device peak × efficiency) + per-kernel overhead; 0 for empty calls."""

    name = "roofline"

    def call_seconds(self, workload, topology, q_rows, k_rows, pairs, kind, phase, tiles=None, heads=None):
        dev = topology.device
        pairs = np.asarray(pairs, dtype=np.float64)
        tile = dev.tile
        if tiles is not None and tile:
            charged = np.asarray(tiles, dtype=np.float64) * (tile[0] * tile[1])
            charged = np.minimum(charged, np.asarray(q_rows, dtype=np.float64) * np.asarray(k_rows, dtype=np.float64))
        else:
            charged = pairs
        flops = charged * workload.flops_per_pair(phase) * self.head_share(workload, heads)
        t = flops / (dev.peak_flops * dev.efficiency) + dev.kernel_overhead_s
        return np.where((pairs > 0) & ~self.empty(kind), t, 0.0)

    def memory_seconds(self, op, ctx):
        return np.zeros(np.shape(op.bytes))

    def describe(self) -> dict:
        from ..workload import BWD_FLOPS_FACTOR

        return {"name": self.name, "bwd_flops_factor": BWD_FLOPS_FACTOR}
