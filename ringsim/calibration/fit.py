"""Calibration: fit the simulator's cost model to measured timelines.

The package: :mod:`.measured` (traces → samples), :mod:`.fits` (the typed fit models),
:mod:`.sharing` (the core-sharing model of an oversubscribed CPU host), :mod:`.model` (the
calibrated cost model) and this module (the fitting procedure, :func:`calibrate`).

``calibrate(runs)`` reads measured runs (ringsim Chrome traces written by ``ringsim run``, or
Kineto traces imported by :mod:`ringsim.kineto`) and fits three things; ``load_calibration`` (:mod:`.model`) turns
the resulting JSON into a :class:`CalibratedCost` that the engine uses instead of the roofline.

**(a) Compute time per block kind and phase.** A measured block's time runs from its step start
(the rank's first post, call or memory op of the step, i.e. the earliest of its
compute/merge/send/recv rows, but not before the rank's previous block ended) to the end of its
calls plus the memory ops around them — exactly the interval the simulator's protocol calls
"compute" (it starts compute at step start; posting the transfers, all-gather's copy of the
gathered K/V and merging the partial result are part of the rank's busy time). Work is measured as ``pairs`` scaled to the reference workload:
``work = pairs × head_share × flops_per_pair / flops_per_pair_ref`` (flops per pair = 2·B·H·(d_qk + d_v);
``head_share`` the share of the heads a call ran: H/U of H for Ulysses and USP), so a
fit transfers to other head counts, head sizes and batches, and — since it is per pair — to other
sequence lengths, world sizes and schedules. Four candidate models per (kind, phase):

- ``rows``: ``t = a·√work + b·work`` (a, b ≥ 0): a per-row cost (loads, softmax statistics, the
  merge; √work ∝ the block's rows for a given kind) plus a per-pair cost;
- ``roofline``: ``t = overhead_s + work × seconds_per_pair``, fitted on the per-size medians by
  least squares on relative error with both coefficients constrained ≥ 0 (a 2-variable NNLS:
  when the unconstrained optimum has a negative intercept the line goes through the origin);
- ``table``: piecewise-linear interpolation over the per-size medians, proportional scaling
  (t ∝ work) outside the measured range;
- ``power``: ``t = c × work^alpha`` through the per-size medians in log-log.

Each is scored by leave-one-size-out MAPE (every distinct work size is predicted from the others);
the lowest wins (ties, as with exactly two sizes, go to rows, then power, table, roofline:
``MODELS``) and all scores are recorded. Kinds without data fall back to the phase's pooled
fit (``"*"``); a phase without data falls back to forward × 2.5 (the roofline constant).

*Memory ops inside a block* (the forward merge, the backward accumulation, all-gather's
``gather`` copy and ``scatter``): when the runs record them (``merge`` rows, as ``ringsim run``
does), the kind fits above are fitted on the block's time *less* its measured memory ops, and the
memory ops get their own per-phase fit, ``memory_ops``: ``t = latency_s + bytes ×
seconds_per_byte`` over the bytes the program says the step's memory ops move (median per
distinct byte count, the same non-negative relative least squares). A block is then priced as
its kind's fit of the work plus the memory fit of its bytes, so strategies whose steps move very
different bytes for the same work (all-gather copies the whole K/V before its calls; Ulysses only
merges) share one kernel fit. Runs without ``merge`` rows (simulated timelines, profiler traces
whose merges are not mapped) keep the memory work inside the kind fits.

**(b) Latency and bandwidth per link class.** Each transfer's duration is taken from the later of
the two posts (the send on the sender, the receive on the receiver) to the later completion — the
interval the simulator's rendezvous protocol models. Per distinct message size the median duration
is taken (robust to the odd slow message), then ``t = latency_s + bytes / bandwidth_Bps`` is fitted
with the same non-negative relative least squares. The link class of a trace comes from its
metadata: ``link_class`` if given, ``"loopback"`` for CPU/gloo runs, else ``"link"``.

**(c) Residual effects.** *Core sharing*: on a CPU host, when ``world_size × threads_per_rank``
exceeds the cores, ranks time-share them. The base compute model is fitted on the runs that are
not oversubscribed; the oversubscribed runs then give ``factor = load^gamma`` with
``load = world_size × threads_per_rank / cpu_cores`` (gamma is the median of
log(measured/predicted)/log(load)), applied when the prediction is for such a host — unless
the load level has runs of its own (``contention.by_load``, used up to ``SHARE_MAX_WORLD_SIZE``
ranks). Then a prediction runs the ring as *processor sharing* (:func:`share_cores`): every
runnable thing — a rank inside a block, a transfer in flight (a loopback transfer is memory copies
made by the same cores) — gets an equal share of the cores; a rank that runs out of work hands its
core to the others, which is what makes a balanced schedule gain little on an oversubscribed host.
The calibration inverts that model on the measured runs: each block and each transfer becomes
*core-seconds* (:func:`core_time_s`, :func:`transfer_core_time_s`: its time with the time-sharing
taken out, from how many blocks and transfers were running at each instant). A core-second is a
core-second, so the runs with a core per rank join the kind fits (they add block sizes the level's
runs lack); the fits follow the per-size *mean* (time-sharing ranks finish when the total work is
done), and each (phase, kind) fit is then scaled so that over the level's own block sizes it
matches the level's runs on average (``level_scale``: the level sets the level, the pooled sizes
the shape). A transfer's core-seconds are fitted as latency + bytes / bandwidth (``transfer``), and
the mean off-core time before a block that the ring's transfers do not explain
(:func:`block_gaps_s`: a descheduled rank) is added as time that uses no core. The links the engine sends over are fitted on the runs that are not oversubscribed too,
and the oversubscribed runs give them their own ``load^gamma`` slowdown, applied when the ring size is known
(:meth:`CalibratedCost.for_world_size`, which ``ringsim validate`` uses). *Transfer
overlap*: the slope of the compute residual against the fraction of the block overlapped by the
rank's own transfers is measured and recorded (not applied: the engine fixes compute time before
it knows the overlap).

*Block-to-block dispersion*: on the runs with a core per rank, the quantiles of measured / fitted
block time per phase (``dispersion``). A makespan is a maximum over ranks, so the median over
iterations of measured makespans lies above the makespan of median blocks whenever the ranks are
balanced; :meth:`CalibratedCost.with_dispersion` draws every block's factor from these quantiles
(seeded), and ``ringsim validate`` predicts the median makespan over such draws.

*Start skew*: the ranks leave each iteration's barrier together but start their first step apart
(the iteration's prologue: allocations, a rank off its core) — 0.2–1 ms at G = 2 and 2–6 ms at
G = 4 on the 2-core host, most of what the oversubscribed ring's first off-core gap used to hold.
:func:`start_skew_s` measures every iteration's vector of offsets; the calibration keeps, per run,
each rank's median over its iterations (``start_skew``, by world size: one iteration's outlier —
a profiler's first-op overhead — does not move it); ``ringsim validate`` releases each rank's first
step by such a vector in every draw
(:meth:`CalibratedCost.with_dispersion`), so a collective first step (Ulysses' all-to-all,
all-gather) waits for its last rank as measured runs do.

Every component records its fit error (MAPE), and the JSON names the traces and their hardware.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..costs import BLOCK_KINDS
from ..timeline import Timeline
from ..units import InputError
from .fits import ConstantFit, ModelChoice, RooflineFit, fit_line_nonneg, mape, medians
from .measured import (block_samples, hardware, slots as _slots, trace_link_class, trace_load, transfer_samples,
                       workload_from_meta)
from .sharing import block_gaps_s, core_time_s, start_skew_s, transfer_core_time_s

__all__ = ["calibrate", "FORMAT", "SHARE_MAX_WORLD_SIZE", "DISPERSION_Q", "predict_entry", "predict_blocks",
           "predict_memory_ops"]

FORMAT = "ringsim-calibration/1"
SHARE_MAX_WORLD_SIZE = 64  # the processor-sharing replay is O(G³); larger rings use load^gamma
DISPERSION_Q = np.linspace(0.0, 1.0, 21)


def profile_work_s(profile, program, workload) -> np.ndarray:
    """Seconds of every (global step, rank) block's kernel calls, ``[N, G]``, as ``profile`` (a
    :class:`~ringsim.kernelprofile.KernelProfile`) prices them: each call by its shape (rows, key
    rows, mask, heads, phase), without launch overhead or memory work. A calibration that
    starts from a profile (``calibrate(..., profile=...)``) uses these as a block's *work*: the fit
    then carries the measured scale and per-block overheads, the profile the shape dependence."""
    from ..costs import CostContext
    from ..costs.kernels import ProfileCost
    from ..program import KernelOp
    from ..validate import localhost_cpu

    topo = localhost_cpu(program.world_size)
    overhead_s = topo.device.kernel_overhead_s  # added by the cost model per live call; not kernel time
    ctx = CostContext(program, workload, topo)
    cost = ProfileCost(profile)
    out = np.zeros((program.n_steps, program.world_size))
    n0 = 0
    for st in program.stages:
        for op in st.ops:
            if isinstance(op, KernelOp):
                t = cost.kernel_seconds(op, ctx)
                out[n0:n0 + st.n_steps] += np.where(t > 0, t - overhead_s, 0.0)
        n0 += st.n_steps
    return out


def _profile_work(b: pd.DataFrame, tl: Timeline, profile, label: str) -> np.ndarray:
    """Per measured block, the profile's seconds for its calls (:func:`profile_work_s`)."""
    from .measured import program_for

    meta = tl.meta
    G = int(meta.get("world_size") or (tl.df["rank"].max() + 1))
    program, wl = program_for(meta, G), workload_from_meta(meta)
    if program is None or wl is None:
        raise InputError(f"{label}: the trace does not say its strategy, length and model dims, so its calls "
                         "cannot be priced with --profile; calibrate it without --profile")
    W = profile_work_s(profile, program, wl)
    f = program.flat
    index = {(ph, int(st)): n for n, (ph, st) in enumerate(zip(f.step_phase, f.step_label))}
    rows = [index.get((ph, int(st))) for ph, st in zip(b["phase"], b["step"])]
    return np.array([W[n, r] if n is not None and 0 <= r < G else 0.0 for n, r in zip(rows, b["rank"])])


