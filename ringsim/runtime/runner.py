"""One measured run: configuration, what each rank does, and how the ranks' results are assembled.

:func:`run_rank` is the body every rank executes (under :mod:`ringsim.runtime.launch`'s local
launcher or an external ``torchrun``): build the plan and the rank's inputs, agree on a time
origin, run ``warmup`` untimed and ``repeat`` timed iterations (a barrier before each), and return
its recorded intervals, per-iteration windows, byte counters and (with ``check``) its outputs.
:func:`assemble` turns the ranks' results into one :class:`~ringsim.timeline.Timeline` and a
summary; :func:`check_outputs` compares them with single-process attention.

Inputs are deterministic: every rank draws the same global ``q, k, v, dout`` from a seeded
generator (fp32 normal, then cast to the run's dtype) and keeps its tokens (``plan.tokens``), so
the checker can rebuild them. That costs each rank the global tensors' memory — fine for runs that
fit one host's memory, which is what checks are for.

With ``profile`` (``ringsim run --profile DIR``) each rank also records the timed iterations with
``torch.profiler`` (CPU activities, plus CUDA on GPUs; shapes recorded, every step marked
``ringsim/<phase>/step <s>``) and writes ``DIR/rank{r}.pt.trace.json`` with the run's metadata
embedded under ``"ringsim"`` — the same run in the form the Kineto importer reads.

Timeline rows: only the timed iterations are kept (warm-ups excluded); ``meta["iterations"]``
lists each timed iteration's index and window ``[start_s, end_s]`` (from the barrier release to
the end of the slowest rank), so any row belongs to the iteration whose window holds its start,
and ``rank_start_s``, each rank's own barrier release: on one host they agree within tens of µs,
so a rank whose first post comes later spent the time in the iteration's prologue (allocating its
accumulators and buffers — 0.6–1.6 ms at T = 2048 on the 2-core VM), not in the barrier.
"""
from __future__ import annotations

import os
import platform
import socket
import time
from dataclasses import asdict, dataclass

import numpy as np

from ringsim.schedules import SCHEDULES, Plan, parse_mask  # noqa: F401 (SCHEDULES: re-exported)
from ringsim.timeline import Timeline
from ringsim.units import InputError

__all__ = ["RunConfig", "run_rank", "assemble", "check_outputs", "make_inputs", "TOLERANCES"]

TOLERANCES = {"fp32": (2e-5, 1e-4), "bf16": (5e-2, 5e-2)}  # (atol, rtol)


