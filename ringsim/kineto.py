"""Import PyTorch-profiler (Kineto) Chrome traces of ring-attention runs into a ringsim Timeline.

A GPU cluster run profiled with ``torch.profiler`` leaves one Chrome-trace JSON per rank; each
carries ``distributedInfo`` = ``{rank, world_size, backend}``. That is enough to recover the ring:

- **attention kernels** — names containing ``flash``, ``fmha``, ``attention`` or ``sdpa`` (any
  case) — become ``compute`` rows. The phase comes from the name: ``bwd``, ``backward``, ``grad``
  or xformers' ``cutlassB`` mean backward, anything else forward. Helper kernels of one block
  (``dot_do_o``/``preprocess`` before the main kernel, ``convert``/``combine``/``postprocess``
  after it) are folded into that block, so one ring step is one compute row.
- **NCCL point-to-point kernels** — ``ncclDevKernel_SendRecv`` (NCCL ≥ 2.19) and the older
  ``ncclKernel_SendRecv_*`` / ``ncclKernel_*Send*`` / ``ncclKernel_*Recv*`` — become ``send``
  and/or ``recv`` rows (a fused SendRecv kernel is both). Bytes come from the kernel's args when
  the profiler recorded them (``bytes``, or ``In msg nelems``/``Out msg nelems`` × the dtype's
  size); otherwise 0. Peers follow the ring: send to r+1, receive from r−1. Collectives
  (AllReduce, AllGather, …) are not part of the ring and are skipped (counted in the metadata).
- **steps** come from the program the run executed (:mod:`ringsim.strategies`, rebuilt from the
  run configuration): the rank's kernel calls in program order — steps where the rank computes
  nothing (a contiguous ring's rank r after step r) have no call and are skipped — so the k-th
  attention kernel of a phase is the (k mod n)-th of the phase's n calls. A transfer takes the step
  (and phase) of the compute block of the same rank whose start is nearest to its own start, since
  a step's messages are posted when its compute starts, and its peer from that step's messages.
  Without a run configuration there is no program: the k-th kernel is taken as step ``k mod G``
  and transfers go to r+1 / come from r−1, and the metadata says the steps were guessed.
- **time**: every file's ``ts`` (µs, plus ``baseTimeNanoseconds`` when the file has one) is put
  on one origin, the earliest imported event of all ranks. This assumes the ranks' clocks agree
  (one host, or hosts synchronised by NTP/PTP); the spread is not corrected.

When the caller supplies the run configuration (``schedule``, ``seq_len``, ``mask`` and the
workload dims ``heads``/``kv_heads``/``head_dim``/``batch``/``dtype``) — Kineto does not record
them — each compute row gets the exact ``pairs`` and ``flops`` of its block from the plan, which
is what calibration needs.
"""
from __future__ import annotations

import os
import re

import numpy as np

from .timeline import Timeline
from .units import InputError, read_json

__all__ = ["is_kineto_trace", "read_kineto_rank", "import_kineto", "attention_phase", "nccl_directions",
           "DTYPE_SIZES"]

_ATTN_RE = re.compile(r"flash|fmha|attention|sdpa", re.I)
_BWD_RE = re.compile(r"bwd|backward|grad|cutlassB", re.I)
_PRE_AUX_RE = re.compile(r"dot_do_o|preprocess", re.I)
_POST_AUX_RE = re.compile(r"convert|combine|postprocess", re.I)
_NCCL_RE = re.compile(r"^nccl(Dev)?Kernel_", re.I)
DTYPE_SIZES = {"float": 4, "float32": 4, "c10::float": 4, "half": 2, "float16": 2, "c10::half": 2,
               "bfloat16": 2, "c10::bfloat16": 2, "double": 8, "float64": 8, "int": 4, "int32": 4,
               "long": 8, "int64": 8, "char": 1, "byte": 1, "uint8": 1, "int8": 1}


def attention_phase(name: str) -> str | None:
    """``"fwd"``/``"bwd"`` for an attention kernel name, ``None`` for any other kernel."""
    if not _ATTN_RE.search(name):
        return None
    return "bwd" if _BWD_RE.search(name) else "fwd"


def nccl_directions(name: str) -> tuple[str, ...]:
    """Which ring rows an NCCL kernel stands for: ``("send", "recv")`` for a fused SendRecv,
    ``("send",)``/``("recv",)`` for one-sided kernels, ``()`` for collectives and non-NCCL names."""
    if not _NCCL_RE.search(name):
        return ()
    low = name.lower()
    if "sendrecv" in low:
        return ("send", "recv")
    if "send" in low:
        return ("send",)
    if "recv" in low:
        return ("recv",)
    return ()