def calibrate(runs: list[tuple[str, Timeline]], profile=None) -> dict:
    """Fit the calibration document (see the module docstring) from ``[(label, timeline)]``.

    With ``profile`` (a :class:`~ringsim.kernelprofile.KernelProfile`, e.g. one ``ringsim
    profile-kernels`` measured on the machine), a block's work is the profile's time for its calls
    instead of its pairs (:func:`profile_work_s`): the fits map profile-seconds to measured
    seconds, so how a call's cost depends on its shape comes from the profile and only the scale and
    overheads from the runs — what carries a calibration to call shapes and lengths it never saw."""
    if not runs:
        raise InputError("no traces given; pass one or more measured traces")
    ref = None
    blocks, transfers, traces = [], [], []
    skews: dict[int, list] = {}
    for label, tl in runs:
        meta = tl.meta  # simulated timelines are accepted too (tests, what-ifs); "source" is recorded
        G = int(meta.get("world_size") or (tl.df["rank"].max() + 1 if len(tl.df) else 0))
        wl = workload_from_meta(meta)
        fpp = float(wl.flops_per_pair("fwd")) if wl is not None else 1.0
        if ref is None:
            ref = {"flops_per_pair": fpp, "workload": meta.get("workload", {}), "dims_known": wl is not None}
        b = block_samples(tl)
        if not len(b) or not (b["pairs"] > 0).any():
            raise InputError(f"{label}: no compute rows with pairs > 0; calibration needs a measured ring "
                             "trace with compute intervals and their pairs (for Kineto traces give --run-config "
                             "schedule=... seq_len=... heads=... head_dim=...)")
        # work: pairs × the share of the heads the calls ran (FLOPs scale with both) × per-pair FLOPs
        # — or, starting from a kernel profile, the profile's seconds for the block's calls
        if profile is not None:
            b["work"] = _profile_work(b, tl, profile, label)
        else:
            b["work"] = b["pairs"] * b["head_share"] * (fpp / ref["flops_per_pair"])
        mem_step = (b["kind"] == "memory").to_numpy()  # a step of memory ops only: its work is its bytes
        b.loc[mem_step, "work"] = b.loc[mem_step, "memory_bytes"]
        b["load"] = trace_load(meta)
        slots = _slots(meta)
        tr = transfer_samples(tl)
        shared = b["load"].iloc[0] > 1.0 + 1e-9
        b["core_time_s"] = core_time_s(b, slots, tr) if shared else b["time_s"]
        # the memory ops' share of the block, in core-seconds as the block is counted
        b["memory_core_s"] = b["memory_time_s"] * np.divide(b["core_time_s"], b["time_s"],
                                                            out=np.ones(len(b)), where=b["time_s"] > 0)
        vectors, first_rows = start_skew_s(tl)
        if vectors:  # the run's typical skew: per rank, the median over its iterations
            skews.setdefault(G, []).append(np.median(np.array(vectors), axis=0))
        b["gap_s"] = block_gaps_s(b, tr, first_rows) if shared else 0.0
        tr["core_time_s"] = transfer_core_time_s(tr, b, slots) if shared else tr["time_s"]
        b["trace"] = label
        blocks.append(b)
        tr["link_class"] = trace_link_class(meta)
        tr["trace"] = label
        transfers.append(tr)
        traces.append({"path": label, "schedule": meta.get("schedule"), "world_size": G,
                       "seq_len": meta.get("seq_len"), "mask": meta.get("mask"), "phase": meta.get("phase"),
                       "source": meta.get("source", "measured"), "load": trace_load(meta),
                       "link_class": trace_link_class(meta), "hardware": hardware(meta),
                       "iterations": int(b["iter"].max() + 1)})
    B = pd.concat(blocks, ignore_index=True)
    T = pd.concat(transfers, ignore_index=True)
    doc = {"format": FORMAT, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "block_time": "step start (first post, call or memory op) to the end of its calls and memory ops",
           "reference_workload": ref, "traces": traces, "hardware": traces[0]["hardware"]}
    if profile is not None:
        doc["work_basis"] = {"kind": "profile-seconds", "profile": profile.to_doc(),
                             "note": "a block's work is the profile's seconds for its calls; per-pair fields are "
                                     "per profile-second"}

    # (a) compute: base fit on runs that are not oversubscribed (all runs if none is)
    base_mask = B["load"] <= 1.0 + 1e-9
    if not base_mask.any():
        base_mask = pd.Series(True, index=B.index)
    base = B[base_mask & (B["pairs"] > 0)]
    compute = _fit_compute(B[base_mask])
    if "fwd" not in compute and "bwd" not in compute:
        raise InputError("no compute rows with pairs > 0 in the given traces; nothing to calibrate")
    doc["compute"] = compute
    doc["compute_mape"] = mape(predict_blocks(compute, base), base["time_s"].to_numpy())
    doc["dispersion"] = {"model": "measured / fitted block time, quantiles 0, 5, …, 100 % per phase (ranks "
                                  "with a core of their own)", **_dispersion(base, compute, "time_s")}

    # (c1) core sharing: oversubscribed runs against the base model
    over = B[(B["load"] > 1.0 + 1e-9) & (B["pairs"] > 0)]
    cont = {"model": "factor = load^gamma, load = world_size × threads_per_rank / cpu_cores (CPU hosts only)",
            "applied": False, "gamma": 0.0}
    if len(over) and (~(B["load"] > 1.0 + 1e-9)).any():
        pred = predict_blocks(compute, over)
        ratio = over["time_s"].to_numpy() / pred
        L = over["load"].to_numpy()
        ok = (ratio > 0) & np.isfinite(ratio)
        gamma = float(np.median(np.log(ratio[ok]) / np.log(L[ok]))) if ok.any() else 0.0
        gamma = max(gamma, 0.0)
        cont.update({"applied": gamma > 0, "gamma": gamma, "n_samples": int(len(over)),
                     "ratio_by_load": {f"{l:g}": float(np.median(ratio[L == l])) for l in np.unique(L)},
                     "mape_without": mape(pred, over["time_s"]), "mape": mape(pred * L ** gamma, over["time_s"]),
                     "cpu_cores": doc["hardware"].get("cpu_cores"),
                     "threads_per_rank": doc["hardware"].get("threads_per_rank", 1)})
    # per load level with data, its own fit in core-seconds (core_time_s: the measured block time
    # with the time-sharing taken out), turned back into block times by the processor-sharing ring
    # (share_cores) at prediction. A core-second is a core-second: the runs with a core per rank
    # measure the same quantity, so they join the fit (the level's runs alone often have other
    # block sizes). The fit follows the *mean* per size: ranks that time-share the cores finish
    # when the total work is done, so what a block costs on average is what counts.
    by_load = {}
    for L in sorted(set(B["load"]) - set(B[base_mask]["load"])):
        D = B[B["load"] == L]
        pool = pd.concat([B[base_mask].assign(core_time_s=B.loc[base_mask, "time_s"],
                                              memory_core_s=B.loc[base_mask, "memory_time_s"]), D],
                         ignore_index=True)
        by = ["phase", "kind", "work", "memory_bytes"]
        fit = _fit_compute(pool.assign(time_s=_group_mean(pool, "core_time_s", by),
                                       memory_time_s=_group_mean(pool, "memory_core_s", by)))
        if fit:
            _scale_to_level(fit, D)
            fit["statistic"] = "mean core-seconds per (phase, kind, size); runs with a core per rank pooled in"
            # off-core time before a block that the ring's transfers do not explain (mean: the tail
            # of the scheduler is what costs)
            first = (D["step"] == 0) & (D["phase"] == "fwd")
            fit["gap_s"] = {"first": float(D.loc[first, "gap_s"].mean()) if first.any() else 0.0}
            for ph in ("fwd", "bwd"):  # before blocks with a kernel slot (a memory step gets none)
                m = ~first & (D["phase"] == ph) & (D["kind"] != "memory")
                fit["gap_s"][ph] = float(D.loc[m, "gap_s"].mean()) if m.any() else 0.0
            # the CPU work of a loopback transfer (its copies), in core-seconds as core_time_s counts
            X = T[T["trace"].isin(set(D["trace"]))] if len(T) else T
            if len(X):
                xb, xc = X["bytes"].to_numpy(float), X["core_time_s"].to_numpy(float)
                xs = np.unique(xb)
                ts = np.array([xc[xb == v].mean() for v in xs])
                lat, inv_bw = fit_line_nonneg(xs, ts)
                fit["transfer"] = {"model": "core-seconds of a transfer = latency_s + bytes / bandwidth_Bps, "
                                            "fitted on the mean per message size",
                                   "latency_s": lat, "bandwidth_Bps": 1.0 / inv_bw if inv_bw > 0 else float("inf"),
                                   "message_bytes": xs.tolist(), "mean_core_s": ts.tolist(), "n_samples": int(len(X)),
                                   "mape": mape(lat + xb * inv_bw, xc)}
            by_load[f"{L:g}"] = fit
    if by_load:
        cont["by_load"] = by_load
        cont["sharing"] = {"model": "processor sharing: blocks and loopback transfers in flight share slots = "
                                    "cpu_cores / threads_per_rank cores equally; by_load fits are core-seconds",
                           "slots": float(doc["hardware"].get("cpu_cores") or 1)
                           / float(doc["hardware"].get("threads_per_rank") or 1),
                           "max_world_size": SHARE_MAX_WORLD_SIZE}
        cont["model"] += ("; load levels with runs of their own (by_load) are fitted in core-seconds and "
                          "simulated by processor sharing (share_cores)")
    doc["contention"] = cont

    # (c2) compute slowed by the rank's own transfers in flight: measured, recorded, not applied
    res = base["time_s"].to_numpy() / predict_blocks(compute, base) - 1.0
    ov = base["overlap"].to_numpy()
    slope = 0.0
    if len(ov) > 2 and np.ptp(ov) > 0.05:
        slope = float(np.polyfit(ov, res, 1)[0])
    doc["transfer_overlap"] = {"model": "relative compute slowdown per unit of block time overlapped by transfers",
                               "slope": slope, "applied": False, "n_samples": int(len(ov)),
                               "overlap_range": [float(ov.min()), float(ov.max())] if len(ov) else None}

    # (b) links: fitted on the runs that are not oversubscribed; a slower transfer on a shared host
    # is recorded as a per-load factor (applied when the ring size is known, see CalibratedCost)
    links = {}
    T_base = T[T["trace"].map(lambda lab: _load_of(traces, lab) <= 1.0 + 1e-9)] if len(T) else T
    if not len(T_base):
        T_base = T
    for cls, D in T_base.groupby("link_class") if len(T_base) else []:
        x, t = D["bytes"].to_numpy(), D["time_s"].to_numpy()
        xs, ts = medians(x, t, 0.5)
        lat, inv_bw = fit_line_nonneg(xs, ts)
        bw = 1.0 / inv_bw if inv_bw > 0 else float("inf")
        entry = {"latency_s": lat, "bandwidth_Bps": bw, "n_samples": int(len(D)),
                 "message_bytes": xs.tolist(), "median_s": ts.tolist(), "statistic": "median per message size",
                 "mape": mape(lat + x * inv_bw, t), "mape_of_medians": mape(lat + xs * inv_bw, ts)}
        O = T[(T["link_class"] == cls) & T["trace"].map(lambda lab: _load_of(traces, lab) > 1.0 + 1e-9)]
        if len(O) and len(O) != len(D):
            loads = O["trace"].map(lambda lab: _load_of(traces, lab)).to_numpy()
            ratio = O["time_s"].to_numpy() / (lat + O["bytes"].to_numpy() * inv_bw)
            ok = (ratio > 0) & np.isfinite(ratio) & (loads > 1)
            g = max(float(np.median(np.log(ratio[ok]) / np.log(loads[ok]))), 0.0) if ok.any() else 0.0
            entry["contention"] = {"gamma": g, "ratio_by_load": {f"{l:g}": float(np.median(ratio[loads == l]))
                                                                 for l in np.unique(loads)},
                                   "mape": mape((lat + O["bytes"].to_numpy() * inv_bw) * loads ** g, O["time_s"])}
        links[cls] = entry
    doc["links"] = links
    doc["trace_link_class"] = traces[0]["link_class"]
    doc["start_skew"] = {"model": "per run, each rank's median over the timed iterations of its first row less the "
                                  "earliest rank's (s), by world size; a validation draw releases each rank's "
                                  "first step by one such vector, its ranks shuffled",
                         "by_world_size": {str(G): [[float(x) for x in v] for v in vs]
                                           for G, vs in sorted(skews.items()) if vs}}
    return doc


