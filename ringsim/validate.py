"""Validation: simulate exactly the measured configuration and compare, step by step.

For a measured timeline the configuration is rebuilt from its metadata — schedule, world size,
sequence length, mask, phase, workload dims (heads, kv_heads, head_dim, dtype, batch) — and
simulated — the same program the run executed (:mod:`ringsim.strategies`) — on the given topology (``localhost-cpu`` for
CPU runs unless another is given, widened to the run's world size when it had more than four rank
processes: :func:`localhost_cpu`) with the given cost model (a calibration, told the ring size so
its core-sharing factors apply).

What is compared (all per timed iteration; a measured trace may hold several, told apart by the
order in which each (rank, phase, kind, step) occurs — see :func:`ringsim.calibration.assign_iterations`):

- **makespan**: measured = from the iteration's first ring row (compute/send/recv) to its last
  row's end (the last merge, or the backward's dK/dV return), median over iterations; predicted =
  the simulated program's ``layer_makespan_s`` (when its last rank finished) — with a calibration
  that records its block-to-block dispersion or the ranks' start skew, the median over ``samples``
  (25) simulations whose blocks are drawn from it and whose ranks start their first step by a
  measured skew (one draw = one plausible iteration). The makespan of median blocks started
  together is kept as ``predicted_makespan_nominal_s``; the per-rank, per-step and timeline
  comparisons use the draw whose makespan is nearest the median.
  ``makespan_error`` = (predicted − measured) / measured, signed.
- **per rank**: compute (block time: step start to end of compute + merge, as calibrated),
  transfer (each send's rendezvous-corrected duration) and wait totals, measured (mean per
  iteration) vs predicted, with signed relative errors.
- **per step** (phase, step): mean block time over ranks, mean transfer time, mean wait per rank,
  when the step's last block ends (from the iteration start), and the mean message bytes on both
  sides — which are equal, since the simulator and the runtime run one program.
- **schedule ranking**: with several traces of one configuration (same world size, length,
  mask, phase) and different schedules, whether the predicted order by makespan is the measured
  one, and each schedule's speedup over contiguous measured and predicted.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .calibration import assign_iterations, block_samples, transfer_samples, workload_from_meta
from .costs import CostModel, RooflineCost
from .timeline import Timeline
from .units import InputError

DISPERSION_SAMPLES = 25  # draws of the block-to-block dispersion per prediction (0: nominal only)

__all__ = ["measured_config", "validate_timeline", "validate_runs", "measured_makespan_s", "rel_error"]


def rel_error(pred: float, meas: float) -> float | None:
    if meas is None or pred is None or not meas > 0:
        return None
    return (float(pred) - float(meas)) / float(meas)


def measured_config(meta: dict, label: str = "trace") -> dict:
    """Schedule, world size, seq_len, mask, phase and Workload of a measured run, from its metadata."""
    missing = [k for k in ("schedule", "world_size", "seq_len") if not meta.get(k)]
    wl = workload_from_meta(meta)
    if wl is None:
        missing.append("workload (heads, head_dim)")
    if missing:
        raise InputError(f"{label}: metadata lacks {', '.join(missing)}; validate needs the run's configuration "
                         "(ringsim run records it; for Kineto traces give --run-config KEY=VALUE)")
    phase = str(meta.get("phase", "fwd"))
    if phase not in ("fwd", "fwd+bwd"):
        raise InputError(f"{label}: unknown phase {phase!r} in metadata; expected fwd or fwd+bwd")
    return {"schedule": str(meta["schedule"]), "world_size": int(meta["world_size"]), "seq_len": int(meta["seq_len"]),
            "mask": str(meta.get("mask", "causal")), "phase": phase, "workload": wl}


def _iter_frame(tl: Timeline) -> pd.DataFrame:
    df = tl.df.copy()
    df["iter"] = assign_iterations(df)
    df["kind"] = df["kind"].astype(str)
    df["phase"] = df["phase"].astype(str)
    return df


def measured_makespan_s(tl: Timeline) -> tuple[float, list[float]]:
    """(median, per-iteration list) of the makespan: first ring row to the end of the last row."""
    df = _iter_frame(tl)
    spans = []
    for _, d in df.groupby("iter"):
        ring = d[d["kind"].isin(["compute", "send", "recv"])]
        comp = d[d["kind"].isin(["compute", "merge"])]
        if len(ring) and len(comp):
            spans.append(float(d["end_s"].max() - ring["start_s"].min()))
    if not spans:
        raise InputError("the measured timeline has no compute rows; nothing to validate")
    return float(np.median(spans)), spans


def _totals(blocks: pd.DataFrame, xfers: pd.DataFrame, waits: pd.DataFrame, G: int, n_iter: int):
    comp = np.zeros(G)
    tran = np.zeros(G)
    wait = np.zeros(G)
    if len(blocks):
        s = blocks.groupby("rank")["time_s"].sum()
        comp[s.index.to_numpy()] = s.to_numpy()
    if len(xfers):
        s = xfers.groupby("rank")["time_s"].sum()
        tran[s.index.to_numpy()] = s.to_numpy()
    if len(waits):
        s = (waits["end_s"] - waits["start_s"]).groupby(waits["rank"]).sum()
        wait[s.index.to_numpy()] = s.to_numpy()
    return comp / n_iter, tran / n_iter, wait / n_iter


def _side(tl: Timeline) -> dict:
    """Per-iteration-averaged rank totals and per-step figures of one timeline."""
    df = _iter_frame(tl)
    G = int(tl.meta.get("world_size") or df["rank"].max() + 1)
    blocks = block_samples(tl)
    xfers = transfer_samples(tl)
    n_iter = int(df["iter"].max() + 1) if len(df) else 1
    waits = df[df["kind"] == "wait"]
    comp, tran, wait = _totals(blocks, xfers, waits, G, n_iter)
    # iteration start: the first ring row of each iteration
    ring = df[df["kind"].isin(["compute", "send", "recv"])]
    it_start = ring.groupby("iter")["start_s"].min()
    steps = {}
    if len(blocks):
        b = blocks.assign(rel_end=blocks["end_s"] - blocks["iter"].map(it_start))
        for (ph, st), d in b.groupby(["phase", "step"]):
            steps[(ph, int(st))] = {"compute_s": float(d["time_s"].mean()),
                                    "end_s": float(d.groupby("iter")["rel_end"].max().median())}
    if len(xfers):
        for (ph, st), d in xfers.groupby(["phase", "step"]):
            e = steps.setdefault((ph, int(st)), {})
            e["transfer_s"] = float(d["time_s"].mean())
            e["bytes"] = float(d["bytes"].mean())
    if len(waits):
        w = waits.assign(d=waits["end_s"] - waits["start_s"])
        for (ph, st), d in w.groupby(["phase", "step"]):
            # mean per rank and iteration (ranks that did not wait count as 0)
            steps.setdefault((ph, int(st)), {})["wait_s"] = float(d["d"].sum() / (G * n_iter))
    return {"G": G, "compute": comp, "transfer": tran, "wait": wait, "steps": steps}


def localhost_cpu(world_size: int):
    """The ``localhost-cpu`` preset (the machine CPU runs are measured on), widened to
    ``world_size`` rank processes when the run had more than the preset's four: every process
    gets the same loopback link to the shared-memory hub."""
    from .topoload import load_topology
    from .topology import Link, Topology

    base = load_topology("localhost-cpu")
    if world_size <= base.num_gpus:
        return base
    up = next(l for l in base.links if l.src == base.gpus[0])
    down = next(l for l in base.links if l.dst == base.gpus[0])
    gpus = [f"cpu{i}" for i in range(world_size)]
    links = []
    for g in gpus:
        for src, dst, tmpl in ((g, up.dst, up), (down.src, g, down)):
            links.append(Link(len(links), src, dst, tmpl.bandwidth_Bps, tmpl.latency_s, tmpl.link_class))
    return Topology(f"{base.name}[{world_size}]", base.device, gpus, links, base.source, dict(base.meta))


def validate_timeline(tl: Timeline, cost_model: CostModel | None = None, topology=None, label: str = "trace",
                      engine: str = "auto", samples: int = DISPERSION_SAMPLES) -> tuple[dict, Timeline]:
    """Simulate the measured configuration; return (validation dict, predicted timeline)."""
    from .engines import simulate_program
    from .strategies import program_from_meta

    cfg = measured_config(tl.meta, label)
    G = cfg["world_size"]
    if topology is None:
        if str(tl.meta.get("device", "cpu")).lower() != "cpu":
            raise InputError(f"{label}: not a CPU run; give --topology for the machine it ran on")
        topology = localhost_cpu(G)
    topology.check_world_size(G)
    cost = cost_model or RooflineCost()
    program = program_from_meta(tl.meta, G, cfg["workload"], cfg["phase"])
    res = simulate_program(program, cfg["workload"], topology, cost, engine=engine)
    pred_tl = res.timeline
    pred_tl = Timeline(pred_tl.df, dict(pred_tl.meta))
    pred_tl.meta.setdefault("world_size", G)
    meas_ms, spans = measured_makespan_s(tl)
    pred_ms = nominal_ms = float(res.layer_makespan_s)
    draws = []
    if samples and hasattr(cost, "with_dispersion") and cost.has_dispersion(G):
        runs = []
        for k in range(samples):
            c = cost.with_dispersion(k, G)
            runs.append(simulate_program(program, cfg["workload"], topology, c, engine=engine, release_s=c.release_s))
            draws.append(float(runs[-1].layer_makespan_s))
        pred_ms = float(np.median(draws))
        # the per-rank and per-step figures (and the predicted timeline) of the draw whose makespan
        # is nearest the median: one plausible iteration, as the measured ones are
        rep = runs[int(np.argmin(np.abs(np.asarray(draws) - pred_ms)))].timeline
        pred_tl = Timeline(rep.df, dict(rep.meta))
        pred_tl.meta.setdefault("world_size", G)
    m, p = _side(tl), _side(pred_tl)
    per_rank = []
    for r in range(G):
        row = {"rank": r}
        for k in ("compute", "transfer", "wait"):
            row[f"measured_{k}_s"] = float(m[k][r])
            row[f"predicted_{k}_s"] = float(p[k][r])
            row[f"{k}_error"] = rel_error(p[k][r], m[k][r])
        per_rank.append(row)
    per_step = []
    order = {"fwd": 0, "bwd": 1}
    for key in sorted(set(m["steps"]) | set(p["steps"]), key=lambda k: (order.get(k[0], 2), k[1])):
        ms, ps = m["steps"].get(key, {}), p["steps"].get(key, {})
        row = {"phase": key[0], "step": key[1]}
        for side in (ms, ps):  # a step with blocks but no wait row waited 0
            if "compute_s" in side:
                side.setdefault("wait_s", 0.0)
        for k in ("compute_s", "transfer_s", "wait_s", "end_s"):
            row[f"measured_{k}"] = ms.get(k)
            row[f"predicted_{k}"] = ps.get(k)
            row[f"{k[:-2]}_error"] = rel_error(ps.get(k), ms.get(k))
        row["measured_bytes"], row["predicted_bytes"] = ms.get("bytes"), ps.get("bytes")
        per_step.append(row)
    out = {
        "trace": label, "schedule": cfg["schedule"], "world_size": G, "seq_len": cfg["seq_len"],
        "mask": cfg["mask"], "phase": cfg["phase"], "workload": tl.meta.get("workload"),
        "topology": topology.name, "cost_model": cost.describe(), "engine": res.engine,
        "iterations": len(spans), "measured_makespan_s": meas_ms, "measured_makespan_per_iteration_s": spans,
        "predicted_makespan_s": pred_ms, "makespan_error": rel_error(pred_ms, meas_ms),
        "predicted_makespan_nominal_s": nominal_ms, "dispersion_draws": len(draws),
        "per_rank": per_rank, "per_step": per_step,
    }
    return out, pred_tl


def schedule_ranking(cases: list[dict]) -> list[dict]:
    """Per configuration with ≥ 2 schedules: measured vs predicted order and speedups over contiguous."""
    groups: dict[tuple, list[dict]] = {}
    for c in cases:
        groups.setdefault((c["world_size"], c["seq_len"], c["mask"], c["phase"]), []).append(c)
    out = []
    for (G, T, mask, phase), cs in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        by = {}
        for c in cs:  # one entry per schedule (the first trace of it)
            by.setdefault(c["schedule"], c)
        if len(by) < 2:
            continue
        meas = sorted(by, key=lambda s: by[s]["measured_makespan_s"])
        pred = sorted(by, key=lambda s: by[s]["predicted_makespan_s"])
        row = {"world_size": G, "seq_len": T, "mask": mask, "phase": phase, "measured_order": meas,
               "predicted_order": pred, "ranking_matches": meas == pred}
        if "contiguous" in by:
            base = by["contiguous"]
            row["speedup_vs_contiguous"] = {
                s: {"measured": base["measured_makespan_s"] / c["measured_makespan_s"],
                    "predicted": base["predicted_makespan_s"] / c["predicted_makespan_s"]}
                for s, c in by.items()}
        out.append(row)
    return out


def validate_runs(runs: list[tuple[str, Timeline]], cost_model: CostModel | None = None, topology=None,
                  engine: str = "auto") -> tuple[dict, list[tuple[str, Timeline, Timeline]]]:
    """Validate every run. One run → its flat dict; several → ``{"cases", "schedule_ranking",
    "makespan_error" (the largest in magnitude), …}``. Also returns (label, measured, predicted)."""
    if not runs:
        raise InputError("no traces given; pass one or more measured traces")
    cases, pairs = [], []
    for label, tl in runs:
        v, pred = validate_timeline(tl, cost_model, topology, label, engine)
        cases.append(v)
        pairs.append((label, tl, pred))
    ranking = schedule_ranking(cases)
    if len(cases) == 1:
        doc = dict(cases[0])
        doc["schedule_ranking"] = ranking
        return doc, pairs
    worst = max(cases, key=lambda c: abs(c["makespan_error"] or 0.0))
    doc = {"makespan_error": worst["makespan_error"], "worst_case": worst["trace"],
           "mean_abs_makespan_error": float(np.mean([abs(c["makespan_error"] or 0.0) for c in cases])),
           "per_rank": worst["per_rank"], "per_step": worst["per_step"],
           "cases": cases, "schedule_ranking": ranking,
           "ranking_matches": all(r["ranking_matches"] for r in ranking) if ranking else None}
    return doc, pairs