def _event_bytes(args: dict) -> float:
    for key in ("bytes", "Bytes", "msg_bytes", "size_bytes"):
        if key in args:
            try:
                return float(args[key])
            except (TypeError, ValueError):
                pass
    n = None
    for key in ("In msg nelems", "Out msg nelems", "in_msg_nelems", "out_msg_nelems", "nelems"):
        if key in args:
            try:
                n = float(args[key])
                break
            except (TypeError, ValueError):
                pass
    if n is None:
        return 0.0
    size = DTYPE_SIZES.get(str(args.get("dtype", "float")).strip().lower(), 4)
    return n * size


def is_kineto_trace(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("distributedInfo"), dict)


def _load(path: str) -> dict:
    data = read_json(path, "trace file", "give a PyTorch-profiler trace file")
    if not is_kineto_trace(data):
        raise InputError(f"{path} has no 'distributedInfo'; it is not a PyTorch-profiler (Kineto) trace of a "
                         "distributed run (export it with torch.profiler on every rank)")
    return data


def read_kineto_rank(data: dict, origin: str = "trace") -> dict:
    """Pull one rank's ring events out of a loaded Kineto trace.

    Returns ``{"rank", "world_size", "backend", "compute": [(phase, start_us, end_us)], "comm":
    [(direction, start_us, end_us, bytes)], "skipped": int, "kernels": set}`` with absolute µs.
    """
    info = data["distributedInfo"]
    try:
        rank = int(info["rank"])
        world = int(info["world_size"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{origin}: distributedInfo needs integer 'rank' and 'world_size'") from None
    if not 0 <= rank < world:
        raise InputError(f"{origin}: distributedInfo rank {rank} is outside 0..{world - 1}")
    base_us = float(data.get("baseTimeNanoseconds", 0) or 0) / 1e3
    kernels = []
    for ev in data.get("traceEvents", []):
        if not isinstance(ev, dict) or ev.get("ph") != "X" or "ts" not in ev:
            continue
        cat = str(ev.get("cat", "")).lower()
        if cat and cat not in ("kernel", "gpu_op", "cuda_runtime_kernel"):
            continue  # CPU ops and runtime calls: the kernels are what ran on the device
        kernels.append(ev)
    kernels.sort(key=lambda e: float(e["ts"]))
    compute: list[list] = []  # [phase, start, end]
    comm = []
    pending_pre: dict[str, float] = {}
    skipped = 0
    names = set()
    for ev in kernels:
        name = str(ev.get("name", ""))
        start = float(ev["ts"]) + base_us
        end = start + float(ev.get("dur", 0.0))
        phase = attention_phase(name)
        if phase is not None:
            names.add(name)
            if _PRE_AUX_RE.search(name):
                pending_pre.setdefault(phase, start)
            elif _POST_AUX_RE.search(name):
                last = next((c for c in reversed(compute) if c[0] == phase), None)
                if last is not None:
                    last[2] = max(last[2], end)
                else:
                    pending_pre.setdefault(phase, start)
            else:
                s0 = min(start, pending_pre.pop(phase, start))
                compute.append([phase, s0, end])
            continue
        dirs = nccl_directions(name)
        if dirs:
            names.add(name)
            b = _event_bytes(ev.get("args", {}) or {})
            for d in dirs:
                comm.append((d, start, end, b))
        elif _NCCL_RE.search(name):
            skipped += 1
    return {"rank": rank, "world_size": world, "backend": str(info.get("backend", "")),
            "compute": [tuple(c) for c in compute], "comm": comm, "skipped": skipped, "kernels": names}


def _program_calls(config: dict, world: int):
    """From a run configuration, the program's kernel calls per rank and phase — a list of
    ``(step, pairs, owner, flops)`` in program order, steps without a call skipped — and its
    message peers per (rank, phase, step, "send"|"recv"); ``(None, None)`` without a configuration."""
    if not config or "schedule" not in config or "seq_len" not in config:
        return None, None
    from .calibration.measured import workload_from_meta
    from .strategies import program_from_meta
    from .workload import ModelSpec, Workload

    dims = {k: config[k] for k in ("heads", "kv_heads", "head_dim", "batch", "dtype") if k in config}
    meta = {"seq_len": config["seq_len"], "workload": dims}
    wl = workload_from_meta(meta) or Workload(ModelSpec("unknown", 1, 1, 1, 1), int(config["seq_len"]))
    program = program_from_meta(config, world, wl, "fwd+bwd")
    f = program.flat
    known = workload_from_meta(meta) is not None
    calls: dict = {}
    for n in range(f.N):
        ph, st = f.step_phase[n], int(f.step_label[n])
        for r in range(world):
            if f.pairs[n, r] > 0:
                flops = float(f.pairs[n, r]) * wl.flops_per_pair(ph) if known else 0.0
                calls.setdefault((r, ph), []).append((st, float(f.pairs[n, r]), int(f.kv_owner[n, r]), flops))
    peers: dict = {}
    for m in range(f.M):
        n = int(f.post_step[m])
        key = (f.step_phase[n], int(f.step_label[n]))
        peers[(int(f.src[m]),) + key + ("send",)] = int(f.dst[m])
        peers[(int(f.dst[m]),) + key + ("recv",)] = int(f.src[m])
    return calls, peers


def import_kineto(paths: list[str], config: dict | None = None) -> Timeline:
    """One run, one Kineto file per rank → a measured :class:`Timeline` (see the module docstring).

    ``config`` (optional) is the run configuration the profiler does not record: ``schedule``,
    ``seq_len``, ``mask``, ``heads``, ``kv_heads``, ``head_dim``, ``batch``, ``dtype``,
    ``link_class``. It goes into the timeline's metadata and fills ``pairs``/``flops``.
    """
    if not paths:
        raise InputError("no Kineto trace files given; pass one file per rank")
    per_rank = {}
    world = None
    backend = ""
    for p in paths:
        r = read_kineto_rank(_load(os.fspath(p)), origin=os.fspath(p))
        if world is None:
            world, backend = r["world_size"], r["backend"]
        elif r["world_size"] != world:
            raise InputError(f"{p}: world_size {r['world_size']} differs from the other files' {world}; "
                             "pass the files of one run")
        if r["rank"] in per_rank:
            raise InputError(f"{p}: rank {r['rank']} given twice; pass one file per rank")
        per_rank[r["rank"]] = r
    missing = sorted(set(range(world)) - set(per_rank))
    if missing:
        raise InputError(f"Kineto run of world size {world} lacks the files of ranks {missing}; pass one file per rank")
    if not any(r["compute"] for r in per_rank.values()):
        raise InputError("no attention kernels (names with flash/fmha/attention/sdpa) found in the Kineto traces; "
                         "profile with CUDA activities enabled")
    starts = [c[1] for r in per_rank.values() for c in r["compute"]] + \
             [c[1] for r in per_rank.values() for c in r["comm"]]
    origin_us = min(starts)
    config = dict(config or {})
    calls, peers = _program_calls(config, world)
    G = world
    rows = []
    for rank in sorted(per_rank):
        r = per_rank[rank]
        count = {"fwd": 0, "bwd": 0}
        blocks = []  # (phase, step, start_us)
        for phase, s, e in r["compute"]:
            k = count[phase]
            count[phase] += 1
            mine = calls.get((rank, phase)) if calls is not None else None
            if mine:
                step, p, owner, f = mine[k % len(mine)]
            else:
                step, p, owner, f = k % G, 0.0, (rank - k % G) % G, 0.0
            rows.append((rank, step, phase, "compute", (s - origin_us) * 1e-6, (e - origin_us) * 1e-6,
                         owner, 0.0, p, f))
            blocks.append((phase, step, s))
        block_starts = np.array([b[2] for b in blocks]) if blocks else np.array([])
        for d, s, e, b in r["comm"]:
            if len(block_starts):
                i = int(np.argmin(np.abs(block_starts - s)))
                phase, step = blocks[i][0], blocks[i][1]
            else:
                phase, step = "fwd", 0
            peer = (peers or {}).get((rank, phase, step, d))
            if peer is None:
                peer = (rank + 1) % G if d == "send" else (rank - 1) % G
            rows.append((rank, step, phase, d, (s - origin_us) * 1e-6, (e - origin_us) * 1e-6, peer, b, 0.0, 0.0))
    rows.sort(key=lambda t: (t[0], t[4], t[3]))
    phases = {row[2] for row in rows if row[3] == "compute"}
    meta = {
        "source": "measured", "generator": "kineto import", "backend": backend, "world_size": G,
        "device": "gpu", "files": [os.fspath(p) for p in paths],
        "phase": "fwd+bwd" if "bwd" in phases else "fwd",
        "link_class": config.get("link_class", "link"),
        "kernels": sorted(set().union(*(r["kernels"] for r in per_rank.values()))),
        "skipped_collective_kernels": int(sum(r["skipped"] for r in per_rank.values())),
        "clock_alignment": {"method": "common origin = earliest imported kernel of all ranks; clocks assumed in sync",
                            "origin_us": origin_us},
        "step_mapping": ("the program's kernel calls in order (steps without a call skipped)" if calls is not None
                         else "guessed: k-th kernel = step k mod G (no run configuration, so no program)"),
    }
    for key in ("schedule", "seq_len", "mask"):
        if key in config:
            meta[key] = config[key]
    dims = {k: config[k] for k in ("heads", "kv_heads", "head_dim", "batch", "dtype") if k in config}
    if dims:
        dims.setdefault("kv_heads", dims.get("heads"))
        dims.setdefault("batch", 1)
        dims.setdefault("dtype", "bf16")
        dims["layers"] = 1
        meta["workload"] = dims
    return Timeline.from_records(rows, meta)
