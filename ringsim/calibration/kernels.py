"""Kernel profiles from measured runs: what each attention call of a real run took, by call shape.

``ringsim calibrate TRACES --write-profile prof.yaml`` turns the kernel calls of measured runs into
a kernel profile (:mod:`ringsim.kernelprofile`, the format ``ringsim profile-kernels`` writes and
``--kernels FILE`` reads). The same code reads ringsim's own traces (``ringsim run --trace``: a
``compute`` row per call) and PyTorch-profiler traces imported by :mod:`ringsim.kineto` (the same
rows, from the attention kernels), so a CPU run and a GPU run give the same kind of profile.

What is taken from a run:

- the program it executed (rebuilt from its metadata: strategy, world size, length, mask, phase,
  workload dims), which names every (step, rank)'s kernel call: query rows, key rows, full or
  causal, exact pairs, the heads it covers;
- for each (phase, step, rank, iteration) with exactly one full or causal call, the duration of its
  ``compute`` row — the kernel alone: merges, accumulations and waits are rows of their own;
- only runs whose ranks had a core (or a GPU) each: on an oversubscribed host a call's wall time
  includes time-sharing, which is the calibration's core-sharing model, not the kernel's speed.

Calls of one shape (phase, mask, q_rows, k_rows, head dim, heads, batch) pool over ranks, steps,
iterations and runs; a point is their median time as exact-pair TFLOP/s. Square calls are the
profile's knots; other shapes (a zigzag step's half blocks) are ``role: reference`` points, which
the profile then predicts from the squares (``ringsim profile-kernels --compare`` style checks).
A profile needs full and causal knots in forward and backward, so the runs must include fwd+bwd.
"""
from __future__ import annotations

import datetime

import numpy as np

from ..blocks import KIND_CODES
from ..kernelprofile import FORMAT, KernelProfile, profile_from_doc
from ..program import KernelOp
from ..timeline import Timeline
from ..units import InputError
from .measured import program_for, trace_load, workload_from_meta

__all__ = ["call_samples", "profile_from_runs"]

_FULL, _CAUSAL = KIND_CODES["full"], KIND_CODES["causal"]


def call_samples(tl: Timeline) -> list[dict]:
    """One dict per measured single-call (phase, step, rank, iteration): phase, causal, q_rows,
    k_rows, pairs, heads (of the call), head_dim, batch, seconds. Empty when the run's program
    cannot be rebuilt from its metadata."""
    meta = tl.meta
    df = tl.df
    if not len(df):
        return []
    G = int(meta.get("world_size") or df["rank"].max() + 1)
    program, wl = program_for(meta, G), workload_from_meta(meta)
    if program is None or wl is None:
        return []
    flat = program.flat
    N = flat.N
    n_calls = np.zeros((N, G), dtype=np.int64)
    q = np.zeros((N, G), dtype=np.int64)
    k = np.zeros((N, G), dtype=np.int64)
    kind = np.zeros((N, G), dtype=np.int64)
    pairs = np.zeros((N, G), dtype=np.int64)
    heads = np.zeros((N, G), dtype=np.int64)
    for s, st in enumerate(program.stages):
        n0 = int(flat.stage_first[s])
        sl = slice(n0, n0 + st.n_steps)
        for op in st.ops:
            if not isinstance(op, KernelOp):
                continue
            active = op.active
            n_calls[sl] += active
            q[sl] = np.where(active, op.field("q_rows"), q[sl])
            k[sl] = np.where(active, op.field("k_rows"), k[sl])
            kind[sl] = np.where(active, op.field("kind"), kind[sl])
            pairs[sl] = np.where(active, op.pairs, pairs[sl])
            heads[sl] = np.where(active, op.heads or wl.model.heads, heads[sl])
    step_of = {(ph, int(lab)): n for n, (ph, lab) in enumerate(zip(flat.step_phase, flat.step_label))}
    comp = df[df["kind"] == "compute"]
    out = []
    for r in comp.itertuples(index=False):
        n = step_of.get((str(r.phase), int(r.step)))
        rank = int(r.rank)
        if n is None or not 0 <= rank < G or n_calls[n, rank] != 1 or kind[n, rank] not in (_FULL, _CAUSAL):
            continue
        if int(r.pairs) != int(pairs[n, rank]):  # the row is not the call the program names
            continue
        t = float(r.end_s) - float(r.start_s)
        if t <= 0:
            continue
        out.append({"phase": str(r.phase), "causal": bool(kind[n, rank] == _CAUSAL), "q_rows": int(q[n, rank]),
                    "k_rows": int(k[n, rank]), "pairs": int(pairs[n, rank]), "heads": int(heads[n, rank]),
                    "head_dim": int(wl.model.head_dim), "batch": int(wl.batch), "seconds": t})
    return out