def _dispersion(D: pd.DataFrame, compute: dict, col: str) -> dict:
    """Per phase, the quantiles (0, 5, …, 100 %) of measured / fitted block time: how much one
    block varies around its kind's fit from block to block (rank to rank, iteration to iteration).
    Used to predict the *median over iterations* of a makespan that is a maximum over ranks
    (:meth:`CalibratedCost.with_dispersion`). Fitted on the runs with a core per rank and applied
    to them only: on an oversubscribed host the processor-sharing ring carries the variability as
    the measured off-core gaps."""
    out = {}
    for phase in ("fwd", "bwd"):
        P = D[(D["phase"] == phase) & (D["pairs"] > 0)]
        if not len(P) or phase not in compute:
            continue
        ratio = P[col].to_numpy() / predict_blocks(compute, P)
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        if len(ratio) >= 10:
            out[phase] = np.quantile(ratio, DISPERSION_Q).tolist()
    return out


def _fit_compute(B: pd.DataFrame) -> dict:
    """phase → kind → fitted entry (a :class:`~.fits.ModelChoice`; the pooled ``"*"``; the ``"empty"``
    constant), as the calibration file stores them (``to_dict``)."""
    compute: dict = {}
    full = B[B["pairs"] > 0]
    for phase in ("fwd", "bwd"):
        P = full[full["phase"] == phase]
        if not len(P):
            continue
        ops = _fit_memory_ops(P)
        t = P["time_s"].to_numpy(float)
        if ops is not None:  # the kernels' share: the block less its measured memory ops
            t = np.maximum(t - P["memory_time_s"].to_numpy(float), 0.0)
        pooled = ModelChoice.fit(P["work"].to_numpy(), t)
        compute[phase] = {"*": pooled.to_dict()}
        if ops is not None:
            compute[phase]["memory_ops"] = ops
        kinds = P["kind"].to_numpy()
        for kind in BLOCK_KINDS:
            m = kinds == kind
            if m.any():
                # each kind its own fit: an intercept is never taken from another kind (a kind seen
                # at one size goes through the origin, its per-pair cost from its own blocks)
                compute[phase][kind] = ModelChoice.fit(P["work"].to_numpy()[m], t[m]).to_dict()
    is_mem = B["kind"] == "memory"
    E = B[(B["pairs"] <= 0) & ~is_mem]
    for phase in ("fwd", "bwd"):
        K = E[E["phase"] == phase]
        if len(K) and phase in compute:
            med = float(K["time_s"].median())
            compute[phase]["empty"] = ConstantFit(med, int(len(K)), mape(np.full(len(K), med),
                                                                         K["time_s"].to_numpy())).to_dict()
        M = B[is_mem & (B["phase"] == phase)]
        if len(M) and phase in compute:
            compute[phase]["memory"] = _fit_memory(M)
    return compute


