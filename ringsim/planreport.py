"""The plan as numbers: per-rank, per-step work and bytes of one ring (one attention layer)."""
from __future__ import annotations

import numpy as np

from .schedules import Plan
from .workload import Workload

__all__ = ["plan_report"]


def plan_report(plan: Plan, workload: Workload, tile: tuple[int, int] | None = (128, 128),
                cost_model=None, topology=None, per_step: bool = True) -> dict:
    """Everything `ringsim plan` shows, as one JSON-ready dict.

    FLOPs and bytes are for one ring, i.e. one attention layer; ``*_all_layers`` multiplies by the
    attention layer count. ``kv_bytes_received`` at step s is the shard rank r computes on at step
    s, received from r−1 during step s−1 (0 at step 0: its own shard). With a ``cost_model`` and a
    ``topology`` (its device), the forward ring's compute seconds come from the cost model (the
    roofline, a calibration, …): ``ideal_compute_s`` is the total spread evenly over the ranks,
    ``max_rank_compute_s`` the busiest rank's.
    """
    G = plan.world_size
    pairs = plan.pairs
    tiles = plan.tiles(*tile) if tile else None
    fpp = workload.flops_per_pair()
    flops = pairs.astype(np.float64) * fpp
    shard_bytes = workload.shard_bytes(plan.tokens_per_rank)
    recv = np.full((G, G), shard_bytes, dtype=np.int64)
    recv[:, 0] = 0
    per_rank = []
    for r in range(G):
        row = {"rank": r, "tokens": plan.tokens_per_rank, "pairs": int(pairs[r].sum()),
               "flops": float(flops[r].sum()), "kv_bytes_received": int(recv[r].sum())}
        if tiles is not None:
            row["tiles"] = int(tiles[r].sum())
        per_rank.append(row)
    total_flops = float(flops.sum())
    doc = {
        **plan.describe(),
        "workload": workload.describe(),
        "tile": list(tile) if tile else None,
        "flops_per_pair": fpp,
        "shard_bytes": shard_bytes,
        "total_pairs": int(pairs.sum()),
        "total_flops": total_flops,
        "total_flops_all_layers": total_flops * workload.layers,
        "imbalance": plan.imbalance(),
        "ideal_flops_per_rank": total_flops / G,
        "max_flops_per_rank": float(flops.sum(axis=1).max()),
        "per_rank": per_rank,
    }
    if tiles is not None:
        doc["total_tiles"] = int(tiles.sum())
        doc["tile_imbalance"] = float(tiles.sum(axis=1).max() / max(tiles.sum(axis=1).mean(), 1e-300))
    if cost_model is not None and topology is not None:
        from .costs import CostContext
        from .strategies import build_ring

        program = build_ring(plan, workload, "fwd")
        secs = cost_model.step_seconds(CostContext(program, workload, topology)).sum(axis=0)  # per rank
        doc["cost_model"] = cost_model.name
        doc["ideal_compute_s"] = float(secs.sum() / G)
        doc["ideal_compute_s_all_layers"] = doc["ideal_compute_s"] * workload.layers
        doc["max_rank_compute_s"] = float(secs.max())
    if per_step:
        steps = []
        for r in range(G):
            for s in range(G):
                row = {"rank": r, "step": s, "owner": plan.shard_owner(r, s), "pairs": int(pairs[r, s]),
                       "flops": float(flops[r, s]), "kv_bytes_received": int(recv[r, s])}
                if tiles is not None:
                    row["tiles"] = int(tiles[r, s])
                steps.append(row)
        doc["steps"] = steps
    return doc