@dataclass
class RunConfig:
    world_size: int
    schedule: str = "zigzag"
    seq_len: int = 4096
    heads: int = 4
    kv_heads: int | None = None
    head_dim: int = 64
    batch: int = 1
    mask: str = "causal"
    phase: str = "fwd"
    dtype: str = "fp32"
    repeat: int = 3
    warmup: int = 1
    check: bool = False
    seed: int = 0
    threads_per_rank: int | None = None
    kernel: str = "auto"
    timeout_s: float = 120.0
    instrument: bool = True
    fault: str | None = None  # test hook "exit:RANK:STEP" / "hang:RANK:STEP" (forward, first iteration)
    documents: list | None = None  # packed document lengths (summing to seq_len); None: one sequence
    profile: str | None = None  # directory for a torch.profiler trace per rank (timed iterations)

    def plan(self):
        """The token partition (a Plan, or a DocumentPlan for packed documents)."""
        from ringsim.strategies import parse_strategy

        return parse_strategy(self.schedule, documents=self.documents).plan(workload_of(self), self.world_size,
                                                                             self.mask)

    @property
    def strategy(self) -> str:
        """The strategy spec the run executes (``schedule`` holds it; a layout name is the ring)."""
        return self.schedule

    def validate(self) -> "RunConfig":
        from ringsim.strategies import parse_strategy

        if self.world_size < 1:
            raise InputError(f"--world-size must be at least 1, got {self.world_size}")
        self.schedule = parse_strategy(self.schedule, documents=self.documents).spec  # unknown specs fail here
        if self.kv_heads is None:
            self.kv_heads = self.heads
        for name in ("heads", "kv_heads", "head_dim", "batch", "repeat"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise InputError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.heads % self.kv_heads:
            raise InputError(f"--heads ({self.heads}) must be a multiple of --kv-heads ({self.kv_heads})")
        if self.phase not in ("fwd", "fwd+bwd"):
            raise InputError(f"--phase must be fwd or fwd+bwd, got {self.phase!r}")
        if self.dtype not in TOLERANCES:
            raise InputError(f"--dtype must be fp32 or bf16 for real runs, got {self.dtype!r}")
        if self.kernel not in ("auto", "fused", "plain"):
            raise InputError(f"--kernel must be auto, fused or plain, got {self.kernel!r}")
        if not self.timeout_s > 0:
            raise InputError(f"--timeout-s must be positive, got {self.timeout_s}")
        if self.profile is not None:
            parent = os.path.dirname(os.path.abspath(self.profile))
            if os.path.exists(self.profile) and not os.path.isdir(self.profile):
                raise InputError(f"--profile {self.profile} is a file; give a directory (it is created if missing)")
            if not os.path.isdir(parent):
                raise InputError(f"cannot write --profile {self.profile}: directory {parent} does not exist; "
                                 "create it first")
        self.mask = str(parse_mask(self.mask))
        # divisibility, document and applicability errors here (heads a Ulysses degree does not divide, …)
        parse_strategy(self.schedule, documents=self.documents).build(workload_of(self), self.world_size, self.mask,
                                                                      self.phase)
        if self.threads_per_rank is None:
            self.threads_per_rank = max(1, (os.cpu_count() or 1) // self.world_size)
        if self.threads_per_rank < 1:
            raise InputError(f"--threads-per-rank must be at least 1, got {self.threads_per_rank}")
        return self


def make_inputs(cfg: RunConfig, seq_len: int | None = None):
    """The global ``q, k, v, dout`` (B, heads, T, D) in fp32, from ``cfg.seed``; ``seq_len``: T
    when it differs from ``cfg.seq_len`` (a padded pack of documents)."""
    import torch

    g = torch.Generator().manual_seed(cfg.seed)
    B, H, Hk, D = cfg.batch, cfg.heads, cfg.kv_heads, cfg.head_dim
    T = seq_len or cfg.seq_len
    q = torch.randn(B, H, T, D, generator=g)
    k = torch.randn(B, Hk, T, D, generator=g)
    v = torch.randn(B, Hk, T, D, generator=g)
    dout = torch.randn(B, H, T, D, generator=g)
    return q, k, v, dout


def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def workload_of(cfg: RunConfig):
    """The run's workload: one attention layer of ``heads``/``kv_heads``/``head_dim``."""
    from ringsim.workload import ModelSpec, Workload

    model = ModelSpec("run", layers=1, heads=cfg.heads, kv_heads=cfg.kv_heads, head_dim=cfg.head_dim)
    return Workload(model, cfg.seq_len, batch=cfg.batch, dtype=cfg.dtype)


def program_of(cfg: RunConfig):
    """The program every rank of the run executes (the same one `ringsim simulate` runs)."""
    from ringsim.strategies import parse_strategy

    return parse_strategy(cfg.schedule, documents=cfg.documents).build(workload_of(cfg), cfg.world_size, cfg.mask,
                                                                        cfg.phase)


def rank_setup(cfg: RunConfig, rank: int, device=None, progress=None, program=None):
    """This rank's inputs (its tokens of the global ``q, k, v, dout``, in the run's dtype) and its
    :class:`~ringsim.runtime.executor.RankProgram`."""
    import torch

    from .executor import RankProgram

    program = program or program_of(cfg)
    plan = program.plan
    idx = torch.as_tensor(plan.tokens(rank))
    dt = _torch_dtype(cfg.dtype)
    q, k, v, dout = (t.index_select(2, idx).to(device=device or "cpu", dtype=dt).contiguous()
                     for t in make_inputs(cfg, plan.seq_len))
    return (q, k, v, dout), RankProgram.build(program, rank, workload_of(cfg), cfg.kernel, progress)


def _fault_hook(cfg: RunConfig, rank: int):
    """Parse the test hook: make ``rank`` exit or hang at a forward step of the first iteration."""
    if not cfg.fault:
        return None
    mode, r, s = cfg.fault.split(":")
    if int(r) != rank:
        return None
    return mode, int(s)


def run_rank(cfg: RunConfig, rank: int, device=None, heartbeat=None) -> dict:
    """Run ``cfg`` as ``rank`` of an initialised default process group; return this rank's result.

    ``heartbeat(iteration, phase, step)`` is called at every ring step (the watchdog's signal)."""
    import torch
    import torch.distributed as dist

    from .comm import P2PComm
    from .executor import program_attention
    from .instrument import NullRecorder, Recorder, common_origin

    G = cfg.world_size
    device = device or torch.device("cpu")
    rec = Recorder(rank, device) if cfg.instrument else NullRecorder(rank)
    state = {"iter": -1}
    fault = _fault_hook(cfg, rank)

    def progress(phase, step):
        if heartbeat is not None:
            heartbeat(state["iter"], phase, step)
        if fault and state["iter"] == 0 and phase == "fwd" and step == fault[1]:
            if fault[0] == "exit":
                os._exit(17)
            while True:  # hang
                time.sleep(1.0)

    (q, k, v, dout), ring = rank_setup(cfg, rank, device, progress)
    comm = P2PComm(rank, G, rec)
    waiting = getattr(heartbeat, "waiting", None) or (lambda flag: None)
    comm.wait_hook = getattr(heartbeat, "waiting", None)
    origin = common_origin(rank, G)
    windows = []
    outputs = None
    prof = None
    if cfg.profile is not None:
        prof = _profiler(device)
        ring.markers = True
    try:
        for it in range(cfg.warmup + cfg.repeat):
            state["iter"] = it
            rec.iteration = it
            if prof is not None and it == cfg.warmup:
                prof.start()  # the timed iterations only, as the timeline keeps them
            waiting(True)  # blocked on the other ranks, not on its own work
            dist.barrier()
            waiting(False)
            t_start = time.perf_counter_ns()
            if cfg.phase == "fwd":
                with torch.no_grad():
                    out, lse = program_attention(q, k, v, ring, comm, rec)
                grads = None
            else:
                ql, kl, vl = (t.detach().requires_grad_(True) for t in (q, k, v))
                out, lse = program_attention(ql, kl, vl, ring, comm, rec)
                out.backward(dout)
                grads = (ql.grad, kl.grad, vl.grad)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            windows.append((it, t_start, time.perf_counter_ns()))
            if cfg.check and it == cfg.warmup + cfg.repeat - 1:
                outputs = {"out": out.detach().float().cpu(), "lse": lse.detach().float().cpu()}
                if grads is not None:
                    outputs.update(dq=grads[0].float().cpu(), dk=grads[1].float().cpu(), dv=grads[2].float().cpu())
        if prof is not None:
            _finish_profile(prof, cfg, rank, dist.get_backend(), device.type)
            prof = None
        if heartbeat is not None:
            heartbeat(cfg.warmup + cfg.repeat, "done", 0)
        waiting(True)  # finished: from here on it only waits for its peers
    finally:
        if prof is not None:  # a failed run: stop profiling, write nothing
            prof.stop()
        comm.close()
    o = origin["origin_ns"]
    records = []
    for (it, step, phase, kind, t0, t1, peer, nbytes, pairs, flops) in rec.resolve():
        if it < cfg.warmup:
            continue
        records.append((rank, step, phase, kind, (t0 - o) * 1e-9, (t1 - o) * 1e-9, peer, nbytes, pairs, flops))
    return {
        "rank": rank,
        "records": records,
        "windows": [(it, (a - o) * 1e-9, (b - o) * 1e-9) for it, a, b in windows],
        "bytes_sent": comm.bytes_sent,
        "bytes_received": comm.bytes_received,
        "iterations_run": cfg.warmup + cfg.repeat,
        "clock": {k: v for k, v in origin.items() if k != "origin_ns"},
        "host": socket.gethostname(),
        "threads": torch.get_num_threads(),
        "outputs": outputs,
    }


def _profiler(device):
    """A torch.profiler session (not started) for this rank's device."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    return profile(activities=acts, record_shapes=True)


def profile_path(directory: str, rank: int) -> str:
    """Where ``ringsim run --profile`` writes rank ``rank``'s profiler trace."""
    return os.path.join(directory, f"rank{rank}.pt.trace.json")


def _finish_profile(prof, cfg: RunConfig, rank: int, backend: str, device_type: str) -> None:
    """Stop profiling and write this rank's trace with the run's metadata embedded (it must be
    added while the profiler runs), atomically: a temporary file in the same directory, then a
    rename."""
    import json
    import tempfile

    from ringsim.units import jsonable

    meta = run_metadata(cfg, backend, device_type)
    meta["generator"] = "ringsim run --profile"
    prof.add_metadata_json("ringsim", json.dumps(jsonable(meta)))
    prof.stop()
    os.makedirs(cfg.profile, exist_ok=True)
    path = profile_path(cfg.profile, rank)
    fd, tmp = tempfile.mkstemp(prefix=".ringsim-", suffix=".tmp.json", dir=cfg.profile)
    os.close(fd)
    try:
        prof.export_chrome_trace(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _protocol(spec: str, documents=None) -> str:
    from ringsim.strategies import Ring, parse_strategy

    strategy = parse_strategy(spec, documents=documents)
    if isinstance(strategy, Ring):
        return ("the strategy's program (ringsim.strategies): the ring sends K/V at forward steps < G-1; "
                "backward K/V and the accumulated dK/dV (fp32) one step behind, then a dK/dV return "
                "to the owner at step G")
    doc = (type(strategy).__doc__ or "").strip().split("\n\n")[0]
    return f"the strategy's program (ringsim.strategies, {spec}): " + " ".join(doc.split())


def run_metadata(cfg: RunConfig, backend: str, device_type: str) -> dict:
    import torch

    cores = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0) if device_type == "cuda" and torch.cuda.is_available() else None
    oversub = device_type == "cpu" and cfg.world_size * cfg.threads_per_rank > cores
    return {
        "source": "measured",
        "generator": "ringsim run",
        "torch_version": torch.__version__,
        "backend": backend,
        "device": device_type,
        "host": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "gpu_model": gpu,
        "cpu_cores": cores,
        "threads_per_rank": cfg.threads_per_rank,
        "oversubscribed": oversub,
        "oversubscription": (f"{cfg.world_size} ranks × {cfg.threads_per_rank} threads on {cores} cores"
                             if oversub else "none"),
        "world_size": cfg.world_size,
        "schedule": cfg.schedule,
        **({"documents": list(cfg.documents)} if cfg.documents else {}),
        "mask": cfg.mask,
        "seq_len": cfg.seq_len,
        "phase": cfg.phase,
        "workload": {"batch": cfg.batch, "heads": cfg.heads, "kv_heads": cfg.kv_heads, "head_dim": cfg.head_dim,
                     "dtype": cfg.dtype, "layers": 1},
        "kernel": cfg.kernel,
        "repeat": cfg.repeat,
        "warmup": cfg.warmup,
        "warmup_rows": "excluded (only the timed iterations' rows are kept)",
        "instrumented": cfg.instrument,
        "strategy": cfg.schedule,
        "protocol": _protocol(cfg.schedule, cfg.documents),
        "flops_per_pair": {"fwd": "2*B*H*(d_qk+d_v)", "bwd": "2.5 x fwd"},
        # other processes on the host compete for the same cores; the load says how much
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def assemble(cfg: RunConfig, results: list[dict], backend: str, device_type: str):
    """Merge ranks' results: returns ``(Timeline, summary dict)``."""
    results = sorted(results, key=lambda r: r["rank"])
    rows = [rec for res in results for rec in res["records"]]
    meta = run_metadata(cfg, backend, device_type)
    meta["clock_alignment"] = results[0]["clock"]
    meta["hosts"] = sorted({r["host"] for r in results})
    iters = []
    for i, (it, _, _) in enumerate(results[0]["windows"]):
        if it < cfg.warmup:
            continue
        start = min(r["windows"][i][1] for r in results)
        end = max(r["windows"][i][2] for r in results)
        iters.append({"iter": it, "start_s": start, "end_s": end, "wall_s": end - start,
                      "rank_start_s": [r["windows"][i][1] for r in results]})  # each rank's barrier exit
    meta["iterations"] = iters
    meta["bytes_sent_per_rank"] = [r["bytes_sent"] for r in results]
    meta["bytes_received_per_rank"] = [r["bytes_received"] for r in results]
    tl = Timeline.from_records(rows, meta) if rows else Timeline(None, meta)
    walls = np.array([i["wall_s"] for i in iters]) if iters else np.array([np.nan])
    per_rank = []
    df = tl.df
    n_iter = max(1, len(iters))
    for r in range(cfg.world_size):
        d = df[df["rank"] == r]
        dur = d["end_s"] - d["start_s"]
        per_rank.append({
            "rank": r,
            "compute_s": float(dur[d["kind"] == "compute"].sum()) / n_iter,
            "merge_s": float(dur[d["kind"] == "merge"].sum()) / n_iter,
            "wait_s": float(dur[d["kind"] == "wait"].sum()) / n_iter,
            "sent_bytes": float(d.loc[d["kind"] == "send", "bytes"].sum()) / n_iter,
            "pairs": float(d.loc[d["kind"] == "compute", "pairs"].sum()) / n_iter,
        })
    summary = {
        "config": asdict(cfg),
        "iteration_wall_s": walls.tolist(),
        "median_wall_s": float(np.median(walls)),
        "min_wall_s": float(np.min(walls)),
        "per_rank": per_rank,
        "meta": meta,
    }
    return tl, summary


def check_outputs(cfg: RunConfig, results: list[dict]) -> dict:
    """Compare the ring's outputs with single-process attention: fp32 (torch SDPA for out and
    gradients, explicit fp32 math for lse) and an fp64 reference. Returns max abs errors per tensor
    and whether every element is within ``atol + rtol·|ref|`` of both."""
    import torch
    import torch.nn.functional as F

    from .kernels import attention_reference, default_scale
    from .reference import dense_mask

    plan = program_of(cfg).plan
    results = sorted(results, key=lambda r: r["rank"])
    names = ["out", "lse"] + (["dq", "dk", "dv"] if cfg.phase == "fwd+bwd" else [])
    ring = {n: torch.from_numpy(plan.unshard([r["outputs"][n].numpy() for r in results], axis=2)) for n in names}
    T = plan.seq_len
    q, k, v, dout = make_inputs(cfg, T)
    dt = _torch_dtype(cfg.dtype)
    q, k, v, dout = (t.to(dt).float() for t in (q, k, v, dout))  # the values the ring actually saw
    # the reference mask is written from the mask's definition, not from the plan's band (which the ring
    # uses): a mask bug in the ring's code then shows as an error instead of being reproduced
    allowed = dense_mask(cfg.mask, T)
    pos = np.arange(T)
    # packed documents: a token sees only its own document (padding tokens see nothing)
    docs = plan.layout.document_of(pos) if cfg.documents else None
    scale = default_scale(cfg.head_dim)
    kw_ref = dict(dout=dout if cfg.phase == "fwd+bwd" else None, allowed=allowed, docs=docs)
    ref64 = attention_reference(q, k, v, pos, pos, 0, 0, scale, dtype=torch.float64, **kw_ref)
    ref64 = dict(zip(["out", "lse", "dq", "dk", "dv"], ref64))
    if docs is not None:  # fully masked padding rows: SDPA would give NaN; explicit fp32 math instead
        r32 = attention_reference(q, k, v, pos, pos, 0, 0, scale, dtype=torch.float32, head_chunk=cfg.heads, **kw_ref)
        ref32 = dict(zip(["out", "lse", "dq", "dk", "dv"], r32))
    else:
        # single-process fp32: SDPA (with autograd) for out and grads, explicit fp32 lse
        qs, ks, vs = (t.clone().requires_grad_(cfg.phase == "fwd+bwd") for t in (q, k, v))
        kw = {"is_causal": True} if cfg.mask == "causal" else ({} if cfg.mask == "full" else {"attn_mask": allowed})
        out32 = F.scaled_dot_product_attention(qs, ks, vs, scale=scale, enable_gqa=cfg.heads != cfg.kv_heads, **kw)
        ref32 = {"out": out32.detach()}
        ref32["lse"] = attention_reference(q, k, v, pos, pos, 0, 0, scale, dtype=torch.float32, head_chunk=cfg.heads,
                                           allowed=allowed)[1]
        if cfg.phase == "fwd+bwd":
            out32.backward(dout)
            ref32.update(dq=qs.grad, dk=ks.grad, dv=vs.grad)
    atol, rtol = TOLERANCES[cfg.dtype]
    errors = []
    ok_all = True
    for n in names:
        got = ring[n].double()
        row = {"tensor": n}
        for label, ref in (("fp32", ref32[n]), ("fp64", ref64[n])):
            ref = ref.double()
            finite = torch.isfinite(ref)
            same_inf = bool(torch.equal(torch.isfinite(got), finite)) and bool(torch.all(got[~finite] == ref[~finite]))
            diff = (got[finite] - ref[finite]).abs()
            err = float(diff.max()) if diff.numel() else 0.0
            within = bool(torch.all(diff <= atol + rtol * ref[finite].abs())) and same_inf
            row[f"max_abs_err_vs_{label}"] = err
            row[f"ok_vs_{label}"] = within
            ok_all &= within
        row["nan_or_inf"] = int((~torch.isfinite(got)).sum()) - int((~torch.isfinite(ref64[n])).sum())
        errors.append(row)
    return {"ok": ok_all, "atol": atol, "rtol": rtol, "errors": errors}