def _line_over_bytes(xb: np.ndarray, t: np.ndarray, one_size_constant: bool) -> dict:
    """``t ≈ latency_s + bytes × seconds_per_byte`` (non-negative, relative error) on the median
    time per distinct byte count; with one byte count, a constant (``one_size_constant``) or
    :func:`fit_line_nonneg`'s line through the origin."""
    xs, ts = medians(xb, t)
    if len(xs) == 1 and one_size_constant:  # no slope to tell latency from bandwidth
        lat, spb = float(ts[0]), 0.0
    else:
        lat, spb = fit_line_nonneg(xs, ts)
    return {"latency_s": float(lat), "seconds_per_byte": float(spb), "n_sizes": int(len(xs)),
            "mape": mape(lat + spb * xb, t)}


def _bytes_line_seconds(e: dict, b: np.ndarray) -> np.ndarray:
    return float(e["latency_s"]) + b * float(e["seconds_per_byte"])


def _fit_memory(M: pd.DataFrame) -> dict:
    """A memory step's time (a step of memory ops only: all-gather's reduce of the received dK/dV
    parts, …) as ``latency_s + bytes × seconds_per_byte``, fitted (non-negative, relative error)
    on the median time per distinct byte count; ``work`` holds the step's bytes."""
    line = _line_over_bytes(M["work"].to_numpy(float), M["time_s"].to_numpy(float), one_size_constant=True)
    return {"chosen": "constant" if line["seconds_per_byte"] == 0.0 else "memory",
            "model": "latency_s + bytes × seconds_per_byte", **line, "seconds": line["latency_s"],
            "n_samples": int(len(M))}