def profile_from_runs(runs: list[tuple[str, Timeline]], name: str = "measured-calls",
                      command: str | None = None) -> KernelProfile:
    """A kernel profile from the calls of measured runs (see the module docstring); raises
    :class:`InputError` (one line) when the runs do not hold full and causal square calls in both
    phases."""
    samples: dict[tuple, list[float]] = {}
    used, skipped = [], []
    meta0 = None
    for label, tl in runs:
        if trace_load(tl.meta) > 1.0 + 1e-9:
            skipped.append(label)
            continue
        rows = call_samples(tl)
        if not rows:
            skipped.append(label)
            continue
        used.append(label)
        meta0 = meta0 or tl.meta
        for s in rows:
            key = (s["phase"], s["causal"], s["q_rows"], s["k_rows"], s["pairs"], s["heads"], s["head_dim"],
                   s["batch"])
            samples.setdefault(key, []).append(s["seconds"])
    if not used:
        raise InputError("no run gives kernel calls for a profile: each needs its configuration in the metadata "
                         "(ringsim run traces have it) and a core or GPU per rank (oversubscribed runs time-share "
                         f"the cores); skipped: {', '.join(skipped) or 'none'}")
    points = []
    for (phase, causal, qr, kr, pairs, heads, d, batch), ts in sorted(samples.items()):
        t = float(np.median(ts))
        flops = (2.5 if phase == "bwd" else 1.0) * 4.0 * batch * heads * d * pairs
        p = {"phase": phase, "causal": causal, "head_dim": d, "q_rows": qr, "k_rows": kr, "heads": heads,
             "batch": batch, "tflops": float(f"{flops / t / 1e12:.6g}"), "source": "calls"}
        if causal:
            p["pairs"] = pairs
        if qr != kr:
            p["role"] = "reference"
        points.append(p)
    have = {(p["phase"], p["causal"]) for p in points if p.get("role", "knot") == "knot"}
    missing = [f"{'causal' if c else 'full'} {ph}" for ph in ("fwd", "bwd") for c in (False, True)
               if (ph, c) not in have]
    if missing:
        raise InputError(f"the runs have no square {', '.join(missing)} calls for the profile's knots; give fwd+bwd "
                         "runs whose layouts make them (contiguous: full and causal squares; zigzag, striped: "
                         "causal squares)")
    device = str(meta0.get("device", "cpu")).lower()
    if device == "cpu":
        dev = {"name": str(meta0.get("cpu_model") or "CPU"), "threads": int(meta0.get("threads_per_rank") or 1)}
        model = {"tile_rows": 256, "parallel": {"fwd": "queries", "bwd": "heads"}}
        family = "cpu-sdpa"
    else:
        dev = {"name": str(meta0.get("gpu_model") or device)}
        model = {"tile_rows": 128, "parallel": {"fwd": "queries", "bwd": "keys"}}
        family = "other"
    model["head_dim_exponent"] = 0.5
    dtype = str((meta0.get("workload") or {}).get("dtype", "fp32"))
    measured = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "device": device, "dtype": dtype,
                "timing": "median duration of the calls of one shape over ranks, steps, iterations and runs "
                          "(compute rows of the measured timelines)",
                "grid": f"{len(points)} call shapes from {len(used)} runs: {', '.join(used)}"}
    for key in ("host", "cpu_model", "torch_version"):
        if meta0.get(key):
            measured[key] = str(meta0[key])
    if meta0.get("threads_per_rank"):
        measured["threads"] = int(meta0["threads_per_rank"])
    if command:
        measured["command"] = command
    doc = {
        "format": FORMAT, "name": name,
        "description": f"attention calls of {len(used)} measured runs ({device}), by call shape",
        "device": dev,
        "kernel": {"family": family, "dtype": dtype, "causal_alignment": "bottom-right"},
        "model": model,
        "sources": {"calls": {"cite": "the kernel calls of measured runs (ringsim calibrate --write-profile); see "
                                      "measured:", "flop_convention": "exact-pairs"}},
        "measured": measured,
        "notes": ("Knots: square calls; reference: other shapes. Skipped (oversubscribed, or no configuration "
                  f"in the metadata): {', '.join(skipped) or 'none'}."),
        "points": points,
    }
    return profile_from_doc(doc, name)
