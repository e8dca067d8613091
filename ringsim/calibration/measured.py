"""Measured runs as calibration samples: loading traces, the run's configuration, blocks, transfers.

A measured run is a :class:`~ringsim.timeline.Timeline` (ringsim's own traces from ``ringsim run``,
or Kineto traces imported by :mod:`ringsim.kineto`). This module turns one into samples:

- :func:`block_samples`: one row per measured block (a rank's compute at one step), from its step
  start (the rank's first post or memory op of the step, but not before its previous block ended)
  to the end of its compute plus the memory ops that follow — the interval the simulator calls
  "compute" — and how much of it the step's memory ops (``merge`` rows) took;
- :func:`transfer_samples`: one row per message, from the later of its two posts to the later
  completion (what a rendezvous transfer takes);
- :func:`assign_iterations`: which timed iteration each row belongs to.

The block's kind comes from the program the run executed (:func:`program_for`), whose block
classification the calibrated cost model uses when it predicts.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from ..costs import classify_blocks
from ..timeline import Timeline, read_timeline
from ..units import InputError

__all__ = ["load_measured", "workload_from_meta", "trace_link_class", "trace_load", "assign_iterations",
           "block_samples", "transfer_samples", "program_for", "hardware", "slots", "step_ops"]


def load_measured(paths: list[str], kineto_config: dict | None = None) -> list[tuple[str, Timeline]]:
    """Load traces: each ringsim trace is one run; consecutive Kineto files (one per rank) form one
    run, a new run starting when a rank repeats; a directory (``ringsim run --profile DIR``) is one
    run of its profiler traces. Returns ``[(label, timeline)]``."""
    from ..kineto import expand_trace_paths, import_kineto, is_kineto_trace, load_trace

    out: list[tuple[str, Timeline]] = []
    group: list[str] = []
    ranks: set[int] = set()

    def flush():
        if group:
            out.append((" + ".join(group), import_kineto(list(group), kineto_config)))
            group.clear()
            ranks.clear()

    for p in paths:
        p = os.fspath(p)
        if not os.path.exists(p):
            raise InputError(f"trace file {p} does not exist; check the path")
        if os.path.isdir(p):
            flush()
            files = expand_trace_paths([p])
            out.append((p, import_kineto(files, kineto_config)))
            continue
        data = None
        if p.endswith(".json.gz"):
            data = load_trace(p)
        elif p.endswith(".json"):
            try:
                with open(p) as f:
                    data = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InputError(f"{p} is not a trace ({type(e).__name__}); give ringsim Chrome-trace JSON "
                                 "or PyTorch-profiler traces") from None
        if data is not None and is_kineto_trace(data):
            r = int(data["distributedInfo"].get("rank", -1))
            if r in ranks:
                flush()
            group.append(p)
            ranks.add(r)
            continue
        flush()
        if data is not None:
            tl = Timeline.from_chrome_trace(data, origin=p)
        else:
            tl = read_timeline(p)
        out.append((p, tl))
    flush()
    return out


def workload_from_meta(meta: dict):
    """The measured run's Workload from its metadata (None when the dims are missing)."""
    from ..workload import ModelSpec, Workload

    w = meta.get("workload") or {}
    if not all(k in w for k in ("heads", "head_dim")):
        return None
    heads = int(w["heads"])
    model = ModelSpec("measured", int(w.get("layers", 1) or 1), heads, int(w.get("kv_heads", heads) or heads),
                      int(w["head_dim"]), v_head_dim=w.get("v_head_dim"))
    return Workload(model, int(meta.get("seq_len") or w.get("seq_len") or 1), int(w.get("batch", 1) or 1),
                    str(w.get("dtype", "bf16")))


def trace_link_class(meta: dict) -> str:
    if meta.get("link_class"):
        return str(meta["link_class"])
    if str(meta.get("backend", "")).lower() == "gloo" or str(meta.get("device", "")).lower() == "cpu":
        return "loopback"
    return "link"


def trace_load(meta: dict) -> float:
    """Rank threads per core on a CPU host (world_size × threads_per_rank / cpu_cores); 1 otherwise."""
    try:
        if str(meta.get("device", "")).lower() != "cpu" or not meta.get("cpu_cores"):
            return 1.0
        return float(meta["world_size"]) * float(meta.get("threads_per_rank", 1) or 1) / float(meta["cpu_cores"])
    except (TypeError, ValueError, KeyError):
        return 1.0