def _fit_memory_ops(P: pd.DataFrame) -> dict | None:
    """The memory ops of one phase's kernel blocks (``memory_ops``): ``latency_s + bytes ×
    seconds_per_byte`` fitted on the measured ``merge`` time against the program's memory bytes
    (median per distinct byte count). None when the runs do not record their memory ops (fewer
    than half the blocks that have some show a ``merge`` row): the kind fits then keep them."""
    if "memory_time_s" not in P:
        return None
    M = P[P["memory_bytes"] > 0]
    if not len(M) or (M["memory_time_s"] > 0).mean() < 0.5:
        return None
    line = _line_over_bytes(M["memory_bytes"].to_numpy(float), M["memory_time_s"].to_numpy(float),
                            one_size_constant=False)
    return {"model": "latency_s + bytes × seconds_per_byte (the step's memory ops, measured merge rows)", **line,
            "n_samples": int(len(M))}


def predict_memory_ops(compute: dict, phase: str, memory_bytes) -> np.ndarray:
    """Seconds of the memory ops inside kernel blocks of ``phase`` moving ``memory_bytes`` (0 where
    the calibration keeps them inside its kind fits, or a block moves none)."""
    b = np.asarray(memory_bytes, float)
    e = (compute.get(phase) or {}).get("memory_ops")
    if not e:
        return np.zeros(b.shape)
    return np.where(b > 0, _bytes_line_seconds(e, b), 0.0)


