"""The plan as numbers: per-rank, per-step work and bytes of one ring (one attention layer)."""
from __future__ import annotations

import numpy as np

from .schedules import Plan
from .workload import Workload

__all__ = ["plan_report"]


def plan_report(plan: Plan, workload: Workload, tile: tuple[int, int] | None = (128, 128),
                cost_model=None, topology=None, per_step: bool = True, implementation: str = "ringsim") -> dict:
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

        program = build_ring(plan, workload, "fwd", implementation)
        secs = cost_model.step_seconds(CostContext(program, workload, topology)).sum(axis=0)  # per rank
        doc["cost_model"] = cost_model.describe().get("profile", cost_model.name)
        doc["implementation"] = implementation
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


def documents_report(layout, pairs: np.ndarray, workload: Workload, mask, compare: dict,
                     peak_flops: float | None = None, efficiency: float = 1.0, per_step: bool = True) -> dict:
    """`ringsim plan --documents` for one pack: per-rank (and per-step) work of ``layout``, its
    imbalance, and ``compare`` ({layout name: its Layout}) summarised by imbalance.

    ``imbalance`` is max/mean of per-rank work (the pair table's row sums). ``lockstep_imbalance``
    is Σ_s max_r pairs[r, s] over the mean work: what a ring whose steps all wait for the slowest
    rank would lose — a layout can balance totals yet not steps. Kernel tiles are not counted for
    document masks.
    """
    from .documents import imbalance, work_per_rank

    G = layout.world_size
    fpp = workload.flops_per_pair()
    flops = pairs.astype(np.float64) * fpp
    shard_bytes = workload.shard_bytes(layout.tokens_per_rank)
    real = layout.real_tokens_per_rank()
    total = int(pairs.sum())
    mean = total / G
    doc = {
        "documents": None,  # filled in by the caller (the spec)
        "layout": layout.describe(),
        "mask": str(mask),
        "workload": workload.describe(),
        "flops_per_pair": fpp,
        "shard_bytes": shard_bytes,
        "total_pairs": total,
        "total_flops": float(flops.sum()),
        "total_flops_all_layers": float(flops.sum()) * workload.layers,
        "imbalance": imbalance(pairs),
        "lockstep_imbalance": float(pairs.max(axis=0).sum() / mean) if mean > 0 else 1.0,
        "max_flops_per_rank": float(flops.sum(axis=1).max()),
        "ideal_flops_per_rank": float(flops.sum()) / G,
    }
    if peak_flops:
        rate = peak_flops * efficiency
        doc["ideal_compute_s"] = doc["ideal_flops_per_rank"] / rate
        doc["ideal_compute_s_all_layers"] = doc["ideal_compute_s"] * workload.layers
        doc["max_rank_compute_s"] = doc["max_flops_per_rank"] / rate
    per_rank = []
    for r in range(G):
        row = {"rank": r, "tokens": layout.tokens_per_rank, "padding_tokens": int(layout.tokens_per_rank - real[r])}
        row.update(pairs=int(pairs[r].sum()), flops=float(flops[r].sum()),
                   work_vs_mean=float(pairs[r].sum() / mean) if mean > 0 else 1.0)
        per_rank.append(row)
    doc["per_rank"] = per_rank
    doc["layouts"] = [{"layout": name, "imbalance": imbalance(work_per_rank(lay, mask)),
                       "padded_len": lay.padded_len, "pad_tokens": lay.pad_tokens}
                      for name, lay in compare.items()]
    if per_step:
        doc["steps"] = [{"rank": r, "step": s, "owner": (r - s) % G, "pairs": int(pairs[r, s]),
                         "flops": float(flops[r, s])} for r in range(G) for s in range(G)]
    return doc