def assign_iterations(df: pd.DataFrame) -> pd.Series:
    """Iteration index of every row. Every timed iteration records the same rows, so each
    (rank, phase, kind, step) occurs m times per iteration — once for a ring step, once per peer at
    an all-to-all step, once per call when a step makes several — and n_iter (the gcd of the
    occurrence counts) times m in all: its k-th occurrence in time belongs to iteration k // m.
    Works for one or several iterations and for imported traces."""
    import math

    order = df.sort_values("start_s", kind="stable")
    keys = [order["rank"], order["phase"].astype(str), order["kind"].astype(str), order["step"]]
    grouped = order.groupby(keys, sort=False)
    it = grouped.cumcount()
    counts = grouped["start_s"].transform("size")
    n_iter = math.gcd(*(int(c) for c in counts.unique())) if len(counts) else 1
    return (it // (counts // max(n_iter, 1))).reindex(df.index)


def program_for(meta: dict, G: int):
    """The program a measured run executed, rebuilt from its metadata (strategy or schedule, world
    size, length, mask, phase, workload dims); None when the metadata does not say enough."""
    from ..strategies import program_from_meta

    wl = workload_from_meta(meta)
    if not meta.get("seq_len") or wl is None:
        return None
    try:
        return program_from_meta(meta, G, wl)
    except (InputError, ValueError):
        return None


def step_ops(program) -> tuple[np.ndarray, np.ndarray]:
    """Per (global step, rank) of ``program``: whether the step makes a kernel call (``[N]``
    bool: some op slot of its stage is a kernel) and the bytes its memory ops move (``[N, G]``).
    A step with memory ops but no kernel slot (all-gather's reduce, a reduce-scatter's fold) is a
    *memory step*: the calibration prices it by its bytes, not as a block of pairs."""
    from ..program import KernelOp, MemoryOp

    N, G = program.n_steps, program.world_size
    has_kernel = np.zeros(N, dtype=bool)
    mem = np.zeros((N, G))
    n0 = 0
    for st in program.stages:
        for op in st.ops:
            if isinstance(op, KernelOp):
                has_kernel[n0:n0 + st.n_steps] = True
            elif isinstance(op, MemoryOp):
                mem[n0:n0 + st.n_steps] += np.broadcast_to(np.asarray(op.bytes, dtype=np.float64), (st.n_steps, G))
        n0 += st.n_steps
    return has_kernel, mem


def block_samples(tl: Timeline) -> pd.DataFrame:
    """One row per measured block: rank, phase, step, iter, pairs, head_share (the share of the
    model's heads the block's calls covered: Ulysses and USP calls run on H/U heads), kind,
    memory_bytes (the bytes the step's memory ops move, from the program), start_s (step start: the
    first post, call or memory op — all-gather's ``gather`` copy runs before its calls), end_s (end
    of compute + merge), time_s, memory_time_s (the step's ``merge`` rows: its memory ops as
    measured), compute_start_s, overlap (fraction of the block overlapped by the rank's own
    transfers)."""
    df = tl.df.copy()
    if not len(df):
        return pd.DataFrame()
    df["iter"] = assign_iterations(df)
    df["kind"] = df["kind"].astype(str)
    df["phase"] = df["phase"].astype(str)
    comp = df[df["kind"] == "compute"]
    if not len(comp):
        return pd.DataFrame()
    G = int(tl.meta.get("world_size") or df["rank"].max() + 1)
    program = program_for(tl.meta, G)
    kinds = shares = None
    if program is not None:  # [rank, (phase, step)] → the block's kind, and the share of the heads it ran
        f = program.flat
        k = classify_blocks(f.pairs, program.plan.tokens_per_rank)
        has_kernel, mem = step_ops(program)
        k = np.where(has_kernel[:, None] | (mem <= 0), k, "memory")  # a memory step: priced by its bytes
        kinds = {(ph, int(st)): k[n] for n, (ph, st) in enumerate(zip(f.step_phase, f.step_label))}
        mem_bytes = {(ph, int(st)): mem[n] for n, (ph, st) in enumerate(zip(f.step_phase, f.step_label))}
        share = np.divide(f.work_pairs, f.pairs, out=np.ones(f.pairs.shape), where=f.pairs > 0)
        shares = {(ph, int(st)): share[n] for n, (ph, st) in enumerate(zip(f.step_phase, f.step_label))}
    key = ["rank", "phase", "step", "iter"]
    ring = df[df["kind"].isin(["compute", "merge", "send", "recv"])].groupby(key)["start_s"].min()
    ends = df[df["kind"].isin(["compute", "merge"])].groupby(key)["end_s"].max()
    merges = df[df["kind"] == "merge"]
    mem_time = (merges["end_s"] - merges["start_s"]).groupby([merges[k] for k in key]).sum()
    xfer = df[df["kind"].isin(["send", "recv"])]
    xfer_by_rank = {int(r): (d["start_s"].to_numpy(), d["end_s"].to_numpy()) for r, d in xfer.groupby("rank")}
    # one block per (rank, phase, step, iteration): a step that makes several calls (all-gather's
    # two zigzag chunks, a USP member's calls) is one block whose pairs are the calls' sum — the
    # program's step work, which is what the cost model prices
    comp = (comp.groupby(key, sort=False)
                .agg(start_s=("start_s", "min"), end_s=("end_s", "max"), pairs=("pairs", "sum"))
                .reset_index())
    rows = []
    for r in comp.itertuples(index=False):
        k = (r.rank, r.phase, r.step, r.iter)
        start = float(ring.get(k, r.start_s))
        end = float(ends.get(k, r.end_s))
        head_share = 1.0
        memory_bytes = 0.0
        if kinds is not None and (r.phase, int(r.step)) in kinds and 0 <= r.rank < G:
            kind = str(kinds[(r.phase, int(r.step))][r.rank])
            head_share = float(shares[(r.phase, int(r.step))][r.rank])
            memory_bytes = float(mem_bytes[(r.phase, int(r.step))][r.rank])
        elif r.pairs <= 0:
            kind = "empty"
        else:
            kind = "partial"
        tx = xfer_by_rank.get(int(r.rank))
        ov = 0.0
        if tx is not None and end > start:
            a = np.clip(tx[0], start, end)
            b = np.clip(tx[1], start, end)
            ov = float(_union_length(a, b) / (end - start))
        rows.append({"rank": int(r.rank), "phase": r.phase, "step": int(r.step), "iter": int(r.iter),
                     "pairs": float(r.pairs), "head_share": head_share, "kind": kind, "memory_bytes": memory_bytes,
                     "start_s": start, "end_s": end,
                     "time_s": end - start, "memory_time_s": float(mem_time.get(k, 0.0)),
                     "compute_start_s": float(r.start_s), "overlap": ov})
    out = pd.DataFrame(rows)
    # a step's posts may come before the previous block ended (e.g. a gradient sent one step behind):
    # a block never starts before the rank's previous block ended
    out = out.sort_values(["rank", "compute_start_s"], kind="stable")
    prev_end = out.groupby("rank")["end_s"].shift(1)
    out["start_s"] = np.where(prev_end.notna(), np.maximum(out["start_s"], prev_end.fillna(-np.inf)), out["start_s"])
    out["time_s"] = out["end_s"] - out["start_s"]
    return out.sort_index().reset_index(drop=True)


def _union_length(a: np.ndarray, b: np.ndarray) -> float:
    keep = b > a
    a, b = a[keep], b[keep]
    if not len(a):
        return 0.0
    o = np.argsort(a)
    a, b = a[o], b[o]
    total, cur_a, cur_b = 0.0, a[0], b[0]
    for x, y in zip(a[1:], b[1:]):
        if x > cur_b:
            total += cur_b - cur_a
            cur_a, cur_b = x, y
        else:
            cur_b = max(cur_b, y)
    return float(total + cur_b - cur_a)


def transfer_samples(tl: Timeline) -> pd.DataFrame:
    """One row per transfer r → peer: bytes and duration from the later post (send on r, receive
    on the peer) to the later completion. Sends without a matching receive keep their own interval."""
    df = tl.df.copy()
    if not len(df):
        return pd.DataFrame(columns=["rank", "peer", "phase", "step", "iter", "bytes", "start_s", "end_s", "time_s"])
    df["iter"] = assign_iterations(df)
    df["phase"] = df["phase"].astype(str)
    df["kind"] = df["kind"].astype(str)
    sends = df[df["kind"] == "send"]
    recvs = df[df["kind"] == "recv"].set_index(["rank", "peer", "phase", "step", "iter"])
    rows = []
    for s in sends.itertuples(index=False):
        k = (s.peer, s.rank, s.phase, s.step, s.iter)
        start, end = s.start_s, s.end_s
        if k in recvs.index:
            rv = recvs.loc[k]
            if isinstance(rv, pd.DataFrame):
                rv = rv.iloc[0]
            start, end = max(start, rv["start_s"]), max(end, rv["end_s"])
        if s.bytes > 0 and end > start:
            rows.append({"rank": int(s.rank), "peer": int(s.peer), "phase": s.phase, "step": int(s.step),
                         "iter": int(s.iter), "bytes": float(s.bytes), "start_s": float(start),
                         "end_s": float(end), "time_s": float(end - start)})
    return pd.DataFrame(rows, columns=["rank", "peer", "phase", "step", "iter", "bytes", "start_s", "end_s",
                                       "time_s"])



def hardware(meta: dict) -> dict:
    keys = ("device", "host", "cpu_model", "cpu_cores", "threads_per_rank", "gpu_model", "backend",
            "torch_version", "oversubscription")
    return {k: meta.get(k) for k in keys if meta.get(k) is not None}


def slots(meta: dict) -> float:
    """Single-thread rank slots of a CPU host: cores / threads per rank (≥ 1)."""
    try:
        return max(float(meta.get("cpu_cores") or 1) / float(meta.get("threads_per_rank") or 1), 1.0)
    except (TypeError, ValueError):
        return 1.0