def _scale_to_level(fit: dict, D: pd.DataFrame) -> None:
    """Scale each (phase, kind) fit so that, over the level's own block sizes, it matches the
    level's mean core-seconds on average (geometric mean of the per-size ratios)."""
    P = D[D["pairs"] > 0]
    for phase, table in fit.items():
        for kind, entry in table.items():
            if kind in ("empty", "memory") or not isinstance(entry, dict) or "chosen" not in entry \
                    or entry["chosen"] == "constant":
                continue
            K = P[(P["phase"] == phase) & ((P["kind"] == kind) if kind != "*" else True)]
            if not len(K):
                continue
            if "memory_ops" in table:  # the kernels' share, as the fit was made
                K = K.assign(core_time_s=np.maximum(K["core_time_s"] - K["memory_core_s"], 0.0))
            m = K.groupby("work")["core_time_s"].mean()
            ratio = m.to_numpy() / ModelChoice.from_dict(entry).predict_shape(m.index.to_numpy(float))
            ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
            if len(ratio):
                entry["level_scale"] = float(np.exp(np.mean(np.log(ratio))))


def _group_mean(D: pd.DataFrame, col: str, by: list[str]) -> pd.Series:
    """Every sample replaced by the mean of its group: the fits take per-size medians, so fed
    these they follow the per-size means."""
    return D.groupby(by)[col].transform("mean")


def _load_of(traces: list[dict], label: str) -> float:
    return next((t["load"] for t in traces if t["path"] == label), 1.0)


def predict_entry(compute: dict, phase: str, kind: str, x) -> np.ndarray:
    """Seconds of blocks of one (phase, kind) at work ``x`` from a compute section (as stored):
    the kind's fit, else the phase's pooled ``"*"``; a phase without data takes the other phase's
    fit × the backward/forward FLOP ratio (the roofline's constant)."""
    from ..workload import BWD_FLOPS_FACTOR
    from .fits import entry_from_dict

    x = np.asarray(x, float)
    scale = 1.0
    if phase not in compute:
        other = "fwd" if phase == "bwd" else "bwd"
        scale = BWD_FLOPS_FACTOR if phase == "bwd" else 1.0 / BWD_FLOPS_FACTOR
        phase = other
    table = compute[phase]
    if kind == "empty":
        e = table.get("empty")
        return np.full(len(x), float(e["seconds"]) * scale if e else 0.0)
    if kind == "memory":  # x: the step's bytes
        e = table.get("memory")
        if not e:
            return np.zeros(len(x))
        return _bytes_line_seconds(e, x)
    return entry_from_dict(table.get(kind) or table["*"]).predict(x) * scale


def predict_blocks(compute: dict, D: pd.DataFrame) -> np.ndarray:
    """Predicted seconds of every sample block (rows with phase, kind, work, memory_bytes): its
    kind's fit, plus its memory ops where the calibration prices them apart."""
    out = np.zeros(len(D))
    ph, kd, x = D["phase"].to_numpy(), D["kind"].to_numpy(), D["work"].to_numpy(float)
    mb = D["memory_bytes"].to_numpy(float) if "memory_bytes" in D else np.zeros(len(D))
    for key in set(zip(ph, kd)):
        m = (ph == key[0]) & (kd == key[1])
        out[m] = predict_entry(compute, key[0], key[1], x[m])
        if key[1] not in ("empty", "memory"):
            out[m] += predict_memory_ops(compute, key[0], mb[m])
    return out
